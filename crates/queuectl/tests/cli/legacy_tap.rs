//! The real import endpoints for `queuectl legacy import`'s tests, and a recording tap in front
//! of each: auth (its own database, its audit events waiting in its outbox) and rbac (its own
//! database, a real audit behind it for its pre-write rule) run in this process through their
//! real `run`, trusting the test identities (the operator among them, an importer by default).
//! queuectl talks to a [`Tap`], a small server that records each request as it arrived (path,
//! token claims, raw body) and forwards it unchanged, headers and body, to the real service,
//! then records and returns the real answer. The tests inspect what crossed the wire; what the
//! services kept is read from their tables ([`Services::stored`]).

use crate::api_conformance::rbac_and_audit;
use crate::legacy_fixtures::auth;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use diesel_async::RunQueryDsl;
use queue_testkit::{TestApp, TestKeys};
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// One request as it arrived at the tap, and the service's answer to it.
#[derive(Clone, Debug)]
pub struct Received {
    /// The last path segment (`users`, `grants`, …).
    pub kind: String,
    /// The bearer token's claims (unverified here: the service verifies).
    pub claims: Value,
    pub raw: String,
    pub body: Value,
    pub status: u16,
    pub answer: Value,
}

/// A recording proxy in front of one real service.
pub struct Tap {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    handle: actix_web::dev::ServerHandle,
}

impl Tap {
    /// Listens on 127.0.0.1:0 and forwards every request to `target` (`http://host:port`).
    pub fn start(target: String) -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let shared = received.clone();
        let client = reqwest::Client::new();
        let server = HttpServer::new(move || {
            let (received, client, target) = (shared.clone(), client.clone(), target.clone());
            App::new().app_data(web::PayloadConfig::new(64 * 1024 * 1024)).default_service(web::to(
                move |req: HttpRequest, raw: web::Bytes| {
                    let (received, client, target) = (received.clone(), client.clone(), target.clone());
                    async move { forward(&received, &client, &target, &req, raw).await }
                },
            ))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind");
        let url = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { url, received, handle }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    pub fn forget_received(&self) {
        self.received.lock().expect("lock").clear();
    }

    /// The Queue id the service answered for this record of `kind` (the latest answer with one).
    pub fn id_of(&self, kind: &str, legacy_id: &str) -> String {
        let received = self.received.lock().expect("lock");
        received
            .iter()
            .rev()
            .filter(|r| r.kind == kind)
            .flat_map(|r| r.answer["results"].as_array().cloned().unwrap_or_default())
            .find(|a| a["legacy_id"] == legacy_id && a["id"].is_string())
            .and_then(|a| a["id"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("the service gave {kind} {legacy_id} no id"))
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

/// Forwards one request as it came (method, path and query, headers, body) and answers with
/// what the service answered; both recorded.
async fn forward(
    received: &Mutex<Vec<Received>>,
    client: &reqwest::Client,
    target: &str,
    req: &HttpRequest,
    raw: web::Bytes,
) -> HttpResponse {
    let url = format!("{target}{}", req.uri().path_and_query().map_or("/", |p| p.as_str()));
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).expect("method");
    let mut out = client.request(method, &url).body(raw.to_vec());
    for (name, value) in req.headers() {
        if !matches!(name.as_str(), "host" | "content-length" | "connection") {
            out = out.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = out.send().await.expect("the service answers");
    let status = answer.status().as_u16();
    let content_type = answer.headers().get("content-type").map(|v| v.as_bytes().to_vec());
    let bytes = answer.bytes().await.expect("the answer's body");
    let text = String::from_utf8_lossy(&raw).into_owned();
    received.lock().expect("lock").push(Received {
        kind: req.path().rsplit('/').next().unwrap_or_default().to_string(),
        claims: claims(req),
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        raw: text,
        status,
        answer: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    });
    let mut reply = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"));
    if let Some(ct) = content_type {
        reply.insert_header(("content-type", ct));
    }
    reply.body(bytes)
}

fn claims(req: &HttpRequest) -> Value {
    let token = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let payload = token.trim_start_matches("Bearer ").split('.').nth(1).unwrap_or("");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// Auth, rbac and the audit behind rbac, one test database each, sharing `keys`.
pub struct Services {
    pub auth: TestApp,
    pub rbac: TestApp,
    pub audit: TestApp,
    _dir: tempfile::TempDir,
}

impl Services {
    pub async fn start(keys: &TestKeys) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let (rbac, audit) = rbac_and_audit(keys, dir.path()).await;
        let auth = auth(keys, dir.path()).await;
        Self { auth, rbac, audit, _dir: dir }
    }

    /// How many records of `kind` the real service keeps with a legacy id.
    pub async fn stored(&self, kind: &str) -> i64 {
        let (app, table) = match kind {
            "users" => (&self.auth, "auth.users"),
            "sessions" => (&self.auth, "auth.queue_sessions"),
            "backup-codes" => (&self.auth, "auth.queue_backup_codes"),
            "passkeys" => (&self.auth, "auth.passkeys"),
            "roles" => (&self.rbac, "rbac.rbac_roles"),
            "grants" => (&self.rbac, "rbac.rbac_grants"),
            other => panic!("no such kind {other}"),
        };
        self.count(app, &format!("SELECT count(*) FROM {table} WHERE legacy_id IS NOT NULL")).await
    }

    /// The one number `query` selects on `app`'s database.
    pub async fn count(&self, app: &TestApp, query: &str) -> i64 {
        let mut conn = app.db.conn().await;
        diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!("({query})")))
            .get_result(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    pub async fn stop(&self) {
        self.auth.stop().await;
        self.rbac.stop().await;
        self.audit.stop().await;
    }
}
