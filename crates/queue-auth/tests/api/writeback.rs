//! The write-back to Raptor (issue 19): each change of a user from Raptor writes one row of
//! `auth.legacy_writeback` in its own transaction (a user from Queue, or a refused change, none),
//! and the relay delivers the rows to a small Raptor stand-in on loopback: in order per record,
//! the latest counter only, Raptor's id stored back, retries while Raptor is down or unwell, a
//! refusal kept as failed and reported by the import status, two relays never sending one row
//! twice.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use queue_platform::writeback::{Change, RelaySettings, WritebackRelay};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use webauthn_authenticator_rs::softpasskey::SoftPasskey;

use crate::support::Auth;

const USERS: &str = "/internal/v1/import/users";
const SESSIONS: &str = "/internal/v1/import/sessions";
const CODES: &str = "/internal/v1/import/backup-codes";
const STATUS: &str = "/internal/v1/import/status";
const PASSKEYS: &str = "/internal/queue/v1/passkeys";
/// Raptor's werkzeug hash of backup code `nbswy-3dpeb` (as in `import.rs`).
const CODE: (&str, &str) = (
    "nbswy-3dpeb",
    "pbkdf2:sha256:600000$Ophj6V1ZsBkKQkfQ$27c7dd0746fc9a22e1139bea026750d47917e5cc743782d9b28dc23a0b1bbb35",
);

// ---------------------------------------------------------------------------------------------
// A Raptor stand-in: records what arrives, answers as the contract says (or as told).

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: Value,
    claims: Value,
    status: u16,
}

#[derive(Default)]
struct FakeState {
    seen: Vec<Seen>,
    /// Answer 503 to everything.
    down: bool,
    /// Paths answered with this status instead.
    refuse: HashMap<String, u16>,
    next_id: i64,
    delay_ms: u64,
    /// Every request's path as it arrived (also those whose answer the client gave up on).
    arrived: Vec<String>,
    /// The write-back API switched off (Raptor without trusted issuers): 404 everywhere.
    api_off: bool,
    /// Health checks answered.
    health_checks: usize,
}

#[derive(Clone)]
struct FakeRaptor {
    state: Arc<Mutex<FakeState>>,
    url: url::Url,
    server: actix_web::dev::ServerHandle,
}

async fn answer(req: HttpRequest, body: web::Bytes, state: web::Data<Arc<Mutex<FakeState>>>) -> HttpResponse {
    let claims = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .and_then(|t| t.split('.').nth(1))
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let delay = {
        let mut s = state.lock().expect("lock");
        s.arrived.push(req.path().to_string());
        s.delay_ms
    };
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let mut s = state.lock().expect("lock");
    let path = req.path().to_string();
    if path == queue_platform::writeback::HEALTH && !s.down {
        s.health_checks += 1;
        return if s.api_off {
            HttpResponse::NotFound().json(json!({}))
        } else {
            HttpResponse::Ok().json(json!({"ok": true}))
        };
    }
    let (status, out) = if s.down {
        (503, json!({"error": {"code": "unavailable", "message": "down"}}))
    } else if s.api_off {
        (404, json!({"error": {"code": "not_found", "message": "no such route"}}))
    } else if let Some(code) = s.refuse.get(&path) {
        (*code, json!({"error": {"code": "conflict", "message": "refused by the test"}}))
    } else if req.method() == "POST" && path == PASSKEYS {
        s.next_id += 1;
        (201, json!({"id": 900 + s.next_id}))
    } else if req.method() == "DELETE" {
        (204, Value::Null)
    } else {
        (200, json!({}))
    };
    s.seen.push(Seen {
        method: req.method().to_string(),
        path,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        claims,
        status,
    });
    let mut r = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"));
    if status == 204 { r.finish() } else { r.json(out) }
}

impl FakeRaptor {
    async fn start() -> Self {
        Self::start_on(0).await
    }

    async fn start_on(port: u16) -> Self {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let data = web::Data::new(state.clone());
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = HttpServer::new(move || App::new().app_data(data.clone()).default_service(web::to(answer)))
            .workers(1)
            .listen(listener)
            .expect("listen")
            .run();
        let handle = server.handle();
        tokio::spawn(server);
        let url = url::Url::parse(&format!("http://127.0.0.1:{port}")).expect("url");
        Self { state, url, server: handle }
    }

    fn set(&self, f: impl FnOnce(&mut FakeState)) {
        f(&mut self.state.lock().expect("lock"));
    }

    /// What Raptor accepted (2xx), in arrival order.
    fn accepted(&self) -> Vec<Seen> {
        self.state.lock().expect("lock").seen.iter().filter(|s| s.status < 300).cloned().collect()
    }

    fn all(&self) -> Vec<Seen> {
        self.state.lock().expect("lock").seen.clone()
    }

    async fn stop(&self) {
        self.server.stop(false).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn quick(c: &mut queue_auth::config::AuthConfig, raptor: Option<&url::Url>) {
    c.legacy.writeback_url = raptor.cloned();
    c.legacy.writeback_poll_interval_ms = 100;
    c.legacy.writeback_backoff_initial_ms = 50;
    c.legacy.writeback_backoff_max_ms = 200;
    c.legacy.writeback_timeout_ms = 2000;
}

async fn import(auth: &Auth, path: &str, records: Value) -> Vec<Value> {
    let token = auth.app.token("operator", &["users:import"]);
    let (s, v) = auth.post(path, Some(&token), &json!({"records": records})).await;
    assert_eq!(s, 200, "{v}");
    v["results"].as_array().expect("results").clone()
}

/// Raptor's customer 1, Ada, imported into the default tenant (where email sign-in finds her).
async fn import_ada(auth: &Auth) {
    let r = import(
        auth,
        USERS,
        json!([{"legacy_id": "1", "tenant_id": auth.config.auth.default_tenant, "email": "ada@acme.test",
                "email_verified_at": "2025-03-01T09:00:00Z", "display_name": "Ada", "active": true,
                "created_at": "2025-02-27T16:20:00Z"}]),
    )
    .await;
    assert_eq!(r[0]["outcome"], "created", "{r:?}");
}

fn raptor_token(n: u8) -> String {
    URL_SAFE_NO_PAD.encode([n; 32])
}

/// Imports Raptor session `legacy_id` of Ada; returns its token (Raptor's cookie value).
async fn import_session(auth: &Auth, legacy_id: &str, n: u8) -> String {
    let token = raptor_token(n);
    let now: DateTime<Utc> = auth.clock_now();
    let r = import(
        auth,
        SESSIONS,
        json!([{"legacy_id": legacy_id, "user_legacy_id": "1",
                "token_sha256": URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes())),
                "created_at": now - Duration::hours(1), "expires_at": now + Duration::days(13),
                "last_seen_at": now - Duration::minutes(1), "revoked_at": null, "ip": "203.0.113.7",
                "user_agent": "Raptor"}]),
    )
    .await;
    assert_eq!(r[0]["outcome"], "created", "{r:?}");
    token
}

#[derive(Debug, PartialEq)]
struct RowView {
    kind: String,
    method: String,
    path: String,
}

async fn rows(auth: &Auth) -> Vec<RowView> {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct R {
        #[diesel(sql_type = diesel::sql_types::Text)]
        kind: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        method: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        path: String,
    }
    let mut c = auth.sql().await;
    let r: Vec<R> = diesel::sql_query("SELECT kind, method, path FROM auth.legacy_writeback ORDER BY id")
        .load(&mut c)
        .await
        .expect("rows");
    r.into_iter().map(|r| RowView { kind: r.kind, method: r.method, path: r.path }).collect()
}

fn view(kind: &str, method: &str, path: &str) -> RowView {
    RowView { kind: kind.into(), method: method.into(), path: path.into() }
}

async fn status(auth: &Auth) -> Value {
    let (s, v) = auth.get(STATUS, &auth.app.token("operator", &["users:import"])).await;
    assert_eq!(s, 200, "{v}");
    v["write_back"].clone()
}

/// Waits up to 10 s for `done` about the status's `write_back`.
async fn until(auth: &Auth, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let wb = status(auth).await;
        if done(&wb) {
            return wb;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("write-back: {what} not within 10 s: {}", status(auth).await);
}

fn empty(wb: &Value) -> bool {
    wb["pending"] == 0 && wb["failed"] == 0
}

// ---------------------------------------------------------------------------------------------
// The rows.

#[tokio::test]
async fn each_change_of_a_user_from_raptor_writes_one_row_and_others_none() {
    // Write-back off: rows are recorded and wait.
    let auth = Auth::start_with(|c| quick(c, None)).await;
    import_ada(&auth).await;
    let raptor_session = import_session(&auth, "11", 1).await;
    let other_session = import_session(&auth, "12", 2).await;
    import(
        &auth,
        CODES,
        json!([{"legacy_id": "501", "user_legacy_id": "1", "werkzeug_hash": CODE.1,
                                 "created_at": "2026-11-02T10:00:00Z", "used_at": null}]),
    )
    .await;
    assert_eq!(rows(&auth).await, [], "the import itself writes nothing back");

    // A user from Queue: nothing, whatever they do.
    let (grace, mut grace_key) = auth.signed_in("grace@acme.test").await;
    auth.login("grace@acme.test", &mut grace_key).await;
    let (s, _) = auth.delete("/api/v1/auth/session", &grace).await;
    assert_eq!(s, 204);
    assert_eq!(rows(&auth).await, []);

    // Ada registers a passkey at Queue (her enrollment session is Queue's: not written back).
    let enrollment = auth.enroll("ada@acme.test").await;
    let mut key = SoftPasskey::new(true);
    let first = auth.add_passkey(&enrollment, &mut key, "laptop").await;
    assert_eq!(rows(&auth).await, [view("passkey.create", "POST", PASSKEYS)]);
    // Signing in bumps its counter: one update, waiting for Raptor's id.
    let session = auth.login("ada@acme.test", &mut key).await;
    let rs = rows(&auth).await;
    assert_eq!(rs[1], view("passkey.update", "PATCH", "/internal/queue/v1/passkeys/{legacy_id}"));
    assert_eq!(rs.len(), 2);

    // A second passkey, then the first removed: its delete, and the other sessions revoked —
    // the two imported ones among them written back, Queue's own not.
    let token = auth.login("ada@acme.test", &mut key).await; // step-up for the new passkey
    let mut key2 = SoftPasskey::new(true);
    auth.add_passkey(&token, &mut key2, "phone").await;
    let before = rows(&auth).await.len();
    let (s, v) = auth.delete(&format!("/api/v1/auth/webauthn/credentials/{first}"), &token).await;
    assert_eq!(s, 204, "{v}");
    let rs = rows(&auth).await;
    let new: Vec<&RowView> = rs[before..].iter().collect();
    assert_eq!(new[0], &view("passkey.delete", "DELETE", "/internal/queue/v1/passkeys/{legacy_id}"));
    let mut revoked: Vec<&str> = new[1..].iter().map(|r| r.path.as_str()).collect();
    revoked.sort_unstable();
    assert_eq!(revoked, ["/internal/queue/v1/sessions/11/revoke", "/internal/queue/v1/sessions/12/revoke"]);
    assert!(new[1..].iter().all(|r| r.kind == "session.revoke" && r.method == "POST"));
    let _ = (session, raptor_session, other_session);

    // A refused change writes nothing: removing the last passkey, a wrong code, a second logout.
    let before = rows(&auth).await.len();
    let (_, list) = auth.get("/api/v1/auth/webauthn/credentials", &token).await;
    let last = list["credentials"][0]["id"].as_str().expect("id").to_string();
    let (s, _) = auth.delete(&format!("/api/v1/auth/webauthn/credentials/{last}"), &token).await;
    assert_eq!(s, 409);
    let bad = auth
        .post("/api/v1/auth/backup-codes/redeem", None, &json!({"email": "ada@acme.test", "code": "aaaaa-bbbbb"}))
        .await;
    assert_eq!(bad.0, 401, "{}", bad.1);
    assert_eq!(rows(&auth).await.len(), before);

    // Raptor's backup code redeemed at Queue: used at Raptor; and every session revoked.
    let (s, v) =
        auth.post("/api/v1/auth/backup-codes/redeem", None, &json!({"email": "ada@acme.test", "code": CODE.0})).await;
    assert_eq!(s, 200, "{v}");
    let rs = rows(&auth).await;
    assert_eq!(rs[before], view("backup_code.use", "POST", "/internal/queue/v1/backup-codes/501/use"));
    // The imported sessions were already revoked: nothing more for them.
    assert!(rs[before + 1..].iter().all(|r| r.kind != "session.revoke"), "{rs:?}");

    // Recorded with nowhere to go: the status reports them, per kind, and says write-back is off.
    let wb = status(&auth).await;
    assert_eq!(wb["enabled"], false, "{wb}");
    assert_eq!(wb["pending"], rs.len() as i64, "{wb}");
    assert_eq!(wb["failed"], 0);
    let kinds: Vec<&str> =
        wb["kinds"].as_array().expect("kinds").iter().map(|k| k["kind"].as_str().expect("kind")).collect();
    assert_eq!(kinds, ["backup_code.use", "passkey.create", "passkey.delete", "passkey.update", "session.revoke"]);
    assert!(wb["oldest_pending_age_secs"].as_i64().expect("age") >= 0, "{wb}");
}

#[tokio::test]
async fn signing_out_revokes_the_raptor_session_and_revoke_all_every_imported_one() {
    let auth = Auth::start_with(|c| quick(c, None)).await;
    import_ada(&auth).await;
    let a = import_session(&auth, "21", 3).await;
    let _b = import_session(&auth, "22", 4).await;
    // Sign-out with Raptor's own cookie value, carried over.
    let (s, _) = auth.delete("/api/v1/auth/session", &a).await;
    assert_eq!(s, 204);
    assert_eq!(rows(&auth).await, [view("session.revoke", "POST", "/internal/queue/v1/sessions/21/revoke")]);
    let (s, _) = auth.delete("/api/v1/auth/session", &a).await;
    assert_eq!(s, 401, "signed out already: nothing more");
    let c = import_session(&auth, "23", 5).await;
    let (s, v) = auth.post("/api/v1/auth/sessions/revoke-all", Some(&c), &json!({})).await;
    assert_eq!(s.as_u16() / 100, 2, "{v}");
    let paths: HashSet<String> = rows(&auth).await.into_iter().map(|r| r.path).collect();
    assert_eq!(paths, HashSet::from(["21", "22", "23"].map(|id| format!("/internal/queue/v1/sessions/{id}/revoke"))),);
    // The body carries when.
    let mut conn = auth.sql().await;
    let body: Value = {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct B {
            #[diesel(sql_type = diesel::sql_types::Jsonb)]
            body: Value,
        }
        diesel::sql_query("SELECT body FROM auth.legacy_writeback ORDER BY id LIMIT 1")
            .get_result::<B>(&mut conn)
            .await
            .expect("body")
            .body
    };
    assert_eq!(body["revoked_at"], "2026-11-22T10:00:00Z");
    assert!(body["queue_id"].is_string(), "the Queue session, for Raptor's audit event: {body}");
}

// ---------------------------------------------------------------------------------------------
// The relay.

#[tokio::test]
async fn rows_wait_while_raptor_is_unwell_then_go_once_in_order_with_the_latest_counter() {
    let raptor = FakeRaptor::start().await;
    raptor.set(|s| s.down = true);
    let auth = Auth::start_with(|c| quick(c, Some(&raptor.url))).await;
    import_ada(&auth).await;
    let enrollment = auth.enroll("ada@acme.test").await;
    let mut key = SoftPasskey::new(true);
    let first = auth.add_passkey(&enrollment, &mut key, "laptop").await;
    for _ in 0..3 {
        auth.login("ada@acme.test", &mut key).await;
    }
    let token = auth.login("ada@acme.test", &mut key).await;
    let mut key2 = SoftPasskey::new(true);
    auth.add_passkey(&token, &mut key2, "phone").await;
    let (s, _) = auth.delete(&format!("/api/v1/auth/webauthn/credentials/{first}"), &token).await;
    assert_eq!(s, 204);

    // 503s: the head waits, retried with backoff, its error reported; nothing gets ahead of it.
    let wb = until(&auth, "a retry", |wb| {
        wb["kinds"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k["last_error"].as_str().is_some_and(|e| e.contains("503"))))
    })
    .await;
    assert_eq!(wb["enabled"], true);
    assert_eq!(wb["failed"], 0, "{wb}");
    for _ in 0..100 {
        if raptor.all().len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(raptor.all().len() >= 3, "retried: {:?}", raptor.all());
    assert_eq!(raptor.accepted().len(), 0);

    raptor.set(|s| s.down = false);
    until(&auth, "the backlog delivered", empty).await;
    let got = raptor.accepted();
    let summary: Vec<(String, String)> = got.iter().map(|s| (s.method.clone(), s.path.clone())).collect();
    // Raptor numbers the creates as they arrive (901, 902): the laptop's is its id.
    let posts: Vec<&Seen> = got.iter().filter(|s| s.method == "POST").collect();
    assert_eq!(posts.len(), 2, "{summary:?}");
    let laptop = 901 + posts.iter().position(|s| s.body["name"] == "laptop").expect("laptop") as i64;
    let phone = if laptop == 901 { 902 } else { 901 };
    let created = format!("{PASSKEYS}/{laptop}");
    // The laptop's passkey: created, one update (the latest counter), deleted, in that order.
    let pos = |m: &str, p: &str| summary.iter().position(|(a, b)| a == m && b == p).expect("sent");
    let create_at = got.iter().position(|s| s.method == "POST" && s.body["name"] == "laptop").expect("create");
    assert!(create_at < pos("PATCH", &created), "{summary:?}");
    assert!(pos("PATCH", &created) < pos("DELETE", &created), "{summary:?}");
    assert_eq!(summary.iter().filter(|(m, _)| m == "PATCH").count(), 1, "coalesced: {summary:?}");
    let patch = got.iter().find(|s| s.method == "PATCH").expect("patch");
    assert_eq!(patch.body["sign_count"], 4, "the latest counter: {:?}", patch.body);
    assert_eq!(patch.body["last_used_at"], "2026-11-22T10:00:00Z");

    // The create: what py_webauthn stores, for the right customer, under Raptor's user handle
    // rule (Ada had no passkey at Raptor: her Queue user id).
    let create = &got[create_at];
    let b = &create.body;
    assert_eq!(b["customer_id"], 1);
    assert_eq!((b["device_type"].as_str(), b["backed_up"].as_bool()), (Some("single_device"), Some(false)));
    assert_eq!(b["user_verified"], true);
    assert_eq!(b["name"], "laptop");
    assert_eq!(b["created_at"], "2026-11-22T10:00:00Z");
    let cose = URL_SAFE_NO_PAD.decode(b["public_key"].as_str().expect("key")).expect("b64");
    let cbor: serde_cbor_2::Value = serde_cbor_2::from_slice(&cose).expect("cbor");
    webauthn_rs::prelude::COSEKey::try_from(&cbor).expect("a COSE key Raptor can read");
    assert_eq!(URL_SAFE_NO_PAD.decode(b["user_handle"].as_str().expect("handle")).expect("b64").len(), 16);
    let keys: HashSet<&str> = b.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        HashSet::from([
            "customer_id",
            "credential_id",
            "public_key",
            "sign_count",
            "aaguid",
            "device_type",
            "backed_up",
            "user_verified",
            "transports",
            "user_handle",
            "name",
            "created_at",
            "queue_id",
        ])
    );
    // Each request a fresh token of auth for Raptor, scoped to write-back.
    let mut jtis = HashSet::new();
    for s in raptor.all() {
        assert_eq!(
            (s.claims["iss"].as_str(), s.claims["aud"].as_str()),
            (Some("auth"), Some("raptor")),
            "{:?}",
            s.claims
        );
        assert_eq!(s.claims["scope"], json!(["raptor:writeback"]), "{:?}", s.claims);
        assert!(jtis.insert(s.claims["jti"].as_str().expect("jti").to_string()), "a token used twice");
    }

    // Raptor's id is stored: the second passkey is linked, with what Raptor holds of it; rows
    // are marked delivered, once.
    assert_eq!(auth.scalar(&format!("SELECT count(*) AS n FROM auth.passkeys WHERE legacy_id = '{phone}'")).await, 1);
    assert_eq!(
        auth.scalar(&format!("SELECT count(*) AS n FROM auth.passkeys WHERE legacy_source->>'legacy_id' = '{phone}' AND legacy_source->>'user_legacy_id' = '1' AND legacy_source->>'name' = 'phone'")).await,
        1
    );
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.legacy_writeback WHERE superseded_by IS NOT NULL").await, 3);
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.legacy_writeback WHERE delivered_at IS NULL").await, 0);
    let metrics = auth.app.get("/metrics").await.text().await.expect("metrics");
    for line in [
        r#"queue_legacy_writeback_total{kind="passkey.create",outcome="delivered""#,
        r#"queue_legacy_writeback_total{kind="passkey.update",outcome="superseded""#,
        r#"queue_legacy_writeback_total{kind="passkey.create",outcome="retry""#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    // Later changes go at once, by Raptor's id.
    auth.login("ada@acme.test", &mut key2).await;
    until(&auth, "the update", empty).await;
    let phone_path = format!("{PASSKEYS}/{phone}");
    assert!(raptor.accepted().iter().any(|s| s.method == "PATCH" && s.path == phone_path), "{:?}", raptor.accepted());
    // What Raptor holds of it, remembered: the counter the next import will compare with.
    assert_eq!(
        auth.scalar(&format!(
            "SELECT (legacy_source->>'sign_count')::bigint AS n FROM auth.passkeys WHERE legacy_id = '{phone}'"
        ))
        .await,
        1
    );
    raptor.stop().await;
}

#[tokio::test]
async fn a_refusal_is_kept_as_failed_and_reported_and_does_not_block_the_rest() {
    let raptor = FakeRaptor::start().await;
    raptor.set(|s| {
        s.refuse.insert("/internal/queue/v1/sessions/31/revoke".into(), 404);
        s.refuse.insert("/internal/queue/v1/sessions/32/revoke".into(), 429);
    });
    let auth = Auth::start_with(|c| quick(c, Some(&raptor.url))).await;
    import_ada(&auth).await;
    let a = import_session(&auth, "31", 6).await;
    let b = import_session(&auth, "32", 7).await;
    let c = import_session(&auth, "33", 8).await;
    for t in [&a, &b, &c] {
        let (s, _) = auth.delete("/api/v1/auth/session", t).await;
        assert_eq!(s, 204);
    }
    // 404: failed for good, with Raptor's answer; 429: retried (pending); 33 went.
    let wb = until(&auth, "the refusal", |wb| wb["failed"] == 1).await;
    for _ in 0..100 {
        if raptor.accepted().iter().any(|s| s.path.contains("/33/")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(raptor.accepted().iter().any(|s| s.path.contains("/33/")), "the rest went");
    let kind = &wb["kinds"][0];
    assert_eq!(kind["kind"], "session.revoke");
    assert!(
        kind["last_error"].as_str().is_some_and(|e| e.contains("404") && e.contains("/sessions/31/revoke")),
        "{wb}"
    );
    let wb = until(&auth, "the 429 retried", |wb| wb["pending"] == 1).await;
    assert_eq!(wb["pending"], 1, "{wb}");
    let retries = raptor.all().iter().filter(|s| s.path.contains("/32/")).count();
    assert!(retries >= 1);
    assert_eq!(
        auth.scalar(
            "SELECT count(*) AS n FROM auth.legacy_writeback WHERE failed_at IS NOT NULL AND path LIKE '%/31/%'"
        )
        .await,
        1
    );
    // Raptor takes it now: delivered; the failed one stays visible.
    raptor.set(|s| {
        s.refuse.remove("/internal/queue/v1/sessions/32/revoke");
    });
    let wb = until(&auth, "the 429 delivered", |wb| wb["pending"] == 0).await;
    assert_eq!(wb["failed"], 1, "{wb}");
    raptor.stop().await;
}

#[tokio::test]
async fn raptor_down_then_up_rows_wait_then_go_once() {
    let port = queue_testkit::process::free_port();
    let url = url::Url::parse(&format!("http://127.0.0.1:{port}")).expect("url");
    let auth = Auth::start_with(|c| quick(c, Some(&url))).await;
    import_ada(&auth).await;
    let a = import_session(&auth, "41", 9).await;
    let (s, _) = auth.delete("/api/v1/auth/session", &a).await;
    assert_eq!(s, 204);
    let wb = until(&auth, "a connect error", |wb| wb["kinds"][0]["last_error"].is_string()).await;
    assert_eq!((wb["pending"].as_i64(), wb["failed"].as_i64()), (Some(1), Some(0)), "{wb}");
    let raptor = FakeRaptor::start_on(port).await;
    until(&auth, "delivery", empty).await;
    let got = raptor.accepted();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].path, "/internal/queue/v1/sessions/41/revoke");
    assert!(auth.scalar("SELECT attempts::bigint AS n FROM auth.legacy_writeback").await >= 2);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(raptor.all().len(), 1, "sent once");
    raptor.stop().await;
}

#[tokio::test]
async fn two_relays_on_one_table_never_send_a_row_twice_nor_out_of_order() {
    let raptor = FakeRaptor::start().await;
    raptor.set(|s| s.delay_ms = 5);
    let auth = Auth::start_with(|c| quick(c, None)).await;
    let db = queue_platform::db::Db::new(&auth.config.database).expect("db");
    {
        let mut conn = auth.sql().await;
        for i in 0..40 {
            // Twenty records, each a create then an update that needs the create's id.
            let key = format!("passkey:{}", i % 20);
            let change = if i < 20 {
                Change::new("passkey.create", "POST", PASSKEYS.into(), key)
            } else {
                Change::new("passkey.update", "PATCH", format!("{PASSKEYS}/{{legacy_id}}"), key)
            };
            let change = change.body(json!({"n": i}));
            queue_platform::writeback::enqueue(&mut conn, "auth.legacy_writeback", &change).await.expect("enqueue");
        }
    }
    let minter = Arc::new(queue_testkit::TestKeys::new().minter("auth"));
    let settings = RelaySettings { batch: 7, ..RelaySettings::default() };
    let relay = || {
        WritebackRelay::new(
            db.clone(),
            "auth.legacy_writeback",
            &raptor.url,
            queue_platform::http_client::HttpClient::new(),
            minter.clone(),
            &[],
            settings.clone(),
            None,
        )
    };
    let (one, two) = (relay(), relay());
    let mut rounds = 0;
    loop {
        let (a, b) = tokio::join!(one.round(), two.round());
        let (a, b) = (a.expect("round"), b.expect("round"));
        rounds += 1;
        if a.delivered + b.delivered == 0 || rounds > 50 {
            break;
        }
    }
    let got = raptor.accepted();
    assert_eq!(got.len(), 40, "every row once: {}", got.len());
    let mut seen = HashSet::new();
    for s in &got {
        assert!(seen.insert(s.body["n"].as_i64().expect("n")), "row {} sent twice", s.body["n"]);
    }
    // Each record's update after its create, and by the id the create got.
    for i in 0..20 {
        let create = got.iter().position(|s| s.body["n"] == i).expect("create");
        let update = got.iter().position(|s| s.body["n"] == i + 20).expect("update");
        assert!(create < update, "record {i}: update before create");
        assert!(got[update].path.starts_with(&format!("{PASSKEYS}/9")), "{}", got[update].path);
    }
    raptor.stop().await;
}

#[tokio::test]
async fn an_answer_that_does_not_come_in_time_is_sent_again_and_counted_once() {
    // Raptor applies the call but answers after the relay's timeout: a lost answer. The row is
    // sent again (Raptor's endpoints are idempotent, so the second call changes nothing there)
    // and marked delivered once.
    let raptor = FakeRaptor::start().await;
    raptor.set(|s| s.delay_ms = 1500);
    let auth = Auth::start_with(|c| {
        quick(c, Some(&raptor.url));
        c.legacy.writeback_timeout_ms = 300;
    })
    .await;
    import_ada(&auth).await;
    let a = import_session(&auth, "51", 10).await;
    let (s, _) = auth.delete("/api/v1/auth/session", &a).await;
    assert_eq!(s, 204);
    let wb = until(&auth, "a timeout", |wb| {
        wb["kinds"][0]["last_error"].as_str().is_some_and(|e| e.contains("/sessions/51/revoke"))
    })
    .await;
    assert_eq!((wb["pending"].as_i64(), wb["failed"].as_i64()), (Some(1), Some(0)), "a timeout is retried: {wb}");
    raptor.set(|s| s.delay_ms = 0);
    until(&auth, "delivery", empty).await;
    let sent = raptor.state.lock().expect("lock").arrived.iter().filter(|p| p.contains("/sessions/51/")).count();
    assert!(sent >= 2, "sent again after the lost answer: {sent}");
    assert_eq!(
        auth.scalar("SELECT count(*) AS n FROM auth.legacy_writeback WHERE delivered_at IS NOT NULL AND attempts >= 2")
            .await,
        1
    );
    raptor.stop().await;
}

#[tokio::test]
async fn with_raptors_write_back_api_off_rows_wait_instead_of_failing() {
    // Raptor without trusted issuers answers 404 everywhere under /internal/queue/v1/, health too:
    // that is no verdict on the rows, which wait until the API is on.
    let raptor = FakeRaptor::start().await;
    raptor.set(|s| s.api_off = true);
    let auth = Auth::start_with(|c| quick(c, Some(&raptor.url))).await;
    import_ada(&auth).await;
    let a = import_session(&auth, "61", 11).await;
    let (s, _) = auth.delete("/api/v1/auth/session", &a).await;
    assert_eq!(s, 204);
    let wb = until(&auth, "the API found off", |wb| {
        wb["kinds"][0]["last_error"].as_str().is_some_and(|e| e.contains("health") && e.contains("auth"))
    })
    .await;
    assert_eq!((wb["pending"].as_i64(), wb["failed"].as_i64()), (Some(1), Some(0)), "{wb}");
    raptor.set(|s| s.api_off = false);
    until(&auth, "delivery", empty).await;
    assert_eq!(raptor.accepted().len(), 1);
    raptor.stop().await;
}
