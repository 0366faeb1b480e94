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
    for i in 0..5 {
        let e = json!({"id": uuid::Uuid::new_v4().to_string(), "tenant_id": "t1", "actor": {"type": "user", "id": format!("u{i}")},
                       "action": "auth.login.ok", "target": {"type": "session", "id": "s"}, "occurred_at": "2026-11-22T10:00:00Z"});
        // A token per write: a write spends its token.
        let token = app.token("auth", &["audit:write"]);
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

/// The PostgreSQL client tool `name`, found as scripts/pg-cluster.sh finds the server binaries.
fn pg_tool(name: &str) -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("QUEUE_PG_BIN") {
        return std::path::Path::new(&dir).join(name);
    }
    let mut dirs: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort_by_key(|d| d.parent().and_then(|p| p.file_name()).and_then(|v| v.to_str()?.parse::<u32>().ok()));
    dirs.last().map(|d| d.join(name)).filter(|p| p.is_file()).unwrap_or_else(|| name.into())
}

fn audit_config_file(path: &std::path::Path, url: &str, app: &TestApp, keys: &queue_audit::config::KeysConfig) {
    std::fs::write(
        path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[database]\nurl = \"{url}\"\n[tokens]\nissuer = \"audit\"\nsigning_key = \"{}\"\n\
             [keys]\nprovider = \"local\"\nlocal_master_key = \"{}\"\nlocal_checkpoint_key = \"{}\"\n",
            app.keys.private("audit").display(),
            keys.local_master_key.display(),
            keys.local_checkpoint_key.display()
        ),
    )
    .expect("config");
}

async fn write_events(app: &TestApp, tenant: &str, n: usize) {
    for i in 0..n {
        let e = json!({"id": uuid::Uuid::new_v4().to_string(), "tenant_id": tenant, "actor": {"type": "user", "id": format!("u{i}")},
                       "action": "auth.login.ok", "target": {"type": "session", "id": "s"}, "occurred_at": "2026-11-22T10:00:00Z"});
        let token = app.token("auth", &["audit:write"]);
        assert_eq!(app.post_json_as("/api/v1/audit/events", &token, &e).await.0, 201);
    }
}

/// Checkpoints are signed off the request path: wait until the newest reaches `seq`.
async fn wait_for_checkpoint(app: &TestApp, tenant: &str, seq: i64) {
    let token = app.token("rbac", &["audit:read"]);
    for _ in 0..200 {
        let (_, cps) = app.get_json_as(&format!("/api/v1/audit/checkpoints?tenant_id={tenant}"), &token).await;
        if cps["checkpoints"][0]["seq"].as_i64() >= Some(seq) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no checkpoint of {tenant} reached seq {seq} within 10 s");
}

/// docs/operator-guide.md, "Restoring from a backup": a real pg_dump/pg_restore. The restored
/// database verifies on its own (its checkpoints are as old as its events); holding it against
/// the checkpoints of a later archived export reports the lost tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_verifies_alone_and_archived_checkpoints_show_the_lost_tail() {
    let dir = tempfile::tempdir().expect("tmp");
    let keys_cfg = queue_audit::config::KeysConfig::local_in(dir.path(), true).expect("keys").0;
    let kc = keys_cfg.clone();
    let app = TestApp::spawn("audit", queue_audit::MIGRATIONS, move |c| {
        let mut config = queue_audit::AuditConfig::new(c, kc);
        config.chain.checkpoint_every = 5;
        config.chain.checkpoint_interval_secs = 1;
        queue_audit::run(config, Signals::Ignore)
    })
    .await;
    let path = |name: &str| dir.path().join(name).to_str().expect("utf8").to_string();

    // The nightly backup, taken after 5 events (checkpoint at 5).
    write_events(&app, "t1", 5).await;
    wait_for_checkpoint(&app, "t1", 5).await;
    let dump = path("backup.dump");
    let out = std::process::Command::new(pg_tool("pg_dump"))
        .args(["-Fc", "-f", &dump, &app.db.url])
        .output()
        .expect("run pg_dump");
    assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));

    // Five more events, a checkpoint at 10, and an export archived outside the database.
    write_events(&app, "t1", 5).await;
    wait_for_checkpoint(&app, "t1", 10).await;
    let live_cfg = path("live.toml");
    audit_config_file(std::path::Path::new(&live_cfg), &app.db.url, &app, &keys_cfg);
    let archive = path("archive.ndjson");
    let (code, _, err) =
        queuectl(&["audit", "export", "--tenant", "t1", "--out", &archive, "--config", &live_cfg], &[]);
    assert_eq!(code, 0, "{err}");
    app.stop().await;

    // The database is lost; the backup is restored into a new one.
    let restored = queue_testkit::TestDb::new(&[]).await;
    let out = std::process::Command::new(pg_tool("pg_restore"))
        .args(["--exit-on-error", "-d", &restored.url, &dump])
        .output()
        .expect("run pg_restore");
    assert!(out.status.success(), "pg_restore: {}", String::from_utf8_lossy(&out.stderr));
    let restored_cfg = path("restored.toml");
    audit_config_file(std::path::Path::new(&restored_cfg), &restored.url, &app, &keys_cfg);

    // Alone, the restored chain is intact up to its end: the loss does not show.
    let (code, out, err) = queuectl(&["audit", "verify", "--tenant", "t1", "--config", &restored_cfg], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(report["ok"], true);
    assert_eq!((report["events"].as_i64(), report["checkpoint_seq"].as_i64()), (Some(5), Some(5)), "{report}");

    // Held against the archived checkpoints, it is reported as a missing tail.
    let export = path("restored.ndjson");
    let (code, _, err) =
        queuectl(&["audit", "export", "--tenant", "t1", "--out", &export, "--config", &restored_cfg], &[]);
    assert_eq!(code, 0, "{err}");
    let archived = std::fs::read_to_string(&archive).expect("archive");
    let checkpoints: Vec<&str> = archived.lines().filter(|l| l.starts_with("{\"type\":\"checkpoint\"")).collect();
    assert_eq!(checkpoints.len(), 2, "{archived}");
    let combined = path("combined.ndjson");
    let mut text = std::fs::read_to_string(&export).expect("export");
    for l in &checkpoints {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&combined, text).expect("write");
    let (code, out, _) = queuectl(&["audit", "verify", "--file", &combined, "--config", &restored_cfg], &[]);
    assert_eq!(code, 1, "{out}");
    let report: Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(report["ok"], false);
    assert_eq!(report["verified_through_seq"], 5, "{report}");
    assert_eq!(report["first_bad_seq"], 6, "{report}");
    assert_eq!(report["checkpoint_seq"], 10, "{report}");
    assert_eq!(report["reason"], "events after seq 5 are missing: a signed checkpoint covers seq 10");

    // The archive itself still verifies: it holds the events the restore lost.
    let (code, out, _) = queuectl(&["audit", "verify", "--file", &archive, "--config", &restored_cfg], &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(serde_json::from_str::<Value>(&out).expect("json")["events"], 10);
}

/// Issue 20, item 4: a bundle of one event, checked offline with the checkpoint's public key
/// alone; a bundle with the event changed, the proof cut, or checked with another key fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_verifies_offline_with_the_public_key_alone() {
    let dir = tempfile::tempdir().expect("tmp");
    let keys_cfg = queue_audit::config::KeysConfig::local_in(dir.path(), true).expect("keys").0;
    let kc = keys_cfg.clone();
    let app = TestApp::spawn("audit", queue_audit::MIGRATIONS, move |c| {
        let mut config = queue_audit::AuditConfig::new(c, kc);
        config.chain.checkpoint_every = 6;
        queue_audit::run(config, Signals::Ignore)
    })
    .await;
    write_events(&app, "b1", 6).await;
    wait_for_checkpoint(&app, "b1", 6).await;
    let config = dir.path().join("audit.toml");
    audit_config_file(&config, &app.db.url, &app, &keys_cfg);
    let cfg = config.to_str().expect("utf8");
    let out_file = dir.path().join("bundle.json");
    let bundle = out_file.to_str().expect("utf8");

    let (code, _, err) =
        queuectl(&["audit", "bundle", "--tenant", "b1", "--seq", "4", "--out", bundle, "--config", cfg], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("against its checkpoint of 6 events"), "{err}");
    let (_, keys) = app.get_json_as("/api/v1/audit/checkpoint-keys", &app.token("rbac", &["audit:read"])).await;
    let key = keys["keys"][0].as_str().expect("a key").to_string();

    // No config, no database, no data key: the file and the public key.
    let (code, out, err) = queuectl(&["audit", "verify-bundle", bundle, "--key", &key], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok: event 4 of tenant b1 is in log audit.queue.local/b1 of 6 events"), "{out}");
    let key_file = dir.path().join("key.txt");
    std::fs::write(&key_file, &key).expect("key file");
    let (code, _, _) = queuectl(&["audit", "verify-bundle", bundle, "--key", &format!("@{}", key_file.display())], &[]);
    assert_eq!(code, 0);

    let original: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).expect("read")).expect("json");
    let check = |b: &Value| {
        std::fs::write(&out_file, b.to_string()).expect("write");
        queuectl(&["audit", "verify-bundle", bundle, "--key", &key], &[])
    };
    let mut changed = original.clone();
    changed["event"]["actor_id"] = json!("mallory");
    let (code, out, _) = check(&changed);
    assert_eq!(
        (code, out.trim()),
        (1, "does not verify: event seq 4 is not in the log the checkpoint signs (the proof does not verify)")
    );
    let mut cut = original.clone();
    cut["inclusion"].as_array_mut().expect("proof").pop();
    assert_eq!(check(&cut).0, 1);
    let mut resized = original.clone();
    resized["checkpoint"] = json!(original["checkpoint"].as_str().expect("note").replacen("\n6\n", "\n7\n", 1));
    let (code, out, _) = check(&resized);
    assert_eq!(code, 1);
    assert!(out.contains("is not signed by"), "{out}");
    let (code, out, _) = check(&original);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = queuectl(&["audit", "verify-bundle", bundle, "--key", "audit.queue.local+00000000+AgAA"], &[]);
    assert_eq!(code, 1, "{out}");
}
