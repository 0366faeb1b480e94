//! A stand-in for one service's import endpoints (`POST /internal/v1/import/<kind>`, BRIEF-19's
//! JSON), for `queuectl legacy import`'s tests while auth's and rbac's real endpoints are built
//! beside it: it records every request as it arrived (path, token claims, raw body) and answers
//! by legacy id — `created` with a new id, `unchanged` for the same record, `updated` naming the
//! changed fields; a dry run computes the same and keeps nothing (and gives a created record no
//! id); a record naming a user or role not kept is refused (as the real services refuse it);
//! the legacy ids in `refuse` are refused. The lead replaces it with the real services at
//! the merge: nothing else in the tests knows it is a stand-in.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Received {
    pub kind: String,
    /// The bearer token's claims (unverified: the real services verify).
    pub claims: Value,
    pub raw: String,
    pub body: Value,
}

#[derive(Default)]
struct State {
    /// (kind, legacy id) → (record, id).
    stored: HashMap<(String, String), (Value, String)>,
    received: Vec<Received>,
    refuse: HashMap<(String, String), String>,
}

pub struct Standin {
    pub url: String,
    state: Arc<Mutex<State>>,
    handle: actix_web::dev::ServerHandle,
}

impl Standin {
    /// The endpoints of `service` ("auth" or "rbac") for `kinds`, accepting tokens from `importer`.
    pub fn start(service: &'static str, kinds: &'static [&'static str], importer: &'static str) -> Self {
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        let server = HttpServer::new(move || {
            let state = shared.clone();
            App::new().route(
                "/internal/v1/import/{kind}",
                web::post().to(move |req: HttpRequest, kind: web::Path<String>, raw: String| {
                    let state = state.clone();
                    async move { answer(&state, service, kinds, importer, &req, kind.into_inner(), raw) }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind");
        let url = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { url, state, handle }
    }

    /// Refuse this record of `kind` with `reason` from now on.
    pub fn refuse(&self, kind: &str, legacy_id: &str, reason: &str) {
        self.state.lock().expect("lock").refuse.insert((kind.into(), legacy_id.into()), reason.into());
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("lock").received.clone()
    }

    pub fn forget_received(&self) {
        self.state.lock().expect("lock").received.clear();
    }

    /// How many records of `kind` are kept (what a real service would have written).
    pub fn stored(&self, kind: &str) -> usize {
        self.state.lock().expect("lock").stored.keys().filter(|(k, _)| k == kind).count()
    }

    /// The id a kept record was given.
    pub fn id_of(&self, kind: &str, legacy_id: &str) -> String {
        let st = self.state.lock().expect("lock");
        st.stored.get(&(kind.to_string(), legacy_id.to_string())).map(|(_, id)| id.clone()).expect("kept")
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

fn error(status: actix_web::http::StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": {"code": code, "message": message}}))
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

fn answer(
    state: &Mutex<State>,
    service: &str,
    kinds: &[&str],
    importer: &str,
    req: &HttpRequest,
    kind: String,
    raw: String,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    if !kinds.contains(&kind.as_str()) {
        return error(StatusCode::NOT_FOUND, "not_found", "no such import");
    }
    let claims = claims(req);
    let scope = format!("{}:import", if service == "auth" { "users" } else { "rbac" });
    if claims["iss"] != importer || claims["aud"] != service || claims["scope"] != json!([scope]) {
        return error(StatusCode::FORBIDDEN, "forbidden", &format!("{} is not an importer here", claims["iss"]));
    }
    let body: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    let mut st = state.lock().expect("lock");
    st.received.push(Received { kind: kind.clone(), claims, raw, body: body.clone() });
    let (Some(records), Some(dry_run)) = (body["records"].as_array(), body["dry_run"].as_bool()) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "records and dry_run are required");
    };
    if records.is_empty() || records.len() > 1000 {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "records: 1..=1000");
    }
    let results: Vec<Value> = records.iter().map(|r| one(&mut st, &kind, r, dry_run)).collect();
    HttpResponse::Ok().json(json!({ "results": results }))
}

fn one(st: &mut State, kind: &str, record: &Value, dry_run: bool) -> Value {
    let legacy_id = record["legacy_id"].as_str().unwrap_or("").to_string();
    let key = (kind.to_string(), legacy_id.clone());
    if let Some(reason) = st.refuse.get(&key) {
        return json!({"legacy_id": legacy_id, "outcome": "refused", "reason": reason});
    }
    if let Some(why) = missing_owner(st, kind, record) {
        return json!({"legacy_id": legacy_id, "outcome": "refused", "reason": why});
    }
    match st.stored.get(&key).cloned() {
        Some((before, id)) if &before == record => json!({"legacy_id": legacy_id, "outcome": "unchanged", "id": id}),
        Some((before, id)) => {
            let fields = record.as_object().into_iter().flatten().filter(|(k, v)| &before[k.as_str()] != *v);
            let changed: Vec<&str> = fields.map(|(k, _)| k.as_str()).collect();
            if !dry_run {
                st.stored.insert(key, (record.clone(), id.clone()));
            }
            json!({"legacy_id": legacy_id, "outcome": "updated", "id": id, "reason": changed.join(", ")})
        }
        None if dry_run => json!({"legacy_id": legacy_id, "outcome": "created"}),
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            st.stored.insert(key, (record.clone(), id.clone()));
            json!({"legacy_id": legacy_id, "outcome": "created", "id": id})
        }
    }
}

/// What a record names that is not kept: its user (auth's kinds) or its role (grants).
fn missing_owner(st: &State, kind: &str, record: &Value) -> Option<String> {
    match kind {
        "sessions" | "backup-codes" | "passkeys" => {
            let user = record["user_legacy_id"].as_str().unwrap_or("");
            let known = st.stored.contains_key(&("users".to_string(), user.to_string()));
            (!known).then(|| format!("no Queue user has legacy id {user} (import the users first)"))
        }
        "grants" => {
            let known = st.stored.iter().any(|((k, _), (role, _))| {
                k == "roles" && role["name"] == record["role"] && role["tenant_id"] == record["role_tenant_id"]
            });
            (!known).then(|| format!("no role {} where the grant names it", record["role"]))
        }
        _ => None,
    }
}
