//! `queuectl proxy …` against a running proxy's admin listener: each call carries a token minted
//! from the operator's key; phase changes, reloads and rollbacks land in the real audit service.

use queue_platform::Signals;
use queue_proxy::{AdminConfig, AuditLink, ProxyConfig, RoutingConfig};
use queue_testkit::{TestApp, TestKeys};
use serde_json::Value;
use std::path::Path;

/// A route table with Raptor at `legacy` and backup codes cut over in phase 2.
pub(crate) fn table(phase: u8, legacy: &str) -> String {
    format!(
        "phase = {phase}\ndefault_legacy = \"raptor\"\n[legacy.raptor]\nurl = \"http://{legacy}\"\n[services.auth]\nurl = \"http://127.0.0.1:1\"\n\
         [[routes]]\nname = \"backup-codes\"\nprefix = \"/api/v1/auth/backup-codes\"\nqueue = {{ service = \"auth\" }}\ncutover_phase = 2\n"
    )
}

/// A proxy on port 0 with `table` and the keys of `keys`, writing its admin changes to `audit`.
/// Returns the admin URL and what stops the proxy.
pub(crate) async fn start_proxy(table: &Path, keys: &TestKeys, audit: Option<url::Url>) -> (String, impl FnOnce()) {
    let base = queue_testkit::service_config("proxy", "postgres://unused@127.0.0.1/none", keys);
    let config = ProxyConfig {
        server: base.server,
        telemetry: base.telemetry,
        tokens: base.tokens,
        admin: AdminConfig { listen: "127.0.0.1:0".parse().expect("addr"), ..AdminConfig::default() },
        routing: RoutingConfig { table: Some(table.to_path_buf()), watch_interval_ms: 0, history: 10 },
        forwarding: Default::default(),
        identity: Default::default(),
        shadow: Default::default(),
        audit: audit.map(|url| AuditLink { url, timeout_ms: 2000 }),
    };
    let started = queue_proxy::start(config, Signals::Ignore).await.expect("proxy starts");
    let handle = started.running.handle();
    tokio::spawn(started.running.wait());
    (format!("http://{}", started.admin_addr), move || drop(handle.stop(false)))
}

/// Runs queuectl off the async runtime with `env`.
async fn run(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    crate::queuectl_async(args, &env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_phase_and_rollback_through_the_admin_api() {
    let (legacy, server) =
        queue_proxy::standin::serve("127.0.0.1:0".parse().expect("addr"), "raptor", 1, false).expect("bind");
    let legacy_handle = server.handle();
    tokio::spawn(server);
    let dir = tempfile::tempdir().expect("tmp");
    let table_path = dir.path().join("routes.toml");
    std::fs::write(&table_path, table(1, &legacy.to_string())).expect("table");
    let keys = TestKeys::new();
    let (admin, stop) = start_proxy(&table_path, &keys, None).await;
    let operator = keys.private("operator").display().to_string();
    // No auth or rbac answers here: a rollback cannot read the write-back backlog.
    let nowhere = "http://127.0.0.1:1".to_string();
    let env = [
        ("QUEUE_PROXY_ADMIN_URL", admin.clone()),
        ("QUEUE_OPERATOR_KEY", operator),
        ("QUEUE_AUTH_URL", nowhere.clone()),
        ("QUEUE_RBAC_URL", nowhere),
    ];

    let (code, out, err) = run(&["proxy", "status"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("phase 1") && out.contains("backup-codes") && out.contains("-> legacy"), "{out}");
    assert!(out.contains("rollback to: nothing"), "{out}");

    let (code, out, err) = run(&["proxy", "phase", "2"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(phase 2, generation 2)"), "{out}");
    let (_, out, _) = run(&["proxy", "status"], &env).await;
    assert!(out.contains("-> queue"), "{out}");

    // The write-back backlog cannot be read: refused, nothing moves; --force goes, saying so.
    let (code, _, err) = run(&["proxy", "rollback", "--wait", "1"], &env).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("refusing to move routes back to Raptor: the write-back backlog cannot be read"), "{err}");
    assert!(err.contains("auth: unknown") && err.contains("rbac: unknown"), "{err}");
    let (code, _, err) = run(&["proxy", "phase", "1", "--wait", "0"], &env).await;
    assert_eq!(code, 1, "phase 1 moves routes back too: {err}");
    let (_, out, _) = run(&["proxy", "status"], &env).await;
    assert!(out.contains("phase 2"), "{out}");
    let (code, out, err) = run(&["proxy", "rollback", "--wait", "0", "--force"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(phase 1, generation 3)"), "{out}");
    assert!(err.contains("--force: rolling back although") && err.contains("left behind"), "{err}");
    let (code, _, err) = run(&["proxy", "rollback", "--wait", "0", "--force"], &env).await;
    assert_eq!(code, 1);
    assert!(err.contains("409") && err.contains("no previous table"), "{err}");
    let (code, _, err) = run(&["proxy", "phase", "9"], &env).await;
    assert_ne!(code, 0);
    assert!(err.contains("1..=4"), "{err}");
    let (code, out, err) = run(&["proxy", "metrics"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("proxy_table_info"), "{out}");

    // Without the operator's key, or as a service that is no operator: refused, nothing changes.
    let missing =
        [("QUEUE_PROXY_ADMIN_URL", admin.clone()), ("QUEUE_OPERATOR_KEY", "/nonexistent/operator.pem".into())];
    let (code, _, err) = run(&["proxy", "phase", "2"], &missing).await;
    assert_eq!(code, 1);
    assert!(err.contains("cannot read the signing key"), "{err}");
    let raptor = [
        ("QUEUE_PROXY_ADMIN_URL", admin.clone()),
        ("QUEUE_OPERATOR", "raptor".into()),
        ("QUEUE_OPERATOR_KEY", keys.private("raptor").display().to_string()),
    ];
    let (code, _, err) = run(&["proxy", "phase", "2"], &raptor).await;
    assert_eq!(code, 1);
    assert!(err.contains("403") && err.contains("raptor"), "{err}");
    let (code, _, err) = run(&["proxy", "status", "--token", "not-a-token"], &[("QUEUE_PROXY_ADMIN_URL", admin)]).await;
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
    let (_, out, _) = run(&["proxy", "status"], &env).await;
    assert!(out.contains("phase 1"), "{out}");

    stop();
    drop(legacy_handle.stop(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phase_reload_and_rollback_are_events_in_the_real_audit_log() {
    let (legacy, server) =
        queue_proxy::standin::serve("127.0.0.1:0".parse().expect("addr"), "raptor", 1, false).expect("bind");
    let legacy_handle = server.handle();
    tokio::spawn(server);
    let dir = tempfile::tempdir().expect("tmp");
    let audit_keys = queue_audit::config::KeysConfig::local_in(dir.path(), true).expect("audit keys").0;
    let audit = TestApp::spawn("audit", queue_audit::MIGRATIONS, move |c| {
        queue_audit::run(queue_audit::AuditConfig::new(c, audit_keys), Signals::Ignore)
    })
    .await;
    let table_path = dir.path().join("routes.toml");
    std::fs::write(&table_path, table(1, &legacy.to_string())).expect("table");
    let audit_url = url::Url::parse(&audit.url("/")).expect("url");
    let (admin, stop) = start_proxy(&table_path, &audit.keys, Some(audit_url)).await;
    let env = [
        ("QUEUE_PROXY_ADMIN_URL", admin),
        ("QUEUE_OPERATOR_KEY", audit.keys.private("operator").display().to_string()),
        ("QUEUE_AUTH_URL", "http://127.0.0.1:1".to_string()),
        ("QUEUE_RBAC_URL", "http://127.0.0.1:1".to_string()),
    ];

    let (code, _, err) = run(&["proxy", "phase", "2"], &env).await;
    assert_eq!(code, 0, "{err}");
    std::fs::write(&table_path, table(3, &legacy.to_string())).expect("table");
    let (code, _, err) = run(&["proxy", "reload"], &env).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["proxy", "rollback", "--wait", "0", "--force"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(phase 2,"), "{out}");

    let reader = audit.token("raptor", &["audit:read"]);
    let (status, body) = audit.get_json_as("/api/v1/audit/events?tenant_id=_platform", &reader).await;
    assert_eq!(status, 200, "{body}");
    let events: Vec<&Value> = body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["action"].as_str().is_some_and(|a| a.starts_with("proxy.")))
        .collect();
    let summary: Vec<(&str, &Value, &Value)> = events
        .iter()
        .map(|e| (e["action"].as_str().unwrap_or(""), &e["payload"]["from"]["phase"], &e["payload"]["to"]["phase"]))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("proxy.phase.changed", &Value::from(1), &Value::from(2)),
            ("proxy.table.reloaded", &Value::from(2), &Value::from(3)),
            ("proxy.table.rolled_back", &Value::from(3), &Value::from(2)),
        ],
        "{body}"
    );
    for e in &events {
        assert_eq!(e["actor"]["type"], "service", "{e}");
        assert_eq!(e["actor"]["id"], "operator", "{e}");
        assert_eq!(e["target"]["id"], e["payload"]["to"]["version"], "{e}");
        assert!(e["payload"]["from"]["version"].as_str().is_some_and(|v| v.len() == 12), "{e}");
        assert!(e["payload"]["token_id"].is_string(), "{e}");
    }
    assert_eq!(events[2]["payload"]["to"]["version"], events[0]["payload"]["to"]["version"], "back to phase 2's table");

    stop();
    drop(legacy_handle.stop(false));
    audit.stop().await;
}
