//! Issue 16, the account's promises against a hostile client: tenant membership is given, never
//! taken by naming a tenant at sign-up; per-address mail caps hold whatever else the request
//! says; adding a way in (a passkey, backup codes) needs a recent passkey check (step-up); every
//! new passkey, new code set and recovery mails the user; a verification link never replaces a
//! signed-in session; a backup-code redeem for an unknown address takes the known path.

use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::RequestChallengeResponse;

use crate::support::{Auth, link_token_in, origin};

const SEND: &str = "/api/v1/auth/email/verification";
const CONFIRM: &str = "/api/v1/auth/email/verification/confirm";
const REDEEM: &str = "/api/v1/auth/backup-codes/redeem";

/// Runs a re-authentication (step-up) ceremony for `token`'s session with `key`.
async fn reauth(auth: &Auth, token: &str, key: &mut SoftPasskey) -> (u16, Value) {
    let (s, v) = auth.post("/api/v1/auth/webauthn/reauth/start", Some(token), &json!({})).await;
    assert_eq!(s, 200, "{v}");
    let rcr: RequestChallengeResponse = serde_json::from_value(v["options"].clone()).expect("options");
    let cred = key.do_authentication(origin(), rcr).expect("authenticator answers");
    let (s, v) = auth
        .post(
            "/api/v1/auth/webauthn/reauth/finish",
            Some(token),
            &json!({"ceremony_id": v["ceremony_id"], "credential": cred}),
        )
        .await;
    (s.as_u16(), v)
}

fn error_code(v: &Value) -> Option<&str> {
    v["error"]["code"].as_str()
}

#[tokio::test]
async fn a_sign_up_naming_a_tenant_is_refused_and_a_sign_up_joins_no_tenant() {
    let auth = Auth::start().await;
    // The attack of issue 16: name the victim tenant at sign-up (send, and confirm).
    let (s, v) = auth.post(SEND, None, &json!({"email": "mallory@example.com", "tenant_id": "victim"})).await;
    assert_eq!((s.as_u16(), error_code(&v)), (400, Some("bad_request")), "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("tenant_id")), "a clear error: {v}");
    let (s, v) = auth
        .post(CONFIRM, None, &json!({"email": "mallory@example.com", "code": "12345678", "tenant_id": "victim"}))
        .await;
    assert_eq!((s.as_u16(), error_code(&v)), (400, Some("bad_request")), "{v}");
    // Refused requests changed nothing: no verification, no mail, no counter, no event.
    for table in ["auth.email_verifications", "auth.mail_intents", "auth.abuse_counters", "auth.audit_outbox"] {
        assert_eq!(auth.scalar(&format!("SELECT count(*) AS n FROM {table}")).await, 0, "{table}");
    }

    // The same person signs up as anyone may: the session is in the default tenant only.
    let (token, _key) = auth.signed_in("mallory@example.com").await;
    let v = auth.validate(&token).await;
    assert_eq!((v["valid"].as_bool(), v["tenant_id"].as_str()), (Some(true), Some("default")), "{v}");
    let (_, me) = auth.get("/api/v1/auth/session", &token).await;
    assert_eq!(
        (me["user"]["tenant_id"].as_str(), me["session"]["tenant_id"].as_str()),
        (Some("default"), Some("default"))
    );
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.users WHERE tenant_id <> 'default'").await, 0);
}

#[tokio::test]
async fn a_provisioned_user_signs_up_into_their_tenant_and_sessions_report_only_it() {
    let auth = Auth::start().await;
    let raptor = auth.app.token("raptor", &["users:write"]);
    let (s, user) =
        auth.post("/internal/v1/users", Some(&raptor), &json!({"email": "ada@example.com", "tenant_id": "t1"})).await;
    assert_eq!(s, 201, "{user}");
    // Signing up (no tenant named) with the provisioned address enrolls that user.
    let enrollment = auth.enroll("ada@example.com").await;
    let (_, me) = auth.get("/api/v1/auth/session", &enrollment).await;
    assert_eq!(me["user"]["id"], user["id"], "{me}");
    let mut key = SoftPasskey::new(true);
    auth.add_passkey(&enrollment, &mut key, "laptop").await;
    // Log in by email in that tenant.
    let (s, v) = auth
        .post("/api/v1/auth/webauthn/login/start", None, &json!({"email": "ada@example.com", "tenant_id": "t1"}))
        .await;
    assert_eq!(s, 200, "{v}");
    let rcr: RequestChallengeResponse = serde_json::from_value(v["options"].clone()).expect("options");
    let cred = key.do_authentication(origin(), rcr).expect("assertion");
    let (s, v) = auth
        .post("/api/v1/auth/webauthn/login/finish", None, &json!({"ceremony_id": v["ceremony_id"], "credential": cred}))
        .await;
    assert_eq!(s, 200, "{v}");
    let token = v["session"]["token"].as_str().expect("token").to_string();
    let v = auth.validate(&token).await;
    assert_eq!((v["valid"].as_bool(), v["tenant_id"].as_str()), (Some(true), Some("t1")), "{v}");
    assert_eq!(v["user_id"], user["id"]);
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.users").await, 1, "no second user was created");

    // What a session reports is the user's membership, not a tenant stored with the session.
    auth.exec("UPDATE auth.queue_sessions SET tenant_id = 'victim'").await;
    let v = auth.validate(&token).await;
    assert_eq!(v["tenant_id"], "t1", "{v}");
    let (_, me) = auth.get("/api/v1/auth/session", &token).await;
    assert_eq!(me["session"]["tenant_id"], "t1", "{me}");
}

#[tokio::test]
async fn varying_the_tenant_does_not_bypass_the_per_address_mail_caps() {
    let auth = Auth::start_with(|c| c.email.daily_cap_per_address = 2).await;
    let (s, _) = auth.post(SEND, None, &json!({"email": "cap@example.com"})).await;
    assert_eq!(s, 202);
    // Within the cooldown: naming a tenant, or writing the address differently, sends nothing.
    for body in [json!({"email": "cap@example.com", "tenant_id": "t2"}), json!({"email": " CAP@Example.com "})] {
        let (s, v) = auth.post(SEND, None, &body).await;
        assert!(s == 400 || s == 429, "{body} → {s} {v}");
    }
    auth.advance(61);
    let (s, _) = auth.post(SEND, None, &json!({"email": "cap@example.com"})).await;
    assert_eq!(s, 202);
    // Past the daily cap: whatever tenant is named, nothing more is sent today.
    for tenant in ["t2", "t3", "default"] {
        auth.advance(61);
        let (s, v) = auth.post(SEND, None, &json!({"email": "cap@example.com", "tenant_id": tenant})).await;
        assert!(s == 400 || s == 429, "{tenant} → {s} {v}");
    }
    auth.advance(61);
    let (s, v) = auth.post(SEND, None, &json!({"email": "Cap@example.com"})).await;
    assert_eq!((s.as_u16(), error_code(&v)), (429, Some("rate_limited")), "{v}");
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.mail_intents").await, 2);
    // One counter for the address, keyed by the address alone.
    assert_eq!(
        auth.scalar(
            "SELECT count(*) AS n FROM auth.abuse_counters WHERE bucket = 'email_send_account' AND subject = 'cap@example.com'"
        )
        .await,
        1
    );
    assert_eq!(
        auth.scalar("SELECT count(*) AS n FROM auth.abuse_counters WHERE bucket = 'email_send_account'").await,
        1
    );
}

#[tokio::test]
async fn a_passkey_added_with_a_stale_session_is_refused_and_with_a_fresh_one_accepted() {
    let auth = Auth::start().await;
    let (token, mut key) = auth.signed_in("stale@example.com").await;
    // Fresh (just logged in): accepted.
    let mut phone = SoftPasskey::new(true);
    auth.add_passkey(&token, &mut phone, "phone").await;

    // Six minutes later (the session is still live: idle timeout 30 min), a stolen cookie
    // cannot add a passkey.
    auth.advance(6 * 60);
    let (s, v) = auth.post("/api/v1/auth/webauthn/register/start", Some(&token), &json!({})).await;
    assert_eq!((s.as_u16(), error_code(&v)), (403, Some("step_up_required")), "{v}");
    assert_eq!(auth.validate(&token).await["valid"], true, "the session itself still works");
    // A registration started while fresh cannot be finished once stale either.
    let fresh = auth.login("stale@example.com", &mut key).await;
    let (s, started) = auth.post("/api/v1/auth/webauthn/register/start", Some(&fresh), &json!({})).await;
    assert_eq!(s, 200, "{started}");
    auth.advance(6 * 60);
    let ccr = serde_json::from_value(started["options"].clone()).expect("options");
    let mut tablet = SoftPasskey::new(true);
    let cred = tablet.do_registration(origin(), ccr).expect("registers");
    let (s, v) = auth
        .post(
            "/api/v1/auth/webauthn/register/finish",
            Some(&fresh),
            &json!({"ceremony_id": started["ceremony_id"], "credential": cred}),
        )
        .await;
    assert_eq!((s.as_u16(), error_code(&v)), (403, Some("step_up_required")), "{v}");
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.passkeys").await, 2, "nothing was added");

    // A re-authentication with one of the user's passkeys makes the session fresh again.
    let (s, v) = reauth(&auth, &token, &mut key).await;
    assert_eq!(s, 200, "{v}");
    auth.add_passkey(&token, &mut tablet, "tablet").await;
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.passkeys").await, 3);
    // ... for five minutes.
    auth.advance(5 * 60 + 1);
    let (s, v) = auth.post("/api/v1/auth/webauthn/register/start", Some(&token), &json!({})).await;
    assert_eq!((s.as_u16(), error_code(&v)), (403, Some("step_up_required")), "{v}");

    // A re-authentication ceremony is not a login: finishing it at login/finish mints nothing.
    let (s, v) = auth.post("/api/v1/auth/webauthn/reauth/start", Some(&token), &json!({})).await;
    assert_eq!(s, 200, "{v}");
    let rcr: RequestChallengeResponse = serde_json::from_value(v["options"].clone()).expect("options");
    let cred = key.do_authentication(origin(), rcr).expect("assertion");
    let (s, out) = auth
        .post("/api/v1/auth/webauthn/login/finish", None, &json!({"ceremony_id": v["ceremony_id"], "credential": cred}))
        .await;
    assert_eq!(s, 404, "not a ceremony for this step: {out}");
    // Nor can another session finish it.
    let (s, out) = auth
        .post(
            "/api/v1/auth/webauthn/reauth/finish",
            Some(&fresh),
            &json!({"ceremony_id": v["ceremony_id"], "credential": cred}),
        )
        .await;
    assert_eq!(s, 404, "{out}");

    // Enrollment and recovery sessions may still register (that is their purpose), however
    // long ago their email or code was checked within their lifetime.
    let enrollment = auth.enroll("new@example.com").await;
    auth.advance(10 * 60);
    auth.add_passkey(&enrollment, &mut SoftPasskey::new(true), "first").await;
}

#[tokio::test]
async fn backup_codes_need_a_fresh_session_too() {
    let auth = Auth::start().await;
    let (token, mut key) = auth.signed_in("codes@example.com").await;
    let (s, v) = auth.post("/api/v1/auth/backup-codes", Some(&token), &json!({})).await;
    assert_eq!(s, 201, "fresh: {v}");
    auth.advance(6 * 60);
    let (s, v) = auth.post("/api/v1/auth/backup-codes", Some(&token), &json!({})).await;
    assert_eq!((s.as_u16(), error_code(&v)), (403, Some("step_up_required")), "{v}");
    assert_eq!(
        auth.scalar("SELECT count(*) AS n FROM auth.queue_backup_codes WHERE voided_at IS NULL").await,
        10,
        "the refused request changed nothing"
    );
    let (s, v) = reauth(&auth, &token, &mut key).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = auth.post("/api/v1/auth/backup-codes", Some(&token), &json!({})).await;
    assert_eq!(s, 201, "after a re-authentication: {v}");
}

#[tokio::test]
async fn a_new_passkey_a_new_code_set_and_a_recovery_each_mail_the_user() {
    let auth = Auth::start().await;
    let email = "told@example.com";
    let (token, _key) = auth.signed_in(email).await;
    let added = auth.mail_about(email, "A passkey was added", 0).await;
    assert!(added.contains("\"laptop\""), "{added}");
    let (s, v) = auth.post("/api/v1/auth/backup-codes", Some(&token), &json!({})).await;
    assert_eq!(s, 201, "{v}");
    let code = v["codes"][0].as_str().expect("code").to_string();
    let generated = auth.mail_about(email, "New backup codes", 0).await;
    assert!(!generated.contains(&code), "no code in the mail");
    let (s, v) = auth.post(REDEEM, None, &json!({"email": email, "code": code})).await;
    assert_eq!(s, 200, "{v}");
    let recovered = auth.mail_about(email, "A backup code was used", 0).await;
    assert!(recovered.contains("9 unused codes remain"), "{recovered}");
    // And a replacement passkey added with the recovery session is mailed too.
    let recovery = v["session"]["token"].as_str().expect("token").to_string();
    auth.add_passkey(&recovery, &mut SoftPasskey::new(true), "replacement").await;
    let replaced = auth.mail_about(email, "A passkey was added", 1).await;
    assert!(replaced.contains("\"replacement\""), "{replaced}");
}

#[tokio::test]
async fn a_verification_link_never_replaces_a_signed_in_session() {
    let auth = Auth::start().await;
    let (signed_in, _key) = auth.signed_in("me@example.com").await;
    // A link for another address (an attacker's, say) is clicked in the signed-in browser.
    let (s, _) = auth.post(SEND, None, &json!({"email": "attacker@example.com"})).await;
    assert_eq!(s, 202);
    let token = link_token_in(&auth.mail_about("attacker@example.com", "verification code", 0).await);
    let r = auth
        .app
        .client
        .post(auth.app.url(CONFIRM))
        .header("cookie", format!("queue_session={signed_in}"))
        .json(&json!({"token": token}))
        .send()
        .await
        .expect("confirm");
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_none(), "no new session cookie");
    let v: Value = r.json().await.expect("json");
    assert_eq!((v["verified"].as_bool(), v["kept_session"].as_bool()), (Some(true), Some(true)), "{v}");
    assert!(v["session"].is_null(), "{v}");
    assert_eq!(
        auth.scalar("SELECT count(*) AS n FROM auth.queue_sessions WHERE kind = 'enrollment' AND revoked_at IS NULL")
            .await,
        1,
        "only me@'s own enrollment session from signing up, none for the link"
    );
    let (_, me) = auth.get("/api/v1/auth/session", &signed_in).await;
    assert_eq!(me["user"]["email"], "me@example.com", "still signed in as before");
}

#[tokio::test]
async fn a_backup_code_redeem_for_an_unknown_address_takes_the_known_path() {
    let auth = Auth::start_with(|c| c.limits.delay_after_failures = 100).await;
    let (token, _key) = auth.signed_in("known@example.com").await;
    let (s, _) = auth.post("/api/v1/auth/backup-codes", Some(&token), &json!({})).await;
    assert_eq!(s, 201);
    // Count the statements that try to use a code (a statement trigger fires even when the
    // statement matches no row).
    auth.exec(
        "CREATE TABLE public.redeem_attempts (n int);
         CREATE FUNCTION public.count_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO public.redeem_attempts VALUES (1); RETURN NULL; END $$;
         CREATE TRIGGER count_attempt AFTER UPDATE ON auth.queue_backup_codes
           FOR EACH STATEMENT EXECUTE FUNCTION public.count_attempt();
         GRANT INSERT ON public.redeem_attempts TO queue_auth_app;",
    )
    .await;
    let wrong = "aaaa-bbbb-ccccc";
    let known = auth.post(REDEEM, None, &json!({"email": "known@example.com", "code": wrong})).await;
    assert_eq!(
        auth.scalar("SELECT count(*) AS n FROM public.redeem_attempts").await,
        1,
        "the known path tries the code"
    );
    let unknown = auth.post(REDEEM, None, &json!({"email": "nobody@example.com", "code": wrong})).await;
    assert_eq!(known, unknown, "the same answer");
    assert_eq!(known.0, 401);
    assert_eq!(
        auth.scalar("SELECT count(*) AS n FROM public.redeem_attempts").await,
        2,
        "the unknown address tried a code the same way (against a decoy)"
    );
    for subject in ["default/known@example.com", "default/nobody@example.com"] {
        assert_eq!(
            auth.scalar(&format!(
                "SELECT failures::bigint AS n FROM auth.abuse_counters WHERE bucket = 'redeem_account' AND subject = '{subject}'"
            ))
            .await,
            1,
            "{subject}: the same limits"
        );
    }
    assert_eq!(
        auth.scalar("SELECT count(*) AS n FROM auth.audit_outbox WHERE event->>'action' = 'auth.login.failed'").await,
        2
    );
}
