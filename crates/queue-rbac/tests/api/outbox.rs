//! Nothing lost on the rbac side (issue 16, item 9): the real rbac binary dies right after a
//! grant's audit event was written, before the grant; after a restart the compensating event
//! arrives from the outbox, exactly once, and the chain verifies.

use crate::support::spawn_audit;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use queue_testkit::process::ServiceProcess;
use queue_testkit::{TestDb, TestKeys};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_queue-rbac");

fn binary_env(keys: &TestKeys, db: &TestDb, audit_url: &str) -> Vec<(String, String)> {
    vec![
        ("DATABASE_URL".into(), db.url.clone()),
        ("QUEUE_TOKENS__ISSUER".into(), "rbac".into()),
        ("QUEUE_TOKENS__SIGNING_KEY".into(), keys.private("rbac").display().to_string()),
        (
            "QUEUE_TOKENS__TRUSTED".into(),
            format!(r#"[{{issuer = "raptor", public_key = "{}"}}]"#, keys.public("raptor").display()),
        ),
        ("QUEUE_AUDIT__URL".into(), audit_url.to_string()),
        ("QUEUE_AUDIT__TIMEOUT_MS".into(), "1000".into()),
        ("QUEUE_AUDIT__COMPENSATE_AFTER_SECS".into(), "2".into()),
    ]
}

fn refs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

async fn scalar(url: &str, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = AsyncPgConnection::establish(url).await.expect("connect");
    let n: N = diesel::sql_query(sql).get_result(&mut conn).await.expect("scalar");
    n.n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_audit_write_and_the_grant_is_compensated_once_from_the_outbox() {
    let keys = TestKeys::new();
    let audit_keys = tempfile::tempdir().expect("tmp");
    let audit = spawn_audit(&keys, audit_keys.path()).await;
    let db = TestDb::new(&[queue_rbac::MIGRATIONS]).await;
    let env = binary_env(&keys, &db, &audit.url("/"));
    let admin = keys.token("raptor", "rbac", &["rbac:grant", "rbac:check", "rbac:read"]);
    let reader = keys.token("raptor", "audit", &["audit:read"]);
    let events = || async {
        let (s, v) = audit.get_json_as("/api/v1/audit/events?tenant_id=K&limit=1000", &reader).await;
        assert_eq!(s, 200, "{v}");
        v["events"].as_array().cloned().unwrap_or_default()
    };

    // The first process dies (abort, like kill -9: no clean-up) right after the audit write.
    let mut dying = env.clone();
    dying.push(("RBAC_TEST_FAILPOINT".into(), "abort-after-prewrite".into()));
    let first = ServiceProcess::start(BIN, &refs(&dying)).await;
    let body = json!({"principal_id": "k1", "role": "agent", "scope": {"type": "tenant", "tenant_id": "K"}, "reason": "crash"});
    let answer = reqwest::Client::new()
        .post(format!("{}/api/v1/rbac/grants", first.base_url))
        .bearer_auth(&admin)
        .json(&body)
        .send()
        .await;
    assert!(answer.is_err(), "the process died before answering: {answer:?}");
    drop(first);

    // The audit log announces a grant that does not exist; the compensation waits in the outbox.
    let announced = events().await;
    assert_eq!(announced.len(), 1, "{announced:?}");
    assert_eq!(announced[0]["action"], "rbac.grant.created");
    assert_eq!(scalar(&db.url, "SELECT count(*) AS n FROM rbac.rbac_grants").await, 0);
    let pending = "SELECT count(*) AS n FROM rbac.rbac_audit_outbox WHERE delivered_at IS NULL";
    assert_eq!(scalar(&db.url, pending).await, 1, "the compensation was committed before the audit write");

    // A restarted process (any replica would do) delivers it when its hold ends.
    let second = ServiceProcess::start(BIN, &refs(&env)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while scalar(&db.url, pending).await > 0 {
        assert!(Instant::now() < deadline, "the compensation was not delivered: {}", second.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = events().await;
    let actions: Vec<&str> = after.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, vec!["rbac.grant.created", "rbac.change.aborted"], "{after:?}");
    assert_eq!(after[1]["payload"]["aborted_event_id"], announced[0]["id"], "the compensation names the event");

    // A redelivery (say the relay's answer was lost) is recognised: still exactly once.
    diesel::sql_query("UPDATE rbac.rbac_audit_outbox SET delivered_at = NULL, next_attempt_at = now()")
        .execute(&mut AsyncPgConnection::establish(&db.url).await.expect("connect"))
        .await
        .expect("redeliver");
    while scalar(&db.url, pending).await > 0 {
        assert!(Instant::now() < deadline, "no redelivery: {}", second.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(events().await.len(), 2, "delivered twice, recorded once");
    let (s, report) = audit.get_json_as("/api/v1/audit/verify?tenant_id=K", &reader).await;
    assert_eq!((s.as_u16(), report["ok"].as_bool(), report["events"].as_i64()), (200, Some(true), Some(2)), "{report}");

    // And the grant that never happened does not count.
    let check = json!({"principal_id": "k1", "permission": "ticket.write", "resource": {"tenant_id": "K"}});
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/rbac/check", second.base_url))
        .bearer_auth(&admin)
        .json(&check)
        .send()
        .await
        .expect("check");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["allowed"], false, "{v}");
}
