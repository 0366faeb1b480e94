//! Replicas: two auth and two rbac processes on one PostgreSQL, the first of each behind the
//! proxy. The route table has one upstream per service (no load balancing), so each step that
//! needs a particular replica addresses it directly; the proxy carries the rest.

use reqwest::StatusCode;
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use crate::support::{Options, Stack, origin};

async fn redeem(stack: &Stack, base: &str, email: &str) -> (StatusCode, Value) {
    stack
        .post(base, "/api/v1/auth/backup-codes/redeem", None, &json!({"email": email, "code": "0000-0000-00000"}))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_sessions_rate_limits_and_revokes_hold_across_replicas() {
    let stack = Stack::start(Options { replicas: 2, ..Options::default() }).await;
    let proxy = stack.proxy.base_url.clone();
    let (a0, a1) = (stack.auth[0].base_url.clone(), stack.auth[1].base_url.clone());
    let (r0, r1) = (stack.rbac[0].base_url.clone(), stack.rbac[1].base_url.clone());

    // A user enrolled through the proxy (auth replica 0) ...
    let email = "replica@example.com";
    let enrollment = stack.enroll(&proxy, email).await;
    let mut key = SoftPasskey::new(true);
    stack.add_passkey(&proxy, &enrollment, &mut key).await;
    // ... starts a passkey login on one replica and finishes it on the other, both ways round.
    let s01 = stack.login(&a0, &a1, email, &mut key).await;
    let s10 = stack.login(&a1, &a0, email, &mut key).await;
    // A ceremony is finished once, whichever replica is asked again.
    let (s, v) = stack.post(&a1, "/api/v1/auth/webauthn/login/start", None, &json!({"email": email})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rcr = serde_json::from_value(v["options"].clone()).expect("options");
    let answer = key.do_authentication(origin(), rcr).expect("the authenticator answers");
    let body = json!({"ceremony_id": v["ceremony_id"], "credential": answer});
    let (s, first) = stack.post(&a0, "/api/v1/auth/webauthn/login/finish", None, &body).await;
    assert_eq!(s, StatusCode::OK, "{first}");
    let (s, again) = stack.post(&a1, "/api/v1/auth/webauthn/login/finish", None, &body).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "finished once, on either replica: {again}");
    assert!(again["error"]["message"].as_str().is_some_and(|m| m.contains("used")), "{again}");

    // A session revoked on one replica is invalid on the other at once.
    for base in [&a0, &a1, &proxy] {
        let (s, v) = stack.get(base, "/api/v1/auth/session", Some(&s01)).await;
        assert_eq!(s, StatusCode::OK, "{base}: {v}");
    }
    let (s, v) = stack.call(reqwest::Method::DELETE, format!("{a0}/api/v1/auth/session"), Some(&s01), None).await;
    assert!(s.is_success(), "logout on replica 0: {s} {v}");
    let (s, v) = stack.get(&a1, "/api/v1/auth/session", Some(&s01)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "replica 1 refuses the revoked session: {v}");
    let validate = stack.keys.token("proxy", "auth", &["sessions:validate"]);
    let (s, v) = stack.post(&a1, "/internal/v1/sessions/validate", Some(&validate), &json!({"token": s01})).await;
    assert_eq!((s, &v["valid"]), (StatusCode::OK, &json!(false)), "{v}");
    let (s, v) = stack.get(&a1, "/api/v1/auth/session", Some(&s10)).await;
    assert_eq!(s, StatusCode::OK, "the user's other session lives on: {v}");

    // Rate limits count on every replica: 4 failures (the lockout threshold in this config),
    // two on each, lock the account on both; neither replica saw more than two itself.
    let target = "limited@example.com";
    for base in [&a0, &a1, &a0, &a1] {
        let (s, v) = redeem(&stack, base, target).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    }
    for base in [&a0, &a1] {
        let (s, v) = redeem(&stack, base, target).await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "locked on {base} too: {v}");
        assert_eq!(v["error"]["code"], "rate_limited", "{v}");
    }

    // A revoke on one rbac replica is denied by the very next check on the other (whose cache
    // had the grant), in both directions.
    for round in 0..6 {
        let (revoker, checker) = if round % 2 == 0 { (&r0, &r1) } else { (&r1, &r0) };
        let principal = format!("rep-{round}");
        let r = stack.grant(&proxy, &principal, "R", None).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let grant: Value = r.json().await.expect("json");
        let before = stack.may_write(checker, &principal, "R").await;
        assert_eq!(before["allowed"], true, "round {round}: {before}");
        let id = grant["grant"]["id"].as_str().expect("grant id");
        let (s, revoked) = stack
            .call(
                reqwest::Method::DELETE,
                format!("{revoker}/api/v1/rbac/grants/{id}"),
                Some(&stack.rbac_admin()),
                Some(&json!({"reason": "e2e revoke"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{revoked}");
        let after = stack.may_write(checker, &principal, "R").await;
        assert_eq!(after["allowed"], false, "round {round}: revoked at {} but {after}", revoked["revision"]);
    }
}
