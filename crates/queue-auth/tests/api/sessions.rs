//! Sessions v2 on an injectable clock: idle expiry, the absolute cap, at most one `last_seen`
//! write per interval, revocation, kinds, the cookie, and the validate contract.

use queue_auth::domain::RequestInfo;
use queue_auth::domain::sessions::{self, Kind};
use serde_json::json;
use uuid::Uuid;

use crate::support::Auth;

/// A provisioned user and a session of `kind` minted by the domain (the HTTP routes that mint
/// sessions are covered by the passkey and email tests).
pub(crate) async fn session(auth: &Auth, email: &str, kind: Kind) -> (Uuid, String) {
    let (user_id, _, token) = minted(auth, email, kind, 0).await;
    (user_id, token)
}

/// Like [`session`], minted as if `secs_ago` seconds before now: (user id, session id, token).
pub(crate) async fn minted(auth: &Auth, email: &str, kind: Kind, secs_ago: i64) -> (Uuid, Uuid, String) {
    // A token per provisioning call: a write spends its token.
    let raptor = || auth.app.token("raptor", &["users:write"]);
    let (s, user) = auth.post("/internal/v1/users", Some(&raptor()), &json!({"email": email})).await;
    assert!(s.is_success(), "{user}");
    let user_id: Uuid = user["id"].as_str().expect("id").parse().expect("uuid");
    let mut conn = auth.sql().await;
    let m = sessions::create(
        &mut conn,
        &auth.config.sessions,
        auth.clock_now() - chrono::Duration::seconds(secs_ago),
        &RequestInfo::default(),
        user_id,
        "default",
        kind,
    )
    .await
    .map_err(|e| format!("{e:?}"))
    .expect("session");
    (user_id, m.session.id, m.token.to_string())
}

#[tokio::test]
async fn the_idle_timeout_expires_an_unused_session() {
    let auth = Auth::start().await;
    let (_, token) = session(&auth, "idle@example.com", Kind::Full).await;
    let v = auth.validate(&token).await;
    assert_eq!(v["valid"], true, "{v}");
    auth.advance(29 * 60);
    assert_eq!(auth.validate(&token).await["valid"], true, "29 min idle: still valid (and slid)");
    auth.advance(29 * 60);
    assert_eq!(auth.validate(&token).await["valid"], true, "used 29 min ago: valid");
    auth.advance(30 * 60 + 1);
    assert_eq!(auth.validate(&token).await["valid"], false, "30 min idle: expired");
    let (s, _) = auth.get("/api/v1/auth/session", &token).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn the_absolute_lifetime_caps_an_active_session() {
    let auth = Auth::start().await;
    let (_, token) = session(&auth, "busy@example.com", Kind::Full).await;
    let first = auth.validate(&token).await;
    let absolute = first["absolute_expires_at"].as_str().expect("absolute").to_string();
    // Used every 20 minutes for 12 hours: the idle timeout slides, never past the cap.
    for _ in 0..(12 * 3) - 1 {
        auth.advance(20 * 60);
        let v = auth.validate(&token).await;
        assert_eq!(v["valid"], true, "{v}");
        assert_eq!(v["absolute_expires_at"], absolute.as_str());
        assert!(v["idle_expires_at"].as_str().expect("idle") <= absolute.as_str(), "{v}");
    }
    auth.advance(20 * 60);
    assert_eq!(auth.validate(&token).await["valid"], false, "12 h after creation: expired despite activity");
}

#[tokio::test]
async fn last_seen_is_written_at_most_once_a_minute() {
    let auth = Auth::start().await;
    let (_, token) = session(&auth, "hot@example.com", Kind::Full).await;
    // Count the writes with a trigger: exact, and not subject to statistics delays.
    auth.exec(
        "CREATE TABLE public.session_writes (n int);
         CREATE FUNCTION public.count_write() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO public.session_writes VALUES (1); RETURN NEW; END $$;
         CREATE TRIGGER count_write AFTER UPDATE ON auth.queue_sessions FOR EACH ROW EXECUTE FUNCTION public.count_write();
         GRANT INSERT ON public.session_writes TO queue_auth_app;",
    )
    .await;
    let svc = auth.app.token("proxy", &["sessions:validate"]);
    let one = || {
        let client = auth.app.client.clone();
        let url = auth.app.url("/internal/v1/sessions/validate");
        let (svc, token) = (svc.clone(), token.clone());
        async move {
            let r = client.post(url).bearer_auth(svc).json(&json!({"token": token})).send().await.expect("send");
            let v: serde_json::Value = r.json().await.expect("json");
            assert_eq!(v["valid"], true);
        }
    };
    // n validations, 50 at a time.
    let burst = async |n: usize| {
        for _ in 0..n.div_ceil(50) {
            futures_util::future::join_all((0..50.min(n)).map(|_| one())).await;
        }
    };
    burst(1000).await;
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM public.session_writes").await, 0, "within the first minute");
    auth.advance(61);
    burst(1000).await;
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM public.session_writes").await, 1, "one write for the minute");
    auth.advance(30);
    burst(1000).await;
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM public.session_writes").await, 1, "30 s later: none");
    auth.advance(31);
    burst(10).await;
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM public.session_writes").await, 2);
}

#[tokio::test]
async fn list_revoke_one_revoke_others_and_logout() {
    let auth = Auth::start().await;
    let (user_id, a) = session(&auth, "many@example.com", Kind::Full).await;
    let mut conn = auth.sql().await;
    let mut more = Vec::new();
    for _ in 0..3 {
        let m = sessions::create(
            &mut conn,
            &auth.config.sessions,
            auth.clock_now(),
            &RequestInfo::default(),
            user_id,
            "default",
            Kind::Full,
        )
        .await
        .map_err(|e| format!("{e:?}"))
        .expect("session");
        more.push((m.session.id, m.token.to_string()));
    }
    let (s, list) = auth.get("/api/v1/auth/sessions", &a).await;
    assert_eq!(s, 200, "{list}");
    assert_eq!(list["sessions"].as_array().expect("list").len(), 4);
    assert_eq!(list["sessions"].as_array().expect("list").iter().filter(|x| x["current"] == true).count(), 1);
    assert!(list.to_string().find(&more[0].1).is_none(), "tokens are never listed");

    let (s, _) = auth.delete(&format!("/api/v1/auth/sessions/{}", more[0].0), &a).await;
    assert_eq!(s, 204);
    assert_eq!(auth.validate(&more[0].1).await["valid"], false);
    // Someone else's or an unknown session: 404.
    let (s, _) = auth.delete(&format!("/api/v1/auth/sessions/{}", Uuid::new_v4()), &a).await;
    assert_eq!(s, 404);

    let (s, v) = auth.post("/api/v1/auth/sessions/revoke-others", Some(&a), &json!({})).await;
    assert_eq!((s.as_u16(), v["revoked"].as_u64()), (200, Some(2)), "{v}");
    assert_eq!(auth.validate(&more[1].1).await["valid"], false);
    assert_eq!(auth.validate(&a).await["valid"], true);

    let r = auth.app.client.delete(auth.app.url("/api/v1/auth/session")).bearer_auth(&a).send().await.expect("logout");
    assert_eq!(r.status(), 204);
    let cookie = r.headers().get("set-cookie").and_then(|v| v.to_str().ok()).expect("cookie").to_string();
    assert!(cookie.starts_with("queue_session=;") && cookie.contains("Max-Age=0"), "{cookie}");
    assert_eq!(auth.validate(&a).await["valid"], false);
    let (s, _) = auth.get("/api/v1/auth/session", &a).await;
    assert_eq!(s, 401);
    assert_eq!(
        auth.scalar("SELECT count(*) AS n FROM auth.audit_outbox WHERE event->>'action' = 'auth.session.revoked'")
            .await,
        3
    );
}

#[tokio::test]
async fn restricted_sessions_may_not_act_and_do_not_validate_for_services() {
    let auth = Auth::start().await;
    let (_, token) = session(&auth, "new@example.com", Kind::Enrollment).await;
    let (s, v) = auth.get("/api/v1/auth/session", &token).await;
    assert_eq!((s.as_u16(), v["session"]["kind"].as_str()), (200, Some("enrollment")));
    let (s, _) = auth.get("/api/v1/auth/sessions", &token).await;
    assert_eq!(s, 403);
    let (s, _) = auth.post("/api/v1/auth/backup-codes", Some(&token), &json!({})).await;
    assert_eq!(s, 403);
    assert_eq!(auth.validate(&token).await["valid"], false);
    // 15 minutes is all it gets.
    auth.advance(15 * 60);
    let (s, _) = auth.get("/api/v1/auth/session", &token).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn validate_needs_its_scope_and_refuses_garbage_quietly() {
    let auth = Auth::start().await;
    let (_, token) = session(&auth, "v@example.com", Kind::Full).await;
    let (s, _) = auth
        .post("/internal/v1/sessions/validate", Some(&auth.app.token("proxy", &[])), &json!({"token": token}))
        .await;
    assert_eq!(s, 403);
    let (s, _) = auth.post("/internal/v1/sessions/validate", Some(&token), &json!({"token": token})).await;
    assert_eq!(s, 401, "a session token is not a service token");
    let v = auth.validate(&token).await;
    for k in ["session_id", "user_id", "tenant_id", "idle_expires_at", "absolute_expires_at"] {
        assert!(v[k].is_string(), "{k}: {v}");
    }
    for bad in ["", "x", &"a".repeat(43), &token[..42]] {
        assert_eq!(auth.validate(bad).await["valid"], false);
    }
    // Only the SHA-256 of the token is stored.
    assert_eq!(
        auth.scalar(&format!(
            "SELECT count(*) AS n FROM auth.queue_sessions WHERE token_hash = sha256('{token}'::bytea)"
        ))
        .await,
        1
    );
    assert_eq!(
        auth.scalar(&format!(
            "SELECT count(*) AS n FROM auth.queue_sessions t WHERE row_to_json(t)::text LIKE '%{token}%'"
        ))
        .await,
        0
    );
}
