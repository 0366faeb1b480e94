//! Issue 16, item 4, through the real proxy: an anonymous sign-up that names a tenant is
//! refused and changes nothing; the person who signs up anyway becomes a session in the default
//! tenant only; a user provisioned into a tenant (Raptor's import) validates as its member.

use reqwest::StatusCode;
use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::RequestChallengeResponse;

use crate::support::{Options, Stack, origin};

/// What auth answers the proxy about a session token.
async fn validate(stack: &Stack, token: &str) -> Value {
    let svc = stack.keys.token("proxy", "auth", &["sessions:validate"]);
    let (s, v) = stack
        .post(&stack.auth[0].base_url, "/internal/v1/sessions/validate", Some(&svc), &json!({"token": token}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

#[tokio::test]
async fn a_sign_up_naming_a_tenant_through_the_proxy_claims_nothing() {
    let stack = Stack::start(Options::default()).await;
    let proxy = stack.proxy.base_url.clone();

    // The attack: name the victim tenant at sign-up.
    let claim = json!({"email": "mallory@example.com", "tenant_id": "victim"});
    let (s, v) = stack.post(&proxy, "/api/v1/auth/email/verification", None, &claim).await;
    assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{v}");
    let claim = json!({"email": "mallory@example.com", "code": "12345678", "tenant_id": "victim"});
    let (s, v) = stack.post(&proxy, "/api/v1/auth/email/verification/confirm", None, &claim).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");

    // Signing up as anyone may, then a passkey: the session is in the default tenant only.
    let (session, _key) = stack.signed_in(&proxy, "mallory@example.com").await;
    let v = validate(&stack, &session).await;
    assert_eq!((v["valid"].as_bool(), v["tenant_id"].as_str()), (Some(true), Some("default")), "{v}");
    let (s, me) = stack.get(&proxy, "/api/v1/auth/session", Some(&session)).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["user"]["tenant_id"], "default", "{me}");
    let mail = stack.mail_to("mallory@example.com", 0).await;
    assert!(mail.contains("verification code"), "one verification mail, from the accepted request: {mail}");

    // A user Raptor provisioned into t1 signs up (naming no tenant) and is t1's member.
    let raptor = stack.keys.token("raptor", "auth", &["users:write"]);
    let (s, user) = stack
        .post(
            &stack.auth[0].base_url,
            "/internal/v1/users",
            Some(&raptor),
            &json!({"email": "ada@example.com", "tenant_id": "t1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{user}");
    let enrollment = stack.enroll(&proxy, "ada@example.com").await;
    let mut key = SoftPasskey::new(true);
    stack.add_passkey(&proxy, &enrollment, &mut key).await;
    let start = json!({"email": "ada@example.com", "tenant_id": "t1"});
    let (s, v) = stack.post(&proxy, "/api/v1/auth/webauthn/login/start", None, &start).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let rcr: RequestChallengeResponse = serde_json::from_value(v["options"].clone()).expect("options");
    let cred = key.do_authentication(origin(), rcr).expect("the authenticator answers");
    let finish = json!({"ceremony_id": v["ceremony_id"], "credential": cred});
    let (s, v) = stack.post(&proxy, "/api/v1/auth/webauthn/login/finish", None, &finish).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let v = validate(&stack, v["session"]["token"].as_str().expect("token")).await;
    assert_eq!((v["tenant_id"].as_str(), &v["user_id"]), (Some("t1"), &user["id"]), "{v}");
}
