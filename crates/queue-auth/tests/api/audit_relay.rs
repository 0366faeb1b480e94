//! Security events reach the real audit service through the outbox relay: nothing is lost
//! while the audit service is down, each event arrives once, and the chain verifies.

use queue_audit::config::KeysConfig;
use queue_platform::Signals;
use queue_testkit::TestApp;
use serde_json::{Value, json};

use crate::support::Auth;

const TENANT: &str = "relay-t1";

async fn wait_delivered(auth: &Auth, want: i64) -> i64 {
    let mut n = 0;
    for _ in 0..600 {
        n = auth.scalar("SELECT count(*) AS n FROM auth.audit_outbox WHERE delivered_at IS NOT NULL").await;
        if n >= want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    n
}

#[tokio::test]
async fn with_audit_down_events_wait_then_arrive_once_and_the_chain_verifies() {
    let port = queue_testkit::process::free_port();
    let auth = Auth::start_with(|c| {
        c.audit.url = Some(format!("http://127.0.0.1:{port}").parse().expect("url"));
        c.audit.poll_interval_ms = 100;
        c.audit.backoff_initial_ms = 20;
        c.audit.backoff_max_ms = 300;
    })
    .await;

    // 100 security events while nothing listens where the audit service should be.
    // A token per provisioning call: a write spends its token.
    let raptor = || auth.app.token("raptor", &["users:write"]);
    for i in 0..100 {
        let (s, v) = auth
            .post(
                "/internal/v1/users",
                Some(&raptor()),
                &json!({"email": format!("u{i}@example.com"), "tenant_id": TENANT}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
    let pending = "SELECT count(*) AS n FROM auth.audit_outbox WHERE delivered_at IS NULL AND failed_at IS NULL";
    assert_eq!(auth.scalar(pending).await, 100);
    // The relay has tried and backed off (it waits for a refused connection; no timing here).
    for _ in 0..200 {
        if auth.scalar("SELECT count(*) AS n FROM auth.audit_outbox WHERE attempts > 0").await > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(auth.scalar("SELECT count(*) AS n FROM auth.audit_outbox WHERE attempts > 0").await > 0);
    assert_eq!(auth.scalar(pending).await, 100, "nothing is lost or dropped while audit is down");

    // The audit service comes up on that port, trusting auth's key.
    let (audit, _key_dir) = audit_on(port, &auth).await;
    assert_eq!(wait_delivered(&auth, 100).await, 100);

    let reader = audit.token("raptor", &["audit:read"]);
    let (s, v) = audit.get_json_as(&format!("/api/v1/audit/events?tenant_id={TENANT}&limit=1000"), &reader).await;
    assert_eq!(s, 200, "{v}");
    let events = v["events"].as_array().expect("events");
    assert_eq!(events.len(), 100, "each event once");
    // The audit event ids are the outbox ids, and each outbox row knows its seq.
    let ids: std::collections::BTreeSet<String> =
        events.iter().map(|e| e["id"].as_str().or(e["event_id"].as_str()).expect("id").to_string()).collect();
    assert_eq!(ids.len(), 100);
    assert_eq!(auth.scalar("SELECT count(DISTINCT audit_seq) AS n FROM auth.audit_outbox").await, 100);
    assert!(events.iter().all(|e| e["action"] == "auth.user.created"));

    // A redelivery (as after a lost response) is recognised by the event id: still 100.
    auth.exec("UPDATE auth.audit_outbox SET delivered_at = NULL WHERE seq = (SELECT min(seq) FROM auth.audit_outbox)")
        .await;
    assert_eq!(wait_delivered(&auth, 100).await, 100);
    let (_, v) = audit.get_json_as(&format!("/api/v1/audit/events?tenant_id={TENANT}&limit=1000"), &reader).await;
    assert_eq!(v["events"].as_array().map(Vec::len), Some(100));

    let (s, verify): (_, Value) = audit.get_json_as(&format!("/api/v1/audit/verify?tenant_id={TENANT}"), &reader).await;
    assert_eq!(s, 200);
    assert_eq!((verify["ok"].as_bool(), verify["verified_through_seq"].as_i64()), (Some(true), Some(100)), "{verify}");
    audit.stop().await;
}

#[tokio::test]
async fn the_client_appends_one_event_idempotently() {
    let key_dir = tempfile::tempdir().expect("tmp");
    let keys = KeysConfig::local_in(key_dir.path(), true).expect("keys").0;
    let audit = TestApp::spawn("audit", queue_audit::MIGRATIONS, move |base| {
        queue_audit::run(queue_audit::AuditConfig::new(base, keys), Signals::Ignore)
    })
    .await;
    let minter = std::sync::Arc::new(audit.keys.minter("rbac"));
    let client = queue_audit_client::AuditClient::new(
        queue_platform::http_client::HttpClient::new(),
        audit.url("/").parse().expect("url"),
        minter,
    )
    .with_timeout(std::time::Duration::from_secs(2));
    let event = queue_audit_client::AuditEvent {
        id: uuid::Uuid::new_v4(),
        tenant_id: "t9".into(),
        actor: queue_audit_client::Party::new("user", "u1"),
        action: "rbac.grant.created".into(),
        target: queue_audit_client::Party::new("grant", "g1"),
        occurred_at: chrono::Utc::now(),
        ip: None,
        user_agent: None,
        trace_id: None,
        payload: json!({"role": "viewer"}),
    };
    let first = client.append(&event).await.expect("appended");
    assert_eq!((first.id, first.seq), (event.id, 1));
    assert_eq!(first.mac.len(), 64);
    let again = client.append(&event).await.expect("idempotent");
    assert_eq!(again, first);
    // A conflicting reuse of the id is refused, not retried.
    let mut other = event.clone();
    other.action = "rbac.grant.revoked".into();
    let err = client.append(&other).await.expect_err("conflict");
    assert!(!err.is_retryable(), "{err}");
    // With the service gone, the error says retry.
    audit.stop().await;
    let err = client.append(&event).await.expect_err("down");
    assert!(err.is_retryable(), "{err}");
}

/// A round goes to the audit service as one batch (atomic); when the batch is refused because of
/// one event (here one auth may not write: an `rbac.*` action), the round is delivered one by
/// one: that event is marked failed with the reason, the others arrive.
#[tokio::test]
async fn a_refused_event_in_a_round_fails_alone_and_the_rest_arrive() {
    let port = queue_testkit::process::free_port();
    let auth = Auth::start_with(|c| {
        c.audit.url = Some(format!("http://127.0.0.1:{port}").parse().expect("url"));
        c.audit.poll_interval_ms = 100;
        c.audit.backoff_initial_ms = 20;
        c.audit.backoff_max_ms = 300;
    })
    .await;
    let raptor = || auth.app.token("raptor", &["users:write"]);
    for i in 0..3 {
        let body = json!({"email": format!("r{i}@example.com"), "tenant_id": TENANT});
        let (s, v) = auth.post("/internal/v1/users", Some(&raptor()), &body).await;
        assert_eq!(s, 201, "{v}");
    }
    // An event auth does not own, between them in the outbox.
    auth.exec(
        "WITH n AS (SELECT gen_random_uuid() AS id) INSERT INTO auth.audit_outbox (id, event) \
         SELECT n.id, (SELECT event FROM auth.audit_outbox ORDER BY seq LIMIT 1) \
           || jsonb_build_object('id', n.id, 'action', 'rbac.grant.created') FROM n",
    )
    .await;
    for i in 3..5 {
        let body = json!({"email": format!("r{i}@example.com"), "tenant_id": TENANT});
        let (s, v) = auth.post("/internal/v1/users", Some(&raptor()), &body).await;
        assert_eq!(s, 201, "{v}");
    }

    let (audit, _key_dir) = audit_on(port, &auth).await;
    assert_eq!(wait_delivered(&auth, 5).await, 5);
    for _ in 0..200 {
        if auth.scalar("SELECT count(*) AS n FROM auth.audit_outbox WHERE failed_at IS NOT NULL").await == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let failed = "SELECT count(*) AS n FROM auth.audit_outbox WHERE failed_at IS NOT NULL \
                  AND event->>'action' = 'rbac.grant.created' AND last_error LIKE '%403%'";
    assert_eq!(auth.scalar(failed).await, 1, "the foreign event failed, with the audit service's answer");
    let reader = audit.token("raptor", &["audit:read"]);
    let (s, v) = audit.get_json_as(&format!("/api/v1/audit/events?tenant_id={TENANT}&limit=100"), &reader).await;
    assert_eq!(s, 200, "{v}");
    let events = v["events"].as_array().expect("events");
    assert_eq!(events.len(), 5, "the five of auth's own, once each");
    assert!(events.iter().all(|e| e["action"] == "auth.user.created"));
    audit.stop().await;
}

/// The audit service on `port` (where auth's relay sends), trusting auth's key; its key files
/// live as long as the directory returned.
async fn audit_on(port: u16, auth: &Auth) -> (TestApp, tempfile::TempDir) {
    let key_dir = tempfile::tempdir().expect("tmp");
    let keys = KeysConfig::local_in(key_dir.path(), true).expect("keys").0;
    let auth_public = auth.app.keys.public("auth");
    let audit = TestApp::spawn_with(
        "audit",
        queue_audit::MIGRATIONS,
        move |base| queue_audit::run(queue_audit::AuditConfig::new(base, keys), Signals::Ignore),
        move |c| {
            c.server.listen = format!("127.0.0.1:{port}").parse().expect("addr");
            for t in &mut c.tokens.trusted {
                if t.issuer == "auth" {
                    t.public_key = Some(auth_public.clone());
                }
            }
        },
    )
    .await;
    (audit, key_dir)
}
