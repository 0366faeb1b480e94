//! Shadow mode: copies go to the other side off the request path; differences are found and
//! reported at `GET /admin/shadow`; the primary answer is unchanged, and it does not wait for
//! a shadow side that is slow or down.

use crate::support::{Proxy, closed_port_url, gated_upstream, standin, table};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;

/// Waits until the shadow report for `route` has accounted for `n` copies.
async fn report_for(p: &Proxy, route: &str, n: u64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, r) = p.admin_get("/admin/shadow").await;
        let r = r["routes"][route].clone();
        let done: u64 =
            ["compared", "shadow_errors", "skipped", "dropped"].iter().map(|k| r[k].as_u64().unwrap_or(0)).sum();
        if done >= n {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "shadow report incomplete: {r}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differences_are_found_and_reported_and_the_primary_answer_is_unchanged() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let shadowed = |ignore: &str| {
        table(
            1,
            &legacy.url(),
            &auth.url(),
            &format!("shadow = {{ primary = \"legacy\", percent = 100, ignore = [{ignore}] }}"),
        )
    };
    let p = Proxy::start(&shadowed(r#""server", "headers", "body_bytes""#)).await;
    for i in 0..10 {
        let (status, echo) = p.get(&format!("/api/v1/auth/backup-codes/{i}?q=1")).await;
        assert_eq!(status, 200);
        assert_eq!(echo["server"], "raptor", "the primary answers");
        assert_eq!(echo["path"], format!("/api/v1/auth/backup-codes/{i}"));
    }
    // POST is not a safe method: not copied unless the route allows it.
    let r = p.client.post(p.url("/api/v1/auth/backup-codes/redeem")).body("{}").send().await.expect("post");
    assert_eq!(r.status(), 200);
    let r = report_for(&p, "backup-codes", 10).await;
    assert_eq!(r["compared"], 10, "{r}");
    assert_eq!(r["mismatched"], 10, "{r}");
    assert_eq!(r["match_rate"], 0.0);
    let sample = &r["samples"][0];
    assert_eq!(sample["differences"], json!(["/path"]), "the rewritten path differs: {sample}");
    assert_eq!((sample["primary_status"].as_u64(), sample["shadow_status"].as_u64()), (Some(200), Some(200)));
    assert_eq!(sample["shadow_side"], "queue");
    // Shadow copies finish concurrently: the first sample is one of the ten, without its query.
    let path = sample["path"].as_str().expect("path");
    let n = path.strip_prefix("/api/v1/auth/backup-codes/").expect("a sampled request");
    assert!(n.parse::<u32>().is_ok_and(|n| n < 10), "no query string in samples: {path}");
    assert!(sample.get("body").is_none(), "samples carry no values");

    // Ignoring the path too, the two sides agree.
    std::fs::write(&p.table, shadowed(r#""server", "headers", "body_bytes", "/path""#)).expect("write");
    assert_eq!(p.admin_post("/admin/reload", json!({})).await.0, 200);
    for i in 0..10 {
        assert_eq!(p.get(&format!("/api/v1/auth/backup-codes/{i}")).await.0, 200);
    }
    let r = report_for(&p, "backup-codes", 20).await;
    assert_eq!((r["compared"].as_u64(), r["matched"].as_u64()), (Some(20), Some(10)), "{r}");
    assert_eq!(r["match_rate"], 0.5);
    let metrics = p.admin_text("/metrics").await;
    assert!(
        metrics.contains("queue_proxy_shadow_comparisons_total{outcome=\"match\",route=\"backup-codes\""),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_primary_does_not_wait_for_a_shadow_side_that_never_answers_or_is_down() {
    let legacy = standin("raptor", false);
    let gate = gated_upstream();
    let t = table(1, &legacy.url(), &gate.upstream.url(), "shadow = { primary = \"legacy\" }")
        .replace("response_timeout_ms = 2000\n\n[[routes]]", "response_timeout_ms = 600000\n\n[[routes]]");
    let o = crate::support::Options { shadow_queue: 8, shadow_concurrency: 4, ..Default::default() };
    let p = Proxy::start_with(&t, o).await;
    // Every copy hangs on the shadow side until the gate opens, yet each primary answer comes
    // back: the client never waits for the shadow.
    for i in 0..50 {
        let (status, echo) = p.get(&format!("/api/v1/auth/backup-codes/{i}")).await;
        assert_eq!((status.as_u16(), echo["server"].as_str()), (200, Some("raptor")));
    }
    assert!(gate.received.load(Ordering::SeqCst) >= 1, "copies reached the shadow side");
    let (_, r) = p.admin_get("/admin/shadow").await;
    let dropped = r["routes"]["backup-codes"]["dropped"].as_u64().unwrap_or(0);
    assert!(dropped >= 50 - 4 - 8 - 1, "a full queue drops copies and counts them: {r}");
    gate.release();
    let r = report_for(&p, "backup-codes", 50).await;
    assert_eq!(r["dropped"].as_u64(), Some(dropped));
    assert!(r["mismatched"].as_u64() >= Some(1), "{r}");

    // The shadow side down: primaries unchanged, the failures counted as shadow errors.
    let down = table(1, &legacy.url(), &closed_port_url(), "shadow = { primary = \"legacy\" }");
    std::fs::write(&p.table, down).expect("write");
    assert_eq!(p.admin_post("/admin/reload", json!({})).await.0, 200);
    let before = r["shadow_errors"].as_u64().unwrap_or(0);
    for i in 0..5 {
        let (status, echo) = p.get(&format!("/api/v1/auth/backup-codes/{i}")).await;
        assert_eq!((status.as_u16(), echo["server"].as_str()), (200, Some("raptor")));
    }
    let r = report_for(&p, "backup-codes", 55).await;
    assert_eq!(r["shadow_errors"].as_u64(), Some(before + 5), "{r}");
    assert_eq!(r["samples"].as_array().expect("samples").last().expect("one")["differences"], json!(["(error)"]));
}
