//! Passkeys through a software authenticator at the HTTP level: the whole journey, usernameless
//! start, ceremonies in PostgreSQL, counters, credential management, and bad input.

use serde_json::{Value, json};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{RequestChallengeResponse, Url};

use crate::support::{Auth, origin};

const FINISH: &str = "/api/v1/auth/webauthn/login/finish";

#[tokio::test]
async fn the_whole_journey() {
    let auth = Auth::start().await;
    // Verify the email: an enrollment session, which may only register a passkey.
    let enrollment = auth.enroll("journey@example.com").await;
    let (s, _) = auth.get("/api/v1/auth/webauthn/credentials", &enrollment).await;
    assert_eq!(s, 403);
    let mut key = SoftPasskey::new(true);
    auth.add_passkey(&enrollment, &mut key, "laptop").await;
    // Log out.
    let (s, _) = auth.delete("/api/v1/auth/session", &enrollment).await;
    assert_eq!(s, 204);
    let (s, _) = auth.get("/api/v1/auth/session", &enrollment).await;
    assert_eq!(s, 401);

    // Log in with the passkey, by email: Set-Cookie and the session in the body.
    let (ceremony, cred) = auth.assertion(Some("journey@example.com"), &mut key).await;
    let r = auth
        .app
        .client
        .post(auth.app.url(FINISH))
        .json(&json!({"ceremony_id": ceremony, "credential": cred}))
        .send()
        .await
        .expect("finish");
    assert_eq!(r.status(), 200);
    let cookie = r.headers().get("set-cookie").and_then(|v| v.to_str().ok()).expect("cookie").to_string();
    let v: Value = r.json().await.expect("json");
    let session = &v["session"];
    for k in ["id", "token", "idle_expires_at", "absolute_expires_at"] {
        assert!(session[k].is_string(), "{k}: {v}");
    }
    assert_eq!(session["kind"], "full");
    let token = session["token"].as_str().expect("token").to_string();
    assert!(cookie.contains(&token) && cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");

    // Who am I, with the cookie as a browser would send it.
    let r = auth
        .app
        .client
        .get(auth.app.url("/api/v1/auth/session"))
        .header("cookie", format!("other=1; queue_session={token}"))
        .send()
        .await
        .expect("whoami");
    assert_eq!(r.status(), 200);
    let me: Value = r.json().await.expect("json");
    assert_eq!(
        (me["user"]["email"].as_str(), me["session"]["kind"].as_str()),
        (Some("journey@example.com"), Some("full"))
    );

    // The credential shows its use; the session list shows this session.
    let (_, creds) = auth.get("/api/v1/auth/webauthn/credentials", &token).await;
    let c = &creds["credentials"][0];
    assert_eq!(c["name"], "laptop");
    assert!(c["created_at"].is_string() && c["last_used_at"].is_string(), "{creds}");
    let (s, list) = auth.get("/api/v1/auth/sessions", &token).await;
    assert_eq!(s, 200);
    let sessions = list["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 1, "the enrollment session was logged out: {list}");
    assert_eq!(sessions[0]["id"], session["id"]);

    // Revoke it: the token is refused everywhere.
    let (s, _) = auth.delete(&format!("/api/v1/auth/sessions/{}", session["id"].as_str().expect("id")), &token).await;
    assert_eq!(s, 204);
    let (s, _) = auth.get("/api/v1/auth/session", &token).await;
    assert_eq!(s, 401);
    assert_eq!(auth.validate(&token).await["valid"], false);

    for action in ["auth.passkey.added", "auth.passkey.used", "auth.session.revoked"] {
        assert!(
            auth.scalar(&format!("SELECT count(*) AS n FROM auth.audit_outbox WHERE event->>'action' = '{action}'"))
                .await
                >= 1,
            "{action}"
        );
    }
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.webauthn_ceremonies").await, 0, "ceremonies are consumed");
}

#[tokio::test]
async fn usernameless_login_finds_the_user_from_the_credential() {
    let auth = Auth::start().await;
    let (token, mut key) = auth.signed_in("nameless@example.com").await;
    let (_, me) = auth.get("/api/v1/auth/session", &token).await;
    let user_id: uuid::Uuid = me["user"]["id"].as_str().expect("id").parse().expect("uuid");
    let (_, by_email) =
        auth.post("/api/v1/auth/webauthn/login/start", None, &json!({"email": "nameless@example.com"})).await;
    let allow = by_email["options"]["publicKey"]["allowCredentials"].clone();

    let (s, v) = auth.post("/api/v1/auth/webauthn/login/start", None, &json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["options"]["publicKey"]["allowCredentials"], json!([]));
    assert_eq!(v["options"]["publicKey"]["userVerification"], "required");
    assert_eq!(v["options"]["mediation"], "conditional");
    // SoftPasskey keeps no resident keys, so it cannot pick a credential for an empty allow list
    // itself. Play the browser's part: offer it its credential for this same challenge, then
    // return the user handle a resident key would carry (the handle is not signed; the server
    // must check it against the credential).
    let rcr: RequestChallengeResponse = serde_json::from_value(v["options"].clone()).expect("options");
    assert!(key.do_authentication(origin(), rcr).is_err());
    let mut options = v["options"].clone();
    options["publicKey"]["allowCredentials"] = allow;
    let rcr: RequestChallengeResponse = serde_json::from_value(options).expect("options");
    let mut cred = serde_json::to_value(key.do_authentication(origin(), rcr).expect("answers")).expect("json");
    use base64::Engine;
    let handle = |id: uuid::Uuid| json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes()));

    // Without a user handle, or with someone else's: refused.
    let (s, _) = auth.post(FINISH, None, &json!({"ceremony_id": v["ceremony_id"], "credential": cred})).await;
    assert_eq!(s, 401);
    let (_, v) = auth.post("/api/v1/auth/webauthn/login/start", None, &json!({})).await;
    let mut forged = v["options"].clone();
    forged["publicKey"]["allowCredentials"] = by_email["options"]["publicKey"]["allowCredentials"].clone();
    let rcr: RequestChallengeResponse = serde_json::from_value(forged).expect("options");
    let mut other = serde_json::to_value(key.do_authentication(origin(), rcr).expect("answers")).expect("json");
    other["response"]["userHandle"] = handle(uuid::Uuid::new_v4());
    let (s, _) = auth.post(FINISH, None, &json!({"ceremony_id": v["ceremony_id"], "credential": other})).await;
    assert_eq!(s, 401);

    // With the right handle: a full session for that user.
    let (_, v) = auth.post("/api/v1/auth/webauthn/login/start", None, &json!({})).await;
    let mut options = v["options"].clone();
    options["publicKey"]["allowCredentials"] = by_email["options"]["publicKey"]["allowCredentials"].clone();
    let rcr: RequestChallengeResponse = serde_json::from_value(options).expect("options");
    cred = serde_json::to_value(key.do_authentication(origin(), rcr).expect("answers")).expect("json");
    cred["response"]["userHandle"] = handle(user_id);
    let (s, out) = auth.post(FINISH, None, &json!({"ceremony_id": v["ceremony_id"], "credential": cred})).await;
    assert_eq!((s.as_u16(), out["session"]["kind"].as_str()), (200, Some("full")), "{out}");
    assert_eq!(out["session"]["user_id"], me["user"]["id"]);
}

#[tokio::test]
async fn login_start_looks_the_same_for_unknown_addresses() {
    let auth = Auth::start().await;
    auth.signed_in("real@example.com").await;
    let shape = |v: &Value| {
        let o = &v["options"]["publicKey"];
        let mut keys: Vec<String> = o.as_object().expect("object").keys().cloned().collect();
        keys.sort();
        (keys, o["allowCredentials"].as_array().map(Vec::len), v["options"].get("mediation").cloned())
    };
    let (s1, known) = auth.post("/api/v1/auth/webauthn/login/start", None, &json!({"email": "real@example.com"})).await;
    let (s2, unknown) =
        auth.post("/api/v1/auth/webauthn/login/start", None, &json!({"email": "ghost@example.com"})).await;
    assert_eq!(s2, 200, "{unknown}");
    assert_eq!((s1, shape(&known)), (s2, shape(&unknown)));
    // The decoy is stable per address, as a real credential id would be.
    let (_, again) = auth.post("/api/v1/auth/webauthn/login/start", None, &json!({"email": "ghost@example.com"})).await;
    assert_eq!(again["options"]["publicKey"]["allowCredentials"], unknown["options"]["publicKey"]["allowCredentials"]);
}

#[tokio::test]
async fn bad_input_gets_a_json_4xx_and_changes_nothing() {
    let auth = Auth::start().await;
    let (token, mut key) = auth.signed_in("bad@example.com").await;
    let state = async || {
        (
            auth.scalar("SELECT count(*) AS n FROM auth.queue_sessions").await,
            auth.scalar("SELECT sum(sign_count)::bigint AS n FROM auth.passkeys").await,
            auth.scalar("SELECT count(*) AS n FROM auth.passkeys").await,
        )
    };
    let before = state().await;

    // Malformed WebAuthn JSON.
    let (ceremony, _) = auth.assertion(Some("bad@example.com"), &mut key).await;
    let (s, v) = auth.post(FINISH, None, &json!({"ceremony_id": ceremony, "credential": {"id": 5}})).await;
    assert_eq!((s.as_u16(), v["error"]["field"].as_str()), (422, Some("credential")), "{v}");
    let r = auth
        .app
        .client
        .post(auth.app.url(FINISH))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.expect("json")["error"]["code"].is_string());
    let (s, _) = auth
        .post(
            "/api/v1/auth/webauthn/register/finish",
            Some(&token),
            &json!({"ceremony_id": uuid::Uuid::new_v4(), "credential": {}}),
        )
        .await;
    assert_eq!(s, 404, "no such ceremony: state, whatever the credential");

    // Wrong origin: the authenticator signs for another site.
    let (s, v) = auth.post("/api/v1/auth/webauthn/login/start", None, &json!({"email": "bad@example.com"})).await;
    assert_eq!(s, 200);
    let rcr: RequestChallengeResponse = serde_json::from_value(v["options"].clone()).expect("options");
    let evil = key.do_authentication(Url::parse("http://localhost:9999").expect("url"), rcr).expect("answers");
    let (s, v2) = auth.post(FINISH, None, &json!({"ceremony_id": v["ceremony_id"], "credential": evil})).await;
    assert_eq!(s, 401, "{v2}");

    // A replayed assertion: the same ceremony again, and against a fresh challenge.
    let (ceremony, cred) = auth.assertion(Some("bad@example.com"), &mut key).await;
    let (s, ok) = auth.post(FINISH, None, &json!({"ceremony_id": ceremony, "credential": cred})).await;
    assert_eq!(s, 200);
    let after_good = state().await;
    let (s, _) = auth.post(FINISH, None, &json!({"ceremony_id": ceremony, "credential": cred})).await;
    assert_eq!(s, 404, "a ceremony finishes once");
    let (_, fresh) = auth.post("/api/v1/auth/webauthn/login/start", None, &json!({"email": "bad@example.com"})).await;
    let (s, _) = auth.post(FINISH, None, &json!({"ceremony_id": fresh["ceremony_id"], "credential": cred})).await;
    assert_eq!(s, 401, "an old assertion does not answer a new challenge");
    assert_eq!(state().await, after_good);
    assert_eq!(after_good.0, before.0 + 1, "only the good login made a session: {ok}");

    // An expired ceremony.
    let (ceremony, cred) = auth.assertion(Some("bad@example.com"), &mut key).await;
    auth.advance(301);
    let (s, v) = auth.post(FINISH, None, &json!({"ceremony_id": ceremony, "credential": cred})).await;
    assert_eq!((s.as_u16(), v["error"]["code"].as_str()), (404, Some("not_found")), "{v}");

    // An oversized body.
    let big = json!({"ceremony_id": ceremony, "credential": {"pad": "x".repeat(300 * 1024)}});
    let (s, v) = auth.post(FINISH, None, &big).await;
    assert_eq!((s.as_u16(), v["error"]["code"].as_str()), (413, Some("payload_too_large")));
    assert_eq!(state().await, after_good);
}

#[tokio::test]
async fn a_counter_going_backwards_is_refused_and_audited() {
    let auth = Auth::start().await;
    let (_, mut key) = auth.signed_in("clone@example.com").await;
    // As if a clone of the authenticator had already been used many times.
    auth.exec("UPDATE auth.passkeys SET sign_count = 1000, passkey = jsonb_set(passkey, '{cred,counter}', '1000')")
        .await;
    let (ceremony, cred) = auth.assertion(Some("clone@example.com"), &mut key).await;
    let (s, v) = auth.post(FINISH, None, &json!({"ceremony_id": ceremony, "credential": cred})).await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(
        auth.scalar(
            "SELECT count(*) AS n FROM auth.audit_outbox WHERE event->>'action' = 'auth.passkey.counter_regressed'"
        )
        .await,
        1
    );
    assert_eq!(auth.scalar("SELECT sign_count AS n FROM auth.passkeys").await, 1000, "the stored counter is kept");
}

#[tokio::test]
async fn user_verification_is_required() {
    let auth = Auth::start().await;
    let enrollment = auth.enroll("nouv@example.com").await;
    let (_, v) = auth.post("/api/v1/auth/webauthn/register/start", Some(&enrollment), &json!({})).await;
    assert_eq!(v["options"]["publicKey"]["authenticatorSelection"]["userVerification"], "required");
    let ccr = serde_json::from_value(v["options"].clone()).expect("options");
    let mut key = SoftPasskey::new(false);
    // A authenticator that does not verify the user: the client or the server refuses.
    if let Ok(cred) = key.do_registration(origin(), ccr) {
        let (s, _) = auth
            .post(
                "/api/v1/auth/webauthn/register/finish",
                Some(&enrollment),
                &json!({"ceremony_id": v["ceremony_id"], "credential": cred}),
            )
            .await;
        assert_eq!(s, 422);
    }
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.passkeys").await, 0);
}

#[tokio::test]
async fn rename_and_remove_but_never_the_last_way_in() {
    let auth = Auth::start().await;
    let (token, _key) = auth.signed_in("keys@example.com").await;
    let (_, creds) = auth.get("/api/v1/auth/webauthn/credentials", &token).await;
    let first = creds["credentials"][0]["id"].as_str().expect("id").to_string();
    let (s, v) = auth.delete(&format!("/api/v1/auth/webauthn/credentials/{first}"), &token).await;
    assert_eq!((s.as_u16(), v["error"]["code"].as_str()), (409, Some("conflict")), "{v}");

    let mut phone = SoftPasskey::new(true);
    let second = auth.add_passkey(&token, &mut phone, "phone").await;
    let other = auth.login("keys@example.com", &mut phone).await;
    let r = auth
        .app
        .client
        .patch(auth.app.url(&format!("/api/v1/auth/webauthn/credentials/{second}")))
        .bearer_auth(&token)
        .json(&json!({"name": "work phone"}))
        .send()
        .await
        .expect("rename");
    assert_eq!(r.status(), 200);
    let (s, _) = auth.delete(&format!("/api/v1/auth/webauthn/credentials/{first}"), &token).await;
    assert_eq!(s, 204);
    assert_eq!(auth.validate(&other).await["valid"], false, "other sessions end when a credential is removed");
    let (_, creds) = auth.get("/api/v1/auth/webauthn/credentials", &token).await;
    assert_eq!(creds["credentials"].as_array().map(Vec::len), Some(1));
    assert_eq!(creds["credentials"][0]["name"], "work phone");
    let (s, _) = auth.delete(&format!("/api/v1/auth/webauthn/credentials/{second}"), &token).await;
    assert_eq!(s, 409);
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.passkeys_shadow WHERE operation = 'DELETE'").await, 1);
}

/// The finish is one transaction: when the session cannot be minted, the ceremony is not
/// consumed, the counter does not move, no `auth.passkey.used` is recorded — and the same
/// assertion then finishes once the fault is gone.
#[tokio::test]
async fn a_login_that_fails_half_way_leaves_nothing_behind() {
    let auth = Auth::start().await;
    let (_, mut key) = auth.signed_in("halfway@example.com").await;
    let used = "SELECT count(*) AS n FROM auth.audit_outbox WHERE event->>'action' = 'auth.passkey.used'";
    let (used_before, count_before) =
        (auth.scalar(used).await, auth.scalar("SELECT sign_count AS n FROM auth.passkeys").await);
    auth.exec(
        "CREATE FUNCTION auth.test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           RAISE EXCEPTION 'refused for the test'; END $$;
         CREATE TRIGGER test_refuse BEFORE INSERT ON auth.queue_sessions
           FOR EACH ROW EXECUTE FUNCTION auth.test_refuse();",
    )
    .await;
    let (ceremony, cred) = auth.assertion(Some("halfway@example.com"), &mut key).await;
    let finish = json!({"ceremony_id": ceremony, "credential": cred});
    let (s, body) = auth.post("/api/v1/auth/webauthn/login/finish", None, &finish).await;
    assert_eq!(s, 500, "{body}");
    assert_eq!(
        auth.scalar("SELECT count(*) AS n FROM auth.webauthn_ceremonies").await,
        1,
        "the ceremony is still there"
    );
    assert_eq!(
        auth.scalar("SELECT sign_count AS n FROM auth.passkeys").await,
        count_before,
        "the counter did not move"
    );
    assert_eq!(auth.scalar(used).await, used_before, "no use recorded");
    auth.exec("DROP TRIGGER test_refuse ON auth.queue_sessions").await;
    let (s, body) = auth.post("/api/v1/auth/webauthn/login/finish", None, &finish).await;
    assert_eq!(s, 200, "{body}");
    assert!(body["session"]["token"].is_string(), "{body}");
    assert_eq!(auth.scalar(used).await, used_before + 1);
}

/// A start refused by the per-address cap stores no ceremony.
#[tokio::test]
async fn a_start_over_the_address_cap_stores_nothing() {
    let auth = Auth::start_with(|c| c.limits.per_ip_attempts = 2).await;
    for _ in 0..2 {
        let (s, v) = auth.post("/api/v1/auth/webauthn/login/start", None, &json!({})).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = auth.post("/api/v1/auth/webauthn/login/start", None, &json!({})).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.webauthn_ceremonies").await, 2);
}
