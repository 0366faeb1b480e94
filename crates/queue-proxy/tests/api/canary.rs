//! Sticky canary cohorts: 10,000 synthetic users at 10 % and then 30 %. Users are identified
//! through auth's session validation (a stand-in of that one endpoint); everyone on Queue at
//! 10 % stays there at 30 %, and the shares land within ±2 %.

use crate::support::{Options, Proxy, auth_standin, closed_port_url, standin, table};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::atomic::Ordering;

const USERS: usize = 10_000;

/// The users whose request went to Queue.
async fn on_queue(p: &Proxy) -> HashSet<usize> {
    let results: Vec<(usize, String)> = futures_util::stream::iter(0..USERS)
        .map(|i| async move {
            let r = p
                .client
                .get(p.url("/api/v1/auth/backup-codes"))
                .header("cookie", format!("theme=dark; queue_session=sess-u{i}"))
                .send()
                .await
                .expect("request");
            assert_eq!(r.status(), 200);
            let echo: Value = r.json().await.expect("json");
            (i, echo["server"].as_str().expect("server").to_string())
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().filter(|(_, s)| s == "queue-auth").map(|(i, _)| i).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_users_at_ten_then_thirty_percent_keep_their_side() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let sessions = auth_standin();
    let canary =
        |pct: u32| table(1, &legacy.url(), &auth.url(), &format!("canary = {{ percent = {pct}, cohort = \"user\" }}"));
    let o = Options { auth_url: Some(sessions.upstream.url()), ..Default::default() };
    let p = Proxy::start_with(&canary(10), o).await;

    let at10 = on_queue(&p).await;
    let calls_after_first_round = sessions.calls.load(Ordering::SeqCst);
    assert_eq!(calls_after_first_round, USERS as u64, "one validation per user");

    std::fs::write(&p.table, canary(30)).expect("write");
    let (status, change) = p.admin_post("/admin/reload", json!({})).await;
    assert_eq!(status, 200, "{change}");
    let at30 = on_queue(&p).await;
    assert_eq!(sessions.calls.load(Ordering::SeqCst), calls_after_first_round, "validations are cached");

    let share = |n: usize| n as f64 / USERS as f64 * 100.0;
    assert!((8.0..=12.0).contains(&share(at10.len())), "10 % canary gave {:.2} %", share(at10.len()));
    assert!((28.0..=32.0).contains(&share(at30.len())), "30 % canary gave {:.2} %", share(at30.len()));
    let left: Vec<_> = at10.difference(&at30).collect();
    assert!(left.is_empty(), "{} users left Queue when the canary grew", left.len());
    println!("canary: {:.2} % at 10, {:.2} % at 30, all {} stayed", share(at10.len()), share(at30.len()), at10.len());

    // Back to 10 %: exactly the same users as before.
    std::fs::write(&p.table, canary(10)).expect("write");
    let (status, _) = p.admin_post("/admin/reload", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(on_queue(&p).await, at10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_verified_user_cohorts_fall_back_to_tenant_then_client_address() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    // auth is down: validation fails, and the request still goes through.
    let o = Options { auth_url: Some(closed_port_url()), ..Default::default() };
    let p = Proxy::start_with(&table(1, &legacy.url(), &auth.url(), "canary = { percent = 50, cohort = \"user\" }"), o)
        .await;
    let side = |tenant: Option<String>| {
        let p = &p;
        async move {
            let mut r = p.client.get(p.url("/api/v1/auth/backup-codes")).header("cookie", "queue_session=sess-someone");
            if let Some(t) = tenant {
                r = r.header("x-tenant-id", t);
            }
            let r = r.send().await.expect("request");
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.expect("json")["server"].as_str().expect("server").to_string()
        }
    };
    // By tenant: each tenant sticks to one side, and at 50 % both sides get some tenants.
    let mut sides = HashSet::new();
    for t in 0..40 {
        let first = side(Some(format!("tenant-{t}"))).await;
        assert_eq!(side(Some(format!("tenant-{t}"))).await, first);
        sides.insert(first);
    }
    assert_eq!(sides.len(), 2, "tenants spread over both sides");
    // By client address: the same loopback client always lands on the same side.
    let first = side(None).await;
    for _ in 0..10 {
        assert_eq!(side(None).await, first);
    }
}
