//! Issue 19, item 3 (auth's side) and item 2's second half, end to end with the real Raptor: Ada,
//! imported from Raptor, signs out at Queue and her Raptor session ends at Raptor; registers a
//! passkey at Queue and it appears at Raptor, where it signs her in (Raptor's own authenticator);
//! redeems a Raptor backup code at Queue and it is used at Raptor; the next import finds all of it
//! unchanged (nothing imported twice); with Raptor down the change waits, then goes once.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

use crate::legacy_import::{ACME, Browser, ada_at_raptor, import, login_at_queue, outcomes, passkey};
use crate::raptor::ADMIN;
use crate::support::{Options, RaptorOptions, Stack};

/// auth's write-back backlog (`write_back` of its import status), as the operator sees it.
async fn backlog(stack: &Stack) -> Value {
    let token = stack.keys.token("operator", "auth", &["users:import"]);
    let (s, v) = stack.get(&stack.auth[0].base_url, "/internal/v1/import/status", Some(&token)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["write_back"].clone()
}

/// Waits up to 30 s for `what` to hold.
async fn until<F, Fut>(stack: &Stack, what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not within 30 s; write-back: {}\n{}",
            backlog(stack).await,
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn delivered(stack: &Stack) {
    until(stack, "the write-back backlog empty", || async {
        let b = backlog(stack).await;
        b["pending"] == 0 && b["failed"] == 0
    })
    .await;
}

/// `GET /api/me` at Raptor with the `raptor_session` value.
async fn raptor_me(stack: &Stack, session: &str) -> StatusCode {
    stack
        .client
        .get(format!("{}/api/me", stack.raptor().url))
        .header(reqwest::header::COOKIE, format!("raptor_session={session}"))
        .send()
        .await
        .expect("Raptor answers")
        .status()
}

/// One number from Raptor's database.
async fn raptor_count(stack: &Stack, sql: &str) -> i64 {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = stack.raptor().db.conn().await;
    diesel::sql_query(sql).get_result::<N>(&mut conn).await.expect("Raptor's database").n
}

/// Registers a new passkey (Raptor's software authenticator, state in `key`) for the full session
/// `session` at Queue: the new passkey's Queue id.
async fn register_at_queue(stack: &Stack, session: &str, key: &std::path::Path) -> String {
    let auth = &stack.auth[0].base_url;
    let (s, v) = stack.post(auth, "/api/v1/auth/webauthn/register/start", Some(session), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let credential = passkey(key, &["create", &stack.browser_origin], &v["options"]["publicKey"]).await;
    let body = json!({"ceremony_id": v["ceremony_id"], "credential": credential, "name": "Ada's Queue key"});
    let (s, v) = stack.post(auth, "/api/v1/auth/webauthn/register/finish", Some(session), &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}\n{}", stack.logs());
    v["id"].as_str().expect("id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_ada_does_at_queue_reaches_raptor() {
    let raptor = RaptorOptions { write_back: true, ..RaptorOptions::default() };
    let mut stack = Stack::start(Options { raptor: Some(raptor), ..Options::default() }).await;
    let dir = tempfile::tempdir().expect("tmp");
    let raptor_key = dir.path().join("ada-raptor-passkey.json");
    let queue_key = dir.path().join("ada-queue-passkey.json");
    let (raptor_session, codes) = ada_at_raptor(&stack, &raptor_key).await;
    let (code, report) = import(&stack, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    let auth = stack.auth[0].base_url.clone();
    assert_eq!(raptor_me(&stack, &raptor_session).await, StatusCode::OK, "signed in at Raptor");

    // Signing out at Queue (Raptor's session, carried over) ends the session at Raptor.
    let (s, v) =
        stack.call(reqwest::Method::DELETE, format!("{auth}/api/v1/auth/session"), Some(&raptor_session), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    until(&stack, "the Raptor session revoked at Raptor", || async {
        raptor_me(&stack, &raptor_session).await == StatusCode::UNAUTHORIZED
    })
    .await;

    // A passkey registered at Queue appears at Raptor, under her customer id and handle.
    let (s, v) = login_at_queue(&stack, &raptor_key, Some(ADMIN.0)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let session = v["session"]["token"].as_str().expect("a Queue session").to_string();
    register_at_queue(&stack, &session, &queue_key).await;
    let ada_keys = "SELECT count(*) AS n FROM webauthn_credentials w JOIN customers c ON c.id = w.customer_id \
                    WHERE c.email = 'admin@acme.test'";
    until(&stack, "the Queue passkey at Raptor", || async { raptor_count(&stack, ada_keys).await == 2 }).await;

    // A Raptor backup code redeemed at Queue is used at Raptor: it no longer signs in there.
    let redeem = json!({"email": ADMIN.0, "code": codes[1], "tenant_id": ACME});
    let (s, v) = stack.post(&auth, "/api/v1/auth/backup-codes/redeem", None, &redeem).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let used = "SELECT count(*) AS n FROM customer_backup_codes b JOIN customers c ON c.id = b.customer_id \
                WHERE c.email = 'admin@acme.test' AND b.used_at IS NOT NULL";
    until(&stack, "the code used at Raptor", || async { raptor_count(&stack, used).await == 1 }).await;
    let mut browser = Browser::default();
    let (s, v) = browser.post(&stack, "/api/signin/backup-code", &json!({"email": ADMIN.0, "code": codes[1]})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a code used at Queue, at Raptor: {v}");

    // The next import brings nothing new: the passkey that went to Raptor is linked (not a second
    // one), the session and the code are as Queue left them.
    delivered(&stack).await;
    let (code, again) = import(&stack, &[]).await;
    assert_eq!(code, 0, "{again:#}");
    for (kind, [created, updated, _, _, refused]) in outcomes(&again) {
        if ["users", "sessions", "backup-codes", "passkeys"].contains(&kind.as_str()) {
            assert_eq!((created, updated, refused), (0, 0, 0), "{kind} after the write-back: {again:#}");
        }
    }

    // The passkey from Queue signs Ada in at Raptor (rollback locks nobody out).
    let mut browser = Browser::default();
    let (s, options) = browser.post(&stack, "/api/passkeys/signin/options", &json!({"email": ADMIN.0})).await;
    assert_eq!(s, StatusCode::OK, "{options}");
    let credential = passkey(&queue_key, &["get"], &options).await;
    let (s, v) = browser.post(&stack, "/api/passkeys/signin/verify", &json!({"credential": credential})).await;
    assert_eq!(s, StatusCode::OK, "the Queue passkey at Raptor: {v}\n{}", stack.raptor().stderr());
    assert_eq!(v["customer"]["email"], ADMIN.0, "{v}");

    // Raptor down: the change waits (reported), then goes once when Raptor is back.
    stack.raptor.as_mut().expect("Raptor").stop();
    let (s, v) = login_at_queue(&stack, &queue_key, Some(ADMIN.0)).await;
    assert_eq!(s, StatusCode::OK, "Queue does not need Raptor to sign in: {v}");
    until(&stack, "the update waiting, its error reported", || async {
        let b = backlog(&stack).await;
        b["pending"] == 1 && b["kinds"][0]["last_error"].is_string()
    })
    .await;
    let before = stack.raptor().stderr().matches("\"action\": \"passkey.updated\"").count();
    let raptor = stack.raptor.take().expect("Raptor");
    stack.raptor = Some(raptor.restart().await);
    delivered(&stack).await;
    let counter = "SELECT max(w.sign_count)::bigint AS n FROM webauthn_credentials w \
                   JOIN customers c ON c.id = w.customer_id WHERE c.email = 'admin@acme.test' AND w.name = 'Ada''s Queue key'";
    // Raptor's sign-in counted 1, Queue's sign-in 2.
    assert_eq!(raptor_count(&stack, counter).await, 2, "{}", stack.raptor().stderr());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = stack.raptor().stderr().matches("\"action\": \"passkey.updated\"").count();
    assert_eq!(after - before, 1, "the update went once:\n{}", stack.raptor().stderr());
}
