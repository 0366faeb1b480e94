//! Reloads: 0 failed requests across 200 reloads under load, a file change picked up by the
//! watch, SIGHUP, and the table version in access-log lines and metrics.

use crate::support::{Options, Proxy, standin, table};
use queue_testkit::process::ServiceProcess;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_across_200_reloads_under_load() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let tables = [table(1, &legacy.url(), &auth.url(), ""), table(2, &legacy.url(), &auth.url(), "")];
    let p = Arc::new(Proxy::start(&tables[0]).await);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    // The load generator: 8 concurrent loops on keep-alive connections.
    let loops: Vec<_> = (0..8)
        .map(|i| {
            let (p, stop, ok, failed) = (p.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let path = if i % 2 == 0 { "/api/v1/auth/backup-codes" } else { "/api/v1/auth/session" };
                    let good = match p.client.get(p.url(path)).send().await {
                        Ok(r) => r.status() == 200 && r.json::<Value>().await.is_ok(),
                        Err(_) => false,
                    };
                    if good {
                        ok.fetch_add(1, Ordering::SeqCst)
                    } else {
                        failed.fetch_add(1, Ordering::SeqCst)
                    };
                }
            })
        })
        .collect();
    let mut versions = std::collections::HashSet::new();
    for i in 0..200 {
        std::fs::write(&p.table, &tables[(i + 1) % 2]).expect("write");
        let (status, change) = p.admin_post("/admin/reload", json!({})).await;
        assert_eq!(status, 200, "{change}");
        versions.insert(change["version"].as_str().expect("v").to_string());
        // Let some traffic through on each table.
        let target = ok.load(Ordering::SeqCst) + 5;
        while ok.load(Ordering::SeqCst) < target && failed.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        l.await.expect("loop");
    }
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    println!("reloads: 200 reloads, {ok} requests, {failed} failed");
    assert_eq!(failed, 0);
    assert!(ok >= 1000, "{ok}");
    assert_eq!(versions.len(), 2, "two tables, two versions");
    let (_, t) = p.admin_get("/admin/routes").await;
    assert_eq!(t["generation"], 201, "every reload changed the table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_picked_up_by_the_watch_and_a_bad_one_is_not() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let o = Options { watch_interval_ms: 50, ..Default::default() };
    let p = Proxy::start_with(&table(1, &legacy.url(), &auth.url(), ""), o).await;
    let v1 = p.version().await;
    std::fs::write(&p.table, "phase = \n").expect("write");
    std::fs::write(&p.table, table(2, &legacy.url(), &auth.url(), "")).expect("write");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while p.version().await == v1 {
        assert!(std::time::Instant::now() < deadline, "the watch did not reload");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (_, t) = p.admin_get("/admin/routes").await;
    assert_eq!((t["phase"].as_u64(), t["trigger"].as_str()), (Some(2), Some("file-change")));
    let (_, echo) = p.get("/api/v1/auth/backup-codes").await;
    assert_eq!(echo["server"], "queue-auth");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_access_log_lines_carry_the_table_version() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let keys = queue_testkit::TestKeys::new();
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, table(1, &legacy.url(), &auth.url(), "")).expect("write");
    let key = keys.private("proxy").display().to_string();
    let table_path = path.display().to_string();
    // The operator's key is trusted (a config file: the list is not an environment variable),
    // so the test can read the metrics on the admin listener.
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!("[[tokens.trusted]]\nissuer = \"operator\"\npublic_key = \"{}\"\n", keys.public("operator").display()),
    )
    .expect("config");
    let config = config.display().to_string();
    let admin = format!("127.0.0.1:{}", queue_testkit::process::free_port());
    let mut proc_ = ServiceProcess::start(
        env!("CARGO_BIN_EXE_queue-proxy"),
        &[
            ("QUEUE_CONFIG", &config),
            ("QUEUE_TOKENS__ISSUER", "proxy"),
            ("QUEUE_TOKENS__SIGNING_KEY", &key),
            ("QUEUE_ADMIN__LISTEN", &admin),
            ("QUEUE_ROUTING__TABLE", &table_path),
            ("QUEUE_ROUTING__WATCH_INTERVAL_MS", "0"),
            ("QUEUE_TELEMETRY__FORMAT", "json"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("{}{path}", proc_.base_url)).send();
    let echo: Value = get("/api/v1/auth/backup-codes").await.expect("req").json().await.expect("json");
    assert_eq!(echo["server"], "raptor");

    std::fs::write(&path, table(2, &legacy.url(), &auth.url(), "")).expect("write");
    let sent = std::process::Command::new("kill").args(["-HUP", &proc_.pid().to_string()]).status().expect("kill");
    assert!(sent.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let echo: Value = get("/api/v1/auth/backup-codes").await.expect("req").json().await.expect("json");
        if echo["server"] == "queue-auth" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "SIGHUP did not reload: {}", proc_.stderr());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let metrics = client
        .get(format!("http://{admin}/metrics"))
        .bearer_auth(keys.token("operator", "proxy", &["proxy:admin"]))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert_eq!(proc_.signal_and_wait("TERM").await, Some(0));

    let access: Vec<Value> = proc_
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "access")
        .collect();
    assert!(access.len() >= 2, "{}", proc_.stderr());
    let versions: std::collections::HashSet<&str> = access.iter().filter_map(|l| l["table_version"].as_str()).collect();
    assert_eq!(versions.len(), 2, "both tables' versions appear: {versions:?}");
    for l in &access {
        for field in ["route", "side", "table_version", "status", "duration_ms", "request_id", "method", "path"] {
            assert!(!l[field].is_null(), "{field} missing from {l}");
        }
    }
    let last = access.last().expect("line");
    assert_eq!(
        (last["route"].as_str(), last["side"].as_str(), last["status"].as_u64()),
        (Some("backup-codes"), Some("queue"), Some(200))
    );
    let v = last["table_version"].as_str().expect("v");
    assert!(
        metrics.contains(&format!("queue_proxy_requests_total{{route=\"backup-codes\",side=\"queue\",status=\"2xx\",table_version=\"{v}\",service=\"queue-proxy\"}}")),
        "{metrics}"
    );
    assert!(metrics.contains("queue_proxy_upstream_duration_seconds_bucket{route=\"backup-codes\""), "{metrics}");
    assert!(proc_.stderr().contains("\"trigger\":\"sighup\""), "{}", proc_.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_on_the_table_it_started_with() {
    // Raptor holds every request until released.
    let gate = crate::support::gated_upstream();
    let auth = standin("queue-auth", true);
    let p = Arc::new(Proxy::start(&table(1, &gate.upstream.url(), &auth.url(), "")).await);
    let in_flight = {
        let p = p.clone();
        tokio::spawn(async move { p.get("/api/v1/auth/backup-codes/slow").await })
    };
    while gate.received.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (status, change) = p.admin_post("/admin/phase", json!({"phase": 2})).await;
    assert_eq!(status, 200, "{change}");
    // New requests use the new table at once...
    let (status, echo) = p.get("/api/v1/auth/backup-codes/new").await;
    assert_eq!((status.as_u16(), echo["server"].as_str()), (200, Some("queue-auth")));
    // ...and the one in flight completes where it started.
    gate.release();
    let (status, echo) = in_flight.await.expect("request");
    assert_eq!((status.as_u16(), echo["server"].as_str()), (200, Some("gated")));
}
