//! `queuectl audit …` against a running audit service's database and keys.

use queue_platform::Signals;
use queue_testkit::TestApp;
use serde_json::{Value, json};

use crate::queuectl;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_export_offline_verify_and_rotate() {
    let dir = tempfile::tempdir().expect("tmp");
    let keys_cfg = queue_audit::config::KeysConfig::local_in(dir.path(), true).expect("keys").0;
    let kc = keys_cfg.clone();
    let app = TestApp::spawn("audit", queue_audit::MIGRATIONS, move |c| {
        queue_audit::run(queue_audit::AuditConfig::new(c, kc), Signals::Ignore)
    })
    .await;
    let token = app.token("auth", &["audit:write"]);
    for i in 0..5 {
        let e = json!({"id": uuid::Uuid::new_v4().to_string(), "tenant_id": "t1", "actor": {"type": "user", "id": format!("u{i}")},
                       "action": "login.ok", "target": {"type": "session", "id": "s"}, "occurred_at": "2026-11-22T10:00:00Z"});
        assert_eq!(app.post_json_as("/api/v1/audit/events", &token, &e).await.0, 201);
    }
    // The operator's config file: the service's database and keys.
    let config = dir.path().join("audit.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{}\"\n[tokens]\nissuer = \"audit\"\nsigning_key = \"{}\"\n\
             [keys]\nprovider = \"local\"\nlocal_master_key = \"{}\"\nlocal_checkpoint_key = \"{}\"\n",
            app.db.url,
            app.keys.private("audit").display(),
            keys_cfg.local_master_key.display(),
            keys_cfg.local_checkpoint_key.display()
        ),
    )
    .expect("config");
    let cfg = config.to_str().expect("utf8");

    let (code, out, err) = queuectl(&["audit", "verify", "--tenant", "t1", "--config", cfg], &[]);
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).expect("json report");
    assert_eq!((report["ok"].as_bool(), report["events"].as_i64()), (Some(true), Some(5)));

    let export = dir.path().join("t1.ndjson");
    let (code, _, err) =
        queuectl(&["audit", "export", "--tenant", "t1", "--out", export.to_str().expect("utf8"), "--config", cfg], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("exported 5 event(s)"), "{err}");
    let (code, out, _) = queuectl(&["audit", "verify", "--file", export.to_str().expect("utf8"), "--config", cfg], &[]);
    assert_eq!(code, 0, "{out}");

    let tampered =
        std::fs::read_to_string(&export).expect("read").replacen("\"actor_id\":\"u2\"", "\"actor_id\":\"x\"", 1);
    std::fs::write(&export, tampered).expect("write");
    let (code, out, _) = queuectl(&["audit", "verify", "--file", export.to_str().expect("utf8"), "--config", cfg], &[]);
    assert_eq!(code, 1, "a tampered export fails");
    let report: Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(report["first_bad_seq"], 3);

    let (code, out, err) = queuectl(&["audit", "rotate-key", "--config", cfg], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("epoch 2"), "{out}");
}
