//! Coalesced validation: many concurrent validations, sharing queries, each get their own
//! answer; a revocation is seen by every validation sent after it; the idle timeout slides once
//! per interval however the validations are batched; a failing query answers each waiting
//! validation with an error, never "valid".

use futures_util::future::join_all;
use queue_auth::domain::sessions::{self, Kind};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::sessions::{minted, session};
use crate::support::Auth;

/// A session of `kind` for a new user, minted as if at `secs_ago` seconds before now.
async fn session_from(auth: &Auth, email: &str, kind: Kind, secs_ago: i64) -> (Uuid, String) {
    let (_, id, token) = minted(auth, email, kind, secs_ago).await;
    (id, token)
}

/// `POST /internal/v1/sessions/validate` without asserting the status.
async fn validate_raw(auth: &Auth, svc: &str, token: &str) -> (u16, Value) {
    let r = auth
        .app
        .client
        .post(auth.app.url("/internal/v1/sessions/validate"))
        .bearer_auth(svc)
        .json(&json!({"token": token}))
        .send()
        .await
        .expect("send");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Counts every UPDATE of a session row (a trigger: exact, no statistics delay).
async fn count_session_writes(auth: &Auth) {
    auth.exec(
        "CREATE TABLE public.session_writes (n int);
         CREATE FUNCTION public.count_write() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO public.session_writes VALUES (1); RETURN NEW; END $$;
         CREATE TRIGGER count_write AFTER UPDATE ON auth.queue_sessions FOR EACH ROW EXECUTE FUNCTION public.count_write();
         GRANT INSERT ON public.session_writes TO queue_auth_app;",
    )
    .await;
}

async fn writes(auth: &Auth) -> i64 {
    auth.scalar("SELECT count(*) AS n FROM public.session_writes").await
}

#[tokio::test]
async fn two_hundred_concurrent_validations_each_get_their_own_answer() {
    let auth = Auth::start().await;
    // (token, the session it must validate as, or None: invalid).
    let mut cases: Vec<(String, Option<Uuid>)> = Vec::new();
    for i in 0..8 {
        let (id, token) = session_from(&auth, &format!("live{i}@example.com"), Kind::Full, 0).await;
        cases.push((token, Some(id)));
    }
    for i in 0..2 {
        let (id, token) = session_from(&auth, &format!("revoked{i}@example.com"), Kind::Full, 0).await;
        auth.exec(&format!(
            "UPDATE auth.queue_sessions SET revoked_at = last_seen_at, revoked_reason = 'test' WHERE id = '{id}'"
        ))
        .await;
        cases.push((token, None));
    }
    // Idle for 31 minutes, and past the 12 h lifetime.
    cases.push((session_from(&auth, "idle@example.com", Kind::Full, 31 * 60).await.1, None));
    cases.push((session_from(&auth, "old@example.com", Kind::Full, 13 * 3600).await.1, None));
    // Not a full session: only good for registering a passkey here.
    cases.push((session_from(&auth, "enrolling@example.com", Kind::Enrollment, 0).await.1, None));
    cases.push((session_from(&auth, "recovering@example.com", Kind::Recovery, 0).await.1, None));
    let (_, disabled) = session_from(&auth, "disabled@example.com", Kind::Full, 0).await;
    auth.exec("UPDATE auth.users SET status = 'disabled' WHERE email = 'disabled@example.com'").await;
    cases.push((disabled, None));
    // Well-formed tokens that name no session, and garbage.
    for i in 0..3 {
        cases.push((format!("{i:_>43}"), None));
    }
    cases.push(("short".into(), None));

    let svc = auth.app.token("proxy", &["sessions:validate"]);
    // 200 at once: every case many times over (duplicates land in the same batches).
    let answers = join_all((0..200).map(|i| {
        let (token, expected) = cases[i % cases.len()].clone();
        let svc = svc.clone();
        let auth = &auth;
        async move { (validate_raw(auth, &svc, &token).await, expected) }
    }))
    .await;
    for ((status, v), expected) in answers {
        assert_eq!(status, 200, "{v}");
        match expected {
            Some(id) => {
                assert_eq!(v["valid"], true, "{v}");
                assert_eq!(v["session_id"], id.to_string(), "{v}");
                assert!(v["user_id"].is_string() && v["idle_expires_at"].is_string(), "{v}");
            }
            None => {
                assert_eq!(v["valid"], false, "{v}");
                assert!(v["session_id"].is_null() && v["user_id"].is_null(), "{v}");
            }
        }
    }
}

#[tokio::test]
async fn a_validation_after_a_revocation_sees_it_even_under_load() {
    let auth = Auth::start().await;
    let svc = auth.app.token("proxy", &["sessions:validate"]);
    let (_, bystander) = session(&auth, "bystander@example.com", Kind::Full).await;
    for round in 0..10 {
        let (_, token) = session(&auth, &format!("revoke{round}@example.com"), Kind::Full).await;
        assert_eq!(auth.validate(&token).await["valid"], true);
        // Validations of this token and another run throughout; the logout lands among them.
        let load = join_all((0..60).map(|i| {
            let t = if i % 2 == 0 { token.clone() } else { bystander.clone() };
            let (svc, auth) = (svc.clone(), &auth);
            async move { validate_raw(auth, &svc, &t).await }
        }));
        let revoke_then_validate = async {
            let (s, _) = auth.delete("/api/v1/auth/session", &token).await;
            assert_eq!(s, 204);
            // Sent after the revocation committed: invalid, each of them.
            join_all((0..20).map(|_| validate_raw(&auth, &svc, &token))).await
        };
        let (during, after) = futures_util::join!(load, revoke_then_validate);
        for (s, v) in during {
            assert_eq!(s, 200, "{v}");
        }
        for (s, v) in after {
            assert_eq!((s, &v["valid"]), (200, &Value::Bool(false)), "round {round}: {v}");
        }
        assert_eq!(auth.validate(&bystander).await["valid"], true);
    }
}

#[tokio::test]
async fn one_batch_slides_each_due_session_once() {
    let auth = Auth::start().await;
    let (a_id, a) = session_from(&auth, "a@example.com", Kind::Full, 0).await;
    let (b_id, b) = session_from(&auth, "b@example.com", Kind::Full, 0).await;
    let (c_id, c) = session_from(&auth, "c@example.com", Kind::Full, 0).await;
    count_session_writes(&auth).await;
    let mut conn = auth.sql().await;
    let cfg = &auth.config.sessions;
    let (ha, hb, hc) = (sessions::token_hash(&a), sessions::token_hash(&b), sessions::token_hash(&c));
    let unknown = sessions::token_hash(&"_".repeat(43));

    // Within the interval: answers, no write.
    let out = sessions::validate_hashes(&mut conn, cfg, auth.clock_now(), &[ha.clone(), hb.clone()]).await;
    let out = out.map_err(|e| format!("{e:?}")).expect("validate");
    assert_eq!(out.iter().map(|s| s.as_ref().map(|s| s.id)).collect::<Vec<_>>(), [Some(a_id), Some(b_id)]);
    assert_eq!(writes(&auth).await, 0);

    // A minute on, `c` revoked: one batch naming `a` three times and `b` once writes `a` and `b`
    // once each.
    auth.exec(&format!(
        "UPDATE auth.queue_sessions SET revoked_at = created_at, revoked_reason = 'test' WHERE id = '{c_id}'"
    ))
    .await;
    let before = writes(&auth).await;
    auth.advance(61);
    let now = auth.clock_now();
    let batch = [ha.clone(), unknown.clone(), ha.clone(), hb.clone(), hc.clone(), ha.clone()];
    let out = sessions::validate_hashes(&mut conn, cfg, now, &batch).await.map_err(|e| format!("{e:?}")).expect("ok");
    let ids: Vec<_> = out.iter().map(|s| s.as_ref().map(|s| s.id)).collect();
    assert_eq!(ids, [Some(a_id), None, Some(a_id), Some(b_id), None, Some(a_id)]);
    for s in out.iter().flatten() {
        assert_eq!(s.last_seen_at, now, "slid");
        assert_eq!(s.idle_expires_at, now + chrono::Duration::seconds(cfg.idle_timeout_secs));
    }
    assert_eq!(writes(&auth).await - before, 2, "one write per due session");

    // Again at the same moment: nothing is due, nothing written.
    let out = sessions::validate_hashes(&mut conn, cfg, now, &batch).await.map_err(|e| format!("{e:?}")).expect("ok");
    assert_eq!(out.iter().flatten().count(), 4);
    assert_eq!(writes(&auth).await - before, 2);
}

#[tokio::test]
async fn a_failing_query_answers_every_waiting_validation_with_an_error() {
    let auth = Auth::start().await;
    let (_, token) = session(&auth, "err@example.com", Kind::Full).await;
    let svc = auth.app.token("proxy", &["sessions:validate"]);
    auth.exec("REVOKE SELECT ON auth.queue_sessions FROM queue_auth_app").await;
    let answers = join_all((0..50).map(|_| validate_raw(&auth, &svc, &token))).await;
    for (s, v) in answers {
        assert_eq!((s, v["error"]["code"].as_str()), (500, Some("internal")), "{v}");
        assert!(v.get("valid").is_none(), "{v}");
    }
    auth.exec("GRANT SELECT ON auth.queue_sessions TO queue_auth_app").await;
    assert_eq!(auth.validate(&token).await["valid"], true, "the service recovers");
}
