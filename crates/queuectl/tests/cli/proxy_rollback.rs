//! `queuectl proxy rollback` and `proxy phase N` back towards Raptor wait for the write-back
//! (issue 19, item 3) against real auth, rbac and audit and a real proxy: a grant made at Queue
//! for a Raptor user and not yet at Raptor keeps the routes where they are (waiting, then exit 1
//! naming rbac's pending `grant.create`); once delivered the rollback proceeds; a row Raptor
//! refused for good refuses at once, with its error; `--force` goes and says what is left behind.

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use queue_testkit::TestApp;
use serde_json::json;
use std::time::{Duration, Instant};

use crate::legacy_fixtures::Queue;
use crate::proxy::{start_proxy, table};

const TENANT: &str = "6f1c2d4e-8a3b-4c5d-9e6f-7a8b9c0d1e2f";
const ADA: &str = "0b7e6a52-3c1d-4f8e-9a2b-5c6d7e8f9a01";

/// Raptor's role `triage` (3) and Ada (customer 11) as rbac knows them after an import.
async fn raptor_people(queue: &Queue) {
    let token = || queue.keys.token("operator", "rbac", &["rbac:import"]);
    let roles = json!({"records": [{"legacy_id": "3", "tenant_id": TENANT, "name": "triage",
        "permissions": ["ticket.read"], "created_at": "2025-01-01T00:00:00Z"}]});
    let (s, v) = queue.rbac.post_json_as("/internal/v1/import/roles", &token(), &roles).await;
    assert_eq!(s, 200, "{v}");
    let people = json!({"records": [{"legacy_id": "11", "principal_id": ADA}]});
    let (s, v) = queue.rbac.post_json_as("/internal/v1/import/principals", &token(), &people).await;
    assert_eq!(s, 200, "{v}");
}

/// A grant of Raptor's role to Ada, made at Queue: one write-back row (rbac here sends nowhere).
async fn grant(rbac: &TestApp, queue: &Queue) {
    let admin = queue.keys.token("raptor", "rbac", &["rbac:grant"]);
    let body = json!({"principal_id": ADA, "role": "triage", "scope": {"type": "tenant", "tenant_id": TENANT},
                      "reason": "covers the queue"});
    let (s, v) = rbac.post_json_as("/api/v1/rbac/grants", &admin, &body).await;
    assert_eq!(s, 201, "{v}");
}

async fn rbac_sql(queue: &Queue, sql: &str) {
    let mut conn = AsyncPgConnection::establish(&queue.rbac.db.url).await.expect("connect");
    conn.batch_execute(sql).await.expect("sql");
}

async fn run(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    crate::queuectl_async(args, &env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_waits_for_the_write_back_and_refuses_what_is_pending_or_failed() {
    let queue = Queue::start().await;
    let (legacy, server) =
        queue_proxy::standin::serve("127.0.0.1:0".parse().expect("addr"), "raptor", 1, false).expect("bind");
    let legacy_handle = server.handle();
    tokio::spawn(server);
    let dir = tempfile::tempdir().expect("tmp");
    let table_path = dir.path().join("routes.toml");
    std::fs::write(&table_path, table(1, &legacy.to_string())).expect("table");
    let (admin, stop) = start_proxy(&table_path, &queue.keys, None).await;
    let env = [
        ("QUEUE_PROXY_ADMIN_URL", admin),
        ("QUEUE_OPERATOR_KEY", queue.keys.private("operator").display().to_string()),
        ("QUEUE_AUTH_URL", queue.auth.url("")),
        ("QUEUE_RBAC_URL", queue.rbac.url("")),
    ];

    // Nothing owed: the rollback goes at once.
    let (code, _, err) = run(&["proxy", "phase", "2"], &env).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["proxy", "rollback"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("write-back to Raptor: nothing pending at auth or rbac; rolling back"), "{out}");
    assert!(out.contains("(phase 1,"), "{out}");

    // A grant made at Queue for Raptor's Ada, not at Raptor yet: waits 2 s, then refuses.
    let (code, _, err) = run(&["proxy", "phase", "2"], &env).await;
    assert_eq!(code, 0, "{err}");
    raptor_people(&queue).await;
    grant(&queue.rbac, &queue).await;
    let started = Instant::now();
    let (code, out, err) = run(&["proxy", "rollback", "--wait", "2"], &env).await;
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(started.elapsed() >= Duration::from_secs(2), "it waited");
    assert!(out.contains("waiting for the write-back to Raptor (2s left):"), "{out}");
    assert!(err.contains("the write-back to Raptor is still pending after 2s"), "{err}");
    assert!(err.contains("rbac: 1 pending, 0 failed — grant.create 1 pending"), "{err}");
    assert!(err.contains("write-back is off at this service"), "{err}");
    assert!(err.contains("auth: nothing pending"), "{err}");
    let (code, _, err) = run(&["proxy", "phase", "1", "--wait", "1"], &env).await;
    assert_eq!(code, 1, "phase 1 moves routes back too: {err}");
    assert!(err.contains("grant.create 1 pending"), "{err}");
    let (_, out, _) = run(&["proxy", "status"], &env).await;
    assert!(out.contains("phase 2"), "nothing moved: {out}");

    // Delivered while the rollback waits (as the relay marks it): the rollback proceeds.
    let db = queue.rbac.db.url.clone();
    let deliver = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut conn = AsyncPgConnection::establish(&db).await.expect("connect");
        conn.batch_execute("UPDATE rbac.legacy_writeback SET delivered_at = now(), legacy_id = '901'")
            .await
            .expect("deliver");
    });
    let (code, out, err) = run(&["proxy", "rollback", "--wait", "30"], &env).await;
    deliver.await.expect("delivered");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("waiting for the write-back") && out.contains("nothing pending at auth or rbac"), "{out}");
    assert!(out.contains("(phase 1,"), "{out}");

    // A row Raptor refused for good: no waiting helps, refused at once with Raptor's answer.
    let (code, _, err) = run(&["proxy", "phase", "2"], &env).await;
    assert_eq!(code, 0, "{err}");
    grant(&queue.rbac, &queue).await;
    rbac_sql(
        &queue,
        "UPDATE rbac.legacy_writeback SET failed_at = now(), last_error = 'POST /internal/queue/v1/grants answered \
         422 Unprocessable Entity: no role 3' WHERE delivered_at IS NULL",
    )
    .await;
    let started = Instant::now();
    let (code, _, err) = run(&["proxy", "phase", "1", "--wait", "30"], &env).await;
    assert_eq!(code, 1, "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "no waiting for a failed row");
    assert!(err.contains("Raptor refused some write-back for good"), "{err}");
    assert!(err.contains("1 failed") && err.contains("answered 422 Unprocessable Entity: no role 3"), "{err}");

    // --force goes, naming what it leaves behind.
    let (code, out, err) = run(&["proxy", "phase", "1", "--force"], &env).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("(phase 1,"), "{out}");
    assert!(err.contains("--force: moving from phase 2 back to phase 1 although the write-back"), "{err}");
    assert!(err.contains("grant.create 0 pending, 1 failed"), "{err}");

    // auth unreachable: refused, naming it.
    let (code, _, err) = run(&["proxy", "phase", "2"], &env).await;
    assert_eq!(code, 0, "{err}");
    rbac_sql(&queue, "UPDATE rbac.legacy_writeback SET failed_at = NULL, delivered_at = now()").await;
    queue.auth.stop().await;
    let (code, _, err) = run(&["proxy", "rollback", "--wait", "1"], &env).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the write-back backlog cannot be read") && err.contains("auth: unknown (cannot reach auth"),
        "{err}"
    );
    assert!(err.contains("rbac: nothing pending"), "{err}");

    stop();
    drop(legacy_handle.stop(false));
    queue.rbac.stop().await;
    queue.audit.stop().await;
}
