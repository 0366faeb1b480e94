//! Phase 1 sends everything to Raptor; phase 2 sends the cut-over routes to Queue with the
//! rewrite; a rollback returns them — all while a client keeps sending.

use crate::support::{Proxy, standin, table};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phase_one_then_two_then_rollback_while_a_client_keeps_sending() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let p = Arc::new(Proxy::start(&table(1, &legacy.url(), &auth.url(), "")).await);
    let v1 = p.version().await;

    // The client: one request after another, recording where each one landed.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let client = {
        let (p, stop, sent) = (p.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let (status, echo) = p.get("/api/v1/auth/backup-codes/redeem?n=1").await;
                let other = p.get("/api/v1/auth/session").await;
                seen.push((
                    status.as_u16(),
                    echo["server"].as_str().unwrap_or("").to_string(),
                    echo["path"].as_str().unwrap_or("").to_string(),
                    other.0.as_u16(),
                    other.1["server"].as_str().unwrap_or("").to_string(),
                ));
                sent.fetch_add(1, Ordering::SeqCst);
                if seen.len() > 100_000 {
                    break;
                }
            }
            seen
        })
    };
    // Waits until the client has sent `n` more requests on the table now in force.
    let served = |n: usize| {
        let sent = sent.clone();
        async move {
            let target = sent.load(Ordering::SeqCst) + n;
            while sent.load(Ordering::SeqCst) < target {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    };

    served(20).await;
    let (status, change) = p.admin_post("/admin/phase", json!({"phase": 2})).await;
    assert_eq!(status, 200, "{change}");
    assert_eq!(
        (change["changed"].as_bool(), change["phase"].as_u64(), change["persisted"].as_bool()),
        (Some(true), Some(2), Some(true))
    );
    let v2 = change["version"].as_str().expect("v").to_string();
    assert_ne!(v1, v2);
    assert!(std::fs::read_to_string(&p.table).expect("file").contains("phase = 2\n"), "the file says phase 2 now");
    served(20).await;
    let (status, change) = p.admin_post("/admin/rollback", json!({})).await;
    assert_eq!(status, 200, "{change}");
    assert_eq!(change["phase"], 1);
    assert_eq!(change["version"], v1.as_str(), "a rollback restores the very table (and version) of before");
    assert!(std::fs::read_to_string(&p.table).expect("file").contains("phase = 1\n"));
    served(20).await;
    stop.store(true, Ordering::SeqCst);
    let seen = client.await.expect("client");

    // Every request succeeded; backup codes went Raptor → Queue (rewritten) → Raptor, in that
    // order with no flapping; the sessions route (cut over in phase 3) never moved.
    assert!(seen.iter().all(|s| s.0 == 200 && s.3 == 200), "a request failed");
    assert!(seen.iter().all(|s| s.4 == "raptor"));
    let mut phases: Vec<(&str, &str)> = Vec::new();
    for s in &seen {
        let here = (s.1.as_str(), s.2.as_str());
        if phases.last() != Some(&here) {
            phases.push(here);
        }
    }
    assert_eq!(
        phases,
        vec![
            ("raptor", "/api/v1/auth/backup-codes/redeem"),
            ("queue-auth", "/queue/v1/backup-codes/redeem"),
            ("raptor", "/api/v1/auth/backup-codes/redeem"),
        ],
        "{} requests",
        seen.len()
    );
    let (_, t) = p.admin_get("/admin/routes").await;
    assert_eq!(t["phase"], 1);
    assert_eq!(t["generation"], 3);
}
