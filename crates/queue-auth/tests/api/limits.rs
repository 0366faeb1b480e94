//! Abuse limits kept in PostgreSQL: progressive delay, lockout, 429 + Retry-After, and the same
//! answers for known and unknown accounts.

use serde_json::json;

use crate::support::Auth;

const REDEEM: &str = "/api/v1/auth/backup-codes/redeem";

async fn redeem(auth: &Auth, email: &str) -> (u16, Option<String>, serde_json::Value) {
    let r = auth
        .app
        .client
        .post(auth.app.url(REDEEM))
        .json(&json!({"email": email, "code": "0000-0000-00000"}))
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    let retry = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(String::from);
    (status, retry, r.json().await.expect("json"))
}

/// The shape of a JSON value: its keys and value kinds, not the values.
fn shape(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Object(m) => {
            let inner: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{}", shape(v))).collect();
            format!("{{{}}}", inner.join(","))
        }
        serde_json::Value::String(_) => "s".into(),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn repeated_failures_lock_the_account_alike_for_known_and_unknown_emails() {
    let auth = Auth::start_with(|c| {
        c.limits.lockout_after_failures = 5;
        c.limits.delay_after_failures = 100;
        c.limits.lockout_secs = 600;
    })
    .await;
    auth.signed_in("victim@example.com").await;
    let mut seen = Vec::new();
    for email in ["victim@example.com", "nobody@example.com"] {
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let (s, _, body) = redeem(&auth, email).await;
            statuses.push(s);
            seen.push(shape(&body));
        }
        assert_eq!(statuses, vec![401; 5], "{email}");
        let (s, retry, body) = redeem(&auth, email).await;
        assert_eq!((s, body["error"]["code"].as_str()), (429, Some("rate_limited")), "{email}: {body}");
        let retry: i64 = retry.expect("retry-after").parse().expect("seconds");
        assert!((1..=600).contains(&retry), "{retry}");
        seen.push(shape(&body));
    }
    // The same status sequence and the same body shapes for the known and the unknown address.
    assert_eq!(seen[..6], seen[6..]);
    assert_eq!(
        auth.scalar("SELECT count(*) AS n FROM auth.audit_outbox WHERE event->>'action' = 'auth.lockout'").await,
        2
    );
    // The lockout ends.
    auth.advance(601);
    let (s, _, _) = redeem(&auth, "victim@example.com").await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn failures_bring_a_growing_delay() {
    let auth = Auth::start_with(|c| {
        c.limits.delay_after_failures = 2;
        c.limits.delay_base_secs = 4;
        c.limits.lockout_after_failures = 50;
    })
    .await;
    for _ in 0..2 {
        assert_eq!(redeem(&auth, "slow@example.com").await.0, 401);
    }
    // From the 2nd failure on, each attempt waits base * 2^(failures - 2).
    let (s, retry, _) = redeem(&auth, "slow@example.com").await;
    assert_eq!((s, retry.as_deref()), (429, Some("4")));
    auth.advance(4);
    assert_eq!(redeem(&auth, "slow@example.com").await.0, 401);
    let (s, retry, _) = redeem(&auth, "slow@example.com").await;
    assert_eq!((s, retry.as_deref()), (429, Some("8")));
    // Counters live in PostgreSQL, shared by every replica.
    assert_eq!(
        auth.scalar("SELECT failures::bigint AS n FROM auth.abuse_counters WHERE bucket = 'redeem_account'").await,
        3
    );
}

#[tokio::test]
async fn passkey_login_failures_lock_out_too() {
    let auth = Auth::start_with(|c| {
        c.limits.lockout_after_failures = 3;
        c.limits.delay_after_failures = 100;
    })
    .await;
    let (_, mut key) = auth.signed_in("pk@example.com").await;
    for _ in 0..3 {
        let (ceremony, _) = auth.assertion(Some("pk@example.com"), &mut key).await;
        let (s, _) = auth
            .post(
                "/api/v1/auth/webauthn/login/finish",
                None,
                &json!({"ceremony_id": ceremony, "credential": garbage()}),
            )
            .await;
        assert_eq!(s, 422);
    }
    // Malformed input is refused before it counts; real failed assertions count.
    for _ in 0..3 {
        let (ceremony, _) = auth.assertion(Some("pk@example.com"), &mut key).await;
        let (other, cred) = auth.assertion(Some("pk@example.com"), &mut key).await;
        let _ = other;
        let (s, _) = auth
            .post("/api/v1/auth/webauthn/login/finish", None, &json!({"ceremony_id": ceremony, "credential": cred}))
            .await;
        assert_eq!(s, 401);
    }
    let (s, v) = auth.post("/api/v1/auth/webauthn/login/start", None, &json!({"email": "pk@example.com"})).await;
    assert_eq!(s, 429, "{v}");
    assert!(
        auth.scalar("SELECT count(*) AS n FROM auth.audit_outbox WHERE event->>'action' = 'auth.login.failed'").await
            >= 3
    );
}

fn garbage() -> serde_json::Value {
    json!({"id": "x", "rawId": "x", "type": "public-key", "response": {}})
}
