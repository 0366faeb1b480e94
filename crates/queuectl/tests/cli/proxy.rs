//! `queuectl proxy …` against a running proxy's admin listener.

use queue_platform::Signals;
use queue_proxy::{AdminConfig, ProxyConfig, RoutingConfig};

use crate::queuectl;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_phase_and_rollback_through_the_admin_api() {
    let (legacy, server) =
        queue_proxy::standin::serve("127.0.0.1:0".parse().expect("addr"), "raptor", 1, false).expect("bind");
    let legacy_handle = server.handle();
    tokio::spawn(server);
    let dir = tempfile::tempdir().expect("tmp");
    let table = dir.path().join("routes.toml");
    std::fs::write(
        &table,
        format!(
            "phase = 1\ndefault_legacy = \"raptor\"\n[legacy.raptor]\nurl = \"http://{legacy}\"\n[services.auth]\nurl = \"http://127.0.0.1:1\"\n\
             [[routes]]\nname = \"backup-codes\"\nprefix = \"/api/v1/auth/backup-codes\"\nqueue = {{ service = \"auth\" }}\ncutover_phase = 2\n"
        ),
    )
    .expect("table");
    let keys = queue_testkit::TestKeys::new();
    let base = queue_testkit::service_config("proxy", "postgres://unused@127.0.0.1/none", &keys);
    let config = ProxyConfig {
        server: base.server,
        telemetry: base.telemetry,
        tokens: base.tokens,
        admin: AdminConfig { listen: "127.0.0.1:0".parse().expect("addr") },
        routing: RoutingConfig { table: Some(table.clone()), watch_interval_ms: 0, history: 10 },
        forwarding: Default::default(),
        identity: Default::default(),
        shadow: Default::default(),
    };
    let started = queue_proxy::start(config, Signals::Ignore).await.expect("proxy starts");
    let handle = started.running.handle();
    tokio::spawn(started.running.wait());
    let admin = format!("http://{}", started.admin_addr);
    let env = [("QUEUE_PROXY_ADMIN_URL", admin.as_str())];

    let run = |args: &'static [&'static str]| {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            queuectl(args, &env)
        })
    };
    let (code, out, err) = run(&["proxy", "status"]).await.expect("run");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("phase 1") && out.contains("backup-codes") && out.contains("-> legacy"), "{out}");
    assert!(out.contains("rollback to: nothing"), "{out}");

    let (code, out, err) = run(&["proxy", "phase", "2"]).await.expect("run");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(phase 2, generation 2)"), "{out}");
    let (_, out, _) = run(&["proxy", "status"]).await.expect("run");
    assert!(out.contains("-> queue"), "{out}");

    let (code, out, err) = run(&["proxy", "rollback"]).await.expect("run");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(phase 1, generation 3)"), "{out}");
    let (code, _, err) = run(&["proxy", "rollback"]).await.expect("run");
    assert_eq!(code, 1);
    assert!(err.contains("409") && err.contains("no previous table"), "{err}");
    let (code, _, err) = run(&["proxy", "phase", "9"]).await.expect("run");
    assert_ne!(code, 0);
    assert!(err.contains("1..=4"), "{err}");

    drop(handle.stop(false));
    drop(legacy_handle.stop(false));
}
