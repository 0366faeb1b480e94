//! The foundation every service shares, shown on audit: endpoints, readiness, its own schema,
//! config failures, signals, span export, and routes that require its audience.

use queue_testkit::process::{ServiceProcess, run_to_exit};
use queue_testkit::{TestApp, TestDb, TestKeys, checks};
use std::sync::{Arc, Mutex};

const BIN: &str = env!("CARGO_BIN_EXE_queue-audit");

async fn spawn() -> TestApp {
    crate::support::Audit::start().await.app
}

/// Environment for the binary: its signing key and local audit key files.
fn binary_env(keys: &TestKeys, audit_keys: &std::path::Path) -> Vec<(String, String)> {
    let cfg = crate::support::local_keys(audit_keys);
    vec![
        ("QUEUE_TOKENS__ISSUER".into(), "audit".into()),
        ("QUEUE_TOKENS__SIGNING_KEY".into(), keys.private("audit").display().to_string()),
        ("QUEUE_KEYS__LOCAL_MASTER_KEY".into(), cfg.local_master_key.display().to_string()),
        ("QUEUE_KEYS__LOCAL_CHECKPOINT_KEY".into(), cfg.local_checkpoint_key.display().to_string()),
        // Inline TOML, as an operator would set a list through the environment.
        (
            "QUEUE_TOKENS__TRUSTED".into(),
            format!(
                r#"[{{issuer = "auth", public_key = "{}"}}, {{issuer = "raptor", public_key = "{}"}}]"#,
                keys.public("auth").display(),
                keys.public("raptor").display()
            ),
        ),
    ]
}

fn refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

#[tokio::test]
async fn platform_endpoints_answer() {
    checks::platform_endpoints_answer(&spawn().await, "queue-audit").await;
}

#[tokio::test]
async fn readiness_follows_the_database() {
    checks::readiness_follows_the_database(&spawn().await).await;
}

#[tokio::test]
async fn migrations_live_in_the_services_own_schema() {
    checks::migrations_live_in_own_schema(&spawn().await, "audit").await;
}

#[tokio::test]
async fn a_token_for_audit_is_accepted_and_one_for_rbac_is_refused() {
    let app = spawn().await;
    let (status, body) =
        app.get_json_as("/internal/v1/caller", &app.keys.token("raptor", "audit", &["audit:write"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["issuer"].as_str(), body["audience"].as_str()), (Some("raptor"), Some("audit")));
    let (status, _) = app.get_json_as("/internal/v1/caller", &app.keys.token("raptor", "rbac", &["audit:write"])).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn bad_config_stops_start_up_with_one_line_and_exit_64() {
    let keys = TestKeys::new();
    let key = keys.private("audit").display().to_string();
    let base = [
        ("QUEUE_SERVER__LISTEN", "127.0.0.1:0"),
        ("QUEUE_TOKENS__ISSUER", "audit"),
        ("QUEUE_TOKENS__SIGNING_KEY", key.as_str()),
    ];
    let url = ("DATABASE_URL", "postgres://queue@127.0.0.1:1/queue");

    checks::config_error_names_key(BIN, &base, "database.url");
    checks::config_error_names_key(
        BIN,
        &[&base[..], &[url, ("QUEUE_SERVER__COLOUR", "blue")]].concat(),
        "server.colour",
    );
    checks::config_error_names_key(
        BIN,
        &[&base[..], &[url, ("QUEUE_DATABASE__POOL_SIZE", "lots")]].concat(),
        "database.pool_size",
    );
    checks::config_error_names_key(
        BIN,
        &[&base[1..], &[url, ("QUEUE_SERVER__LISTEN", "localhost")]].concat(),
        "server.listen",
    );

    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("audit.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:0\"\n[databse]\nurl = \"postgres://x@y/z\"\n")
        .expect("write");
    let with_file = [&base[1..], &[url, ("QUEUE_CONFIG", file.to_str().expect("utf8"))]].concat();
    checks::config_error_names_key(BIN, &with_file, "databse");
}

#[tokio::test]
async fn help_and_check_config_work() {
    let out = run_to_exit(BIN, &[("", "")][..0]);
    assert_eq!(out.status.code(), Some(64), "no config at all is a config error");
    let help = queue_testkit::process::command(BIN, &[]).arg("--help").output().expect("run");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success());
    for needle in ["--config", "--check-config", "QUEUE_", "DATABASE_URL"] {
        assert!(text.contains(needle), "--help mentions {needle}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_spans_reach_the_otlp_collector() {
    let db = TestDb::new(&[queue_audit::MIGRATIONS]).await;
    let keys = TestKeys::new();
    let audit_keys = tempfile::tempdir().expect("tmp");
    let sink = queue_testkit::otlp::OtlpSink::start();
    let mut env = binary_env(&keys, audit_keys.path());
    env.push(("DATABASE_URL".into(), db.url.clone()));
    env.push(("QUEUE_TELEMETRY__OTLP_ENDPOINT".into(), sink.endpoint_for("audit")));
    let mut p = ServiceProcess::start(BIN, &refs(&env)).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let r = reqwest::Client::new()
        .get(format!("{}/readyz", p.base_url))
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("x-trace-id").and_then(|v| v.to_str().ok()), Some(trace));

    assert_eq!(p.signal_and_wait("TERM").await, Some(0), "clean exit; stderr: {}", p.stderr());
    let log = p.stderr();
    assert!(log.contains("\"message\":\"stopped\""), "{log}");
    assert!(log.contains(trace), "the request's log line carries its trace id: {log}");

    // Export is flushed at shutdown; the span of our request is in it, under our trace id.
    assert!(!sink.exports().is_empty(), "no OTLP export reached the collector");
    assert!(sink.exported_trace("audit", trace), "the request's trace id is in an exported span");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_cleanly_too() {
    let db = TestDb::new(&[queue_audit::MIGRATIONS]).await;
    let keys = TestKeys::new();
    let audit_keys = tempfile::tempdir().expect("tmp");
    let mut env = binary_env(&keys, audit_keys.path());
    env.push(("DATABASE_URL".into(), db.url.clone()));
    let mut p = ServiceProcess::start(BIN, &refs(&env)).await;
    assert_eq!(p.signal_and_wait("INT").await, Some(0), "{}", p.stderr());
}

/// `kill -9` during a write burst: after a restart, every acknowledged event is there once and
/// the chains verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_burst_loses_no_acknowledged_event() {
    let db = TestDb::new(&[queue_audit::MIGRATIONS]).await;
    let keys = TestKeys::new();
    let audit_keys = tempfile::tempdir().expect("tmp");
    let mut env = binary_env(&keys, audit_keys.path());
    env.push(("DATABASE_URL".into(), db.url.clone()));
    let mut first = ServiceProcess::start(BIN, &refs(&env)).await;
    let base = first.base_url.clone();
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (base, keys, acked) = (base.clone(), keys.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for i in 0..10_000 {
                let tenant = format!("k{}", w % 2);
                let e = crate::support::event(&tenant, i);
                // A token per write: a write spends its token.
                let token = keys.token("auth", "audit", &["audit:write"]);
                match client.post(format!("{base}/api/v1/audit/events")).bearer_auth(&token).json(&e).send().await {
                    Ok(r) if r.status() == 201 => {
                        acked.lock().expect("lock").push((tenant, e["id"].as_str().expect("id").to_string()))
                    }
                    _ => return,
                }
            }
        }));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while acked.lock().expect("lock").len() < 400 {
        assert!(std::time::Instant::now() < deadline, "the burst did not get going: {}", first.stderr());
        assert!(writers.iter().any(|w| !w.is_finished()), "all writers stopped: {}", first.stderr());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(first.signal_and_wait("KILL").await, None, "killed by the signal");
    for w in writers {
        w.await.expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();

    let second = ServiceProcess::start(BIN, &refs(&env)).await;
    let reader = keys.token("raptor", "audit", &["audit:read"]);
    let client = reqwest::Client::new();
    for tenant in ["k0", "k1"] {
        let mut stored = std::collections::HashSet::new();
        let mut after = 0;
        loop {
            let page: serde_json::Value = client
                .get(format!("{}/api/v1/audit/events?tenant_id={tenant}&after_seq={after}&limit=1000", second.base_url))
                .bearer_auth(&reader)
                .send()
                .await
                .expect("read")
                .json()
                .await
                .expect("json");
            let events = page["events"].as_array().expect("events").clone();
            if events.is_empty() {
                break;
            }
            after = events.last().and_then(|e| e["seq"].as_i64()).expect("seq");
            for e in events {
                assert!(stored.insert(e["id"].as_str().expect("id").to_string()), "an event appears once");
            }
        }
        let missing = acked.iter().filter(|(t, id)| t == tenant && !stored.contains(id)).count();
        assert_eq!(missing, 0, "{tenant}: every acknowledged event survived");
        let report: serde_json::Value = client
            .get(format!("{}/api/v1/audit/verify?tenant_id={tenant}", second.base_url))
            .bearer_auth(&reader)
            .send()
            .await
            .expect("verify")
            .json()
            .await
            .expect("json");
        assert_eq!(report["ok"], true, "{report}");
        assert_eq!(report["events"].as_i64(), Some(stored.len() as i64));
    }
}

/// `queue_platform::db::prepared`: the statement is prepared once on the connection and reused;
/// a plain `sql_query` is prepared for one use and closed again.
#[tokio::test]
async fn prepared_statements_are_prepared_once_per_connection() {
    use diesel::sql_types::{BigInt, Text};
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let db = TestDb::new(&[queue_audit::MIGRATIONS]).await;
    let mut conn = db.conn().await;
    // The patterns are split so that these counting statements (prepared too, while they run)
    // do not match themselves.
    let count = "SELECT count(*) AS n FROM pg_prepared_statements WHERE statement LIKE '%queue_prepared' || '_probe%'";
    for round in 0..3 {
        let got: N = queue_platform::db::prepared(
            diesel::sql_query("SELECT length($1)::int8 AS n /* queue_prepared_probe */").bind::<Text, _>("four"),
        )
        .get_result(&mut conn)
        .await
        .expect("prepared");
        assert_eq!(got.n, 4);
        let plain: N = diesel::sql_query("SELECT length($1)::int8 AS n /* queue_plain_probe */")
            .bind::<Text, _>("three")
            .get_result(&mut conn)
            .await
            .expect("plain");
        assert_eq!(plain.n, 5);
        let held: N = diesel::sql_query(count).get_result(&mut conn).await.expect("count");
        assert_eq!(held.n, 1, "round {round}: one prepared statement, reused");
        let plain_held: N = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_prepared_statements WHERE statement LIKE '%queue_plain' || '_probe%'",
        )
        .get_result(&mut conn)
        .await
        .expect("count");
        assert_eq!(plain_held.n, 0, "round {round}: the plain one is not kept");
    }
}
