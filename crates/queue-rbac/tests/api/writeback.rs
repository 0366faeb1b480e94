//! Issue 19, item 3: grants made at Queue for Raptor's users written back to Raptor. Against the
//! real audit service and a small recording peer on loopback standing in for Raptor's
//! `/internal/queue/v1/`: which changes write a row (in the change's transaction: a change that
//! fails writes none), what is sent (service token, body), Raptor's id linked to the grant through
//! the pre-writer (reconcile sees nothing unaudited), the revoke after the create, rows that wait
//! without a URL, a refusal that fails for good and stays visible, the backlog in the status, and
//! the principals import (idempotent, conflicts refused, importers only).

use crate::support::{World, spawn_rbac, tenant};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine;
use chrono::{Duration, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const TENANT: &str = "6f1c2d4e-8a3b-4c5d-9e6f-7a8b9c0d1e2f";
const STATUS: &str = "/internal/v1/import/status";
const ADA: &str = "0b7e6a52-3c1d-4f8e-9a2b-5c6d7e8f9a01";
const GRACE: &str = "1c8f7b63-4d2e-4a9f-8b3c-6d7e8f9a0b12";
const NATIVE: &str = "2d9a8c74-5e3f-4b0a-9c4d-7e8f9a0b1c23";

/// One request the peer received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    bearer: String,
    body: Value,
}

/// Raptor's write-back API as a recording peer: answers creates `201 {"id": 901}`, then 902, …
/// (or `status` when set to something else), everything else 200.
struct Peer {
    url: url::Url,
    seen: Arc<Mutex<Vec<Seen>>>,
    status: Arc<AtomicU16>,
    handle: actix_web::dev::ServerHandle,
}

async fn record(
    req: HttpRequest,
    body: web::Bytes,
    seen: web::Data<Mutex<Vec<Seen>>>,
    status: web::Data<AtomicU16>,
    next_id: web::Data<AtomicU64>,
) -> HttpResponse {
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    seen.lock().expect("lock").push(Seen {
        method: req.method().to_string(),
        path: req.path().to_string(),
        bearer,
        body,
    });
    let code = status.load(Ordering::SeqCst);
    if code != 200 {
        let s = actix_web::http::StatusCode::from_u16(code).expect("status");
        return HttpResponse::build(s)
            .json(json!({"error": {"code": "invalid_request", "message": "refused by the test peer"}}));
    }
    if req.path() == "/internal/queue/v1/grants" {
        HttpResponse::Created().json(json!({"id": next_id.fetch_add(1, Ordering::SeqCst)}))
    } else {
        HttpResponse::Ok().json(json!({"id": 901, "revoked_at": "2026-01-01T00:00:00Z"}))
    }
}

impl Peer {
    fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(200));
        let (s, st) = (web::Data::from(seen.clone()), web::Data::from(status.clone()));
        let ids = web::Data::new(AtomicU64::new(901));
        let server = HttpServer::new(move || {
            App::new().app_data(s.clone()).app_data(st.clone()).app_data(ids.clone()).default_service(web::to(record))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .expect("bind");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { url: url::Url::parse(&format!("http://{addr}/")).expect("url"), seen, status, handle }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// Waits until the peer received `n` requests.
    async fn received(&self, n: usize) -> Vec<Seen> {
        for _ in 0..100 {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the peer received {:?}, not {n} requests", self.seen());
    }
}

fn importer(w: &World) -> String {
    w.keys.token("operator", "rbac", &["rbac:import"])
}

async fn import(w: &World, kind: &str, records: Value) -> Vec<Value> {
    let body = json!({"records": records});
    let (s, v) = w.rbac.post_json_as(&format!("/internal/v1/import/{kind}"), &importer(w), &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["results"].as_array().expect("results").clone()
}

fn outcomes(results: &[Value]) -> Vec<&str> {
    results.iter().map(|r| r["outcome"].as_str().unwrap_or("?")).collect()
}

/// Raptor's tenant role `triage` (id 3) and Ada (customer 11) and Grace (12) as Raptor's users.
async fn raptor_people(w: &World) {
    let at = (Utc::now() - Duration::days(300)).to_rfc3339_opts(SecondsFormat::Micros, true);
    let roles = import(
        w,
        "roles",
        json!([{"legacy_id": "3", "tenant_id": TENANT, "name": "triage", "description": "first line",
                "permissions": ["ticket.read", "ticket.write"], "created_at": at}]),
    )
    .await;
    assert_eq!(outcomes(&roles), vec!["created"], "{roles:?}");
    let pairs = json!([{"legacy_id": "11", "principal_id": ADA}, {"legacy_id": "12", "principal_id": GRACE}]);
    assert_eq!(outcomes(&import(w, "principals", pairs.clone()).await), vec!["created", "created"]);
    assert_eq!(outcomes(&import(w, "principals", pairs).await), vec!["unchanged", "unchanged"], "idempotent");
}

async fn rows(w: &World, grant: &str) -> Vec<(String, String, Option<String>)> {
    #[derive(diesel::QueryableByName)]
    struct R {
        #[diesel(sql_type = diesel::sql_types::Text)]
        kind: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        path: String,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        state: Option<String>,
    }
    use diesel_async::RunQueryDsl;
    let found: Vec<R> = diesel::sql_query(
        "SELECT kind, path, CASE WHEN failed_at IS NOT NULL THEN 'failed' WHEN delivered_at IS NOT NULL \
         THEN 'delivered' END AS state FROM rbac.legacy_writeback WHERE subject::text = $1 OR path LIKE '%' || $1 || '%' \
         ORDER BY id",
    )
    .bind::<diesel::sql_types::Text, _>(grant)
    .load(&mut w.sql().await)
    .await
    .expect("rows");
    found.into_iter().map(|r| (r.kind, r.path, r.state)).collect()
}

async fn write_back(w: &World) -> Value {
    let (s, v) = w.rbac.get_json_as(STATUS, &importer(w)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["write_back"].clone()
}

async fn legacy_id_of(w: &World, grant: &str) -> Option<String> {
    for _ in 0..100 {
        let (s, v) = w.rbac.get_json_as(&format!("/api/v1/rbac/grants?principal_id={ADA}"), &w.admin()).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let linked = w
            .scalar(&format!("SELECT count(*) AS n FROM rbac.rbac_grants WHERE id = '{grant}' AND legacy_id = '901'"))
            .await;
        if linked == 1 {
            return Some("901".into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    None
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url");
    serde_json::from_slice(&bytes).expect("claims")
}

async fn revoke(w: &World, id: &str) {
    let (s, v) = w.revoke_on(&w.rbac, id).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_grant_for_a_raptor_user_goes_to_raptor_gets_its_id_and_its_revoke_follows() {
    let peer = Peer::start();
    let url = peer.url.clone();
    let w = World::start_with(move |c| {
        c.legacy.writeback_url = Some(url);
        c.legacy.writeback_poll_interval_ms = 200;
    })
    .await;
    raptor_people(&w).await;

    // A grant of Raptor's role to Raptor's user: one create row, sent with a service token.
    let g = w.grant(ADA, "triage", tenant(TENANT), Some("2031-01-01T00:00:00Z")).await;
    let id = g["grant"]["id"].as_str().expect("id").to_string();
    let seen = peer.received(1).await;
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("POST", "/internal/queue/v1/grants"));
    let granted_at: chrono::DateTime<Utc> = g["grant"]["granted_at"].as_str().expect("t").parse().expect("time");
    let sent_at: chrono::DateTime<Utc> = seen[0].body["granted_at"].as_str().expect("t").parse().expect("time");
    assert_eq!(sent_at, granted_at, "Queue's time, to the microsecond");
    assert_eq!(
        seen[0].body,
        json!({"customer_id": 11, "role_id": 3, "scope_type": "tenant", "tenant_id": TENANT, "ticket_id": null,
               "granted_by": null, "granted_at": seen[0].body["granted_at"], "expires_at": "2031-01-01T00:00:00Z",
               "reason": "test", "queue_id": id}),
        "a service granted: no customer at Raptor"
    );
    let c = claims(&seen[0].bearer);
    assert_eq!((c["iss"].as_str(), c["aud"].as_str()), (Some("rbac"), Some("raptor")), "{c}");
    assert_eq!(c["scope"], json!(["raptor:writeback"]), "{c}");

    // Raptor's id lands on the grant through the pre-writer: audited, nothing for reconcile.
    assert_eq!(legacy_id_of(&w, &id).await.as_deref(), Some("901"));
    let linked = w.audit_events("_platform").await;
    assert!(linked.iter().any(|e| e["action"] == "rbac.legacy.grant.linked" && e["target"]["id"] == id), "{linked:?}");
    let (s, r) = w.rbac.get_json_as("/api/v1/rbac/reconcile", &w.admin()).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["unaudited"], json!([]), "{r}");

    // Not written back: a Queue user's grant, a built-in role (no Raptor id), Queue's own.
    let native = w.grant(NATIVE, "triage", tenant(TENANT), None).await;
    let viewer = w.grant(GRACE, "viewer", tenant(TENANT), None).await;
    for g in [&native, &viewer] {
        assert_eq!(rows(&w, g["grant"]["id"].as_str().expect("id")).await, vec![], "{g}");
    }

    // Once Raptor's built-in is linked by an import, a grant of it is written back too.
    let at = (Utc::now() - Duration::days(300)).to_rfc3339_opts(SecondsFormat::Micros, true);
    let viewer_at_raptor = json!([{"legacy_id": "1", "tenant_id": null, "name": "viewer", "description": "reads",
                                   "permissions": ["ticket.read"], "created_at": at}]);
    assert_eq!(outcomes(&import(&w, "roles", viewer_at_raptor.clone()).await), vec!["updated"]);
    assert_eq!(outcomes(&import(&w, "roles", viewer_at_raptor).await), vec!["unchanged"]);
    let builtin = w.grant(GRACE, "viewer", tenant(TENANT), None).await;
    let seen = peer.received(2).await;
    assert_eq!(seen[1].body["role_id"], 1, "Raptor's built-in viewer: {:?}", seen[1]);
    assert_eq!(seen[1].body["customer_id"], 12);
    assert_eq!(seen[1].body["queue_id"], builtin["grant"]["id"]);

    // The revoke goes to Raptor's row, after the create.
    revoke(&w, &id).await;
    let seen = peer.received(3).await;
    assert_eq!((seen[2].method.as_str(), seen[2].path.as_str()), ("POST", "/internal/queue/v1/grants/901/revoke"));
    assert_eq!(seen[2].body["revoked_by"], Value::Null);
    assert!(seen[2].body["revoked_at"].is_string(), "{:?}", seen[2]);
    assert_ne!(claims(&seen[2].bearer)["jti"], claims(&seen[0].bearer)["jti"], "a fresh token per request");
    revoke_again_is_no_new_row(&w, &id).await;
    let wb = write_back(&w).await;
    assert_eq!(
        (wb["enabled"].as_bool(), wb["pending"].as_i64(), wb["failed"].as_i64()),
        (Some(true), Some(0), Some(0))
    );
    assert_eq!(wb["kinds"], json!([]), "{wb}");

    // The audit service down: the grant is refused (503) and no row is written with it.
    let before = w.scalar("SELECT count(*) AS n FROM rbac.legacy_writeback").await;
    w.audit.stop().await;
    let body = json!({"principal_id": ADA, "role": "triage", "scope": tenant(TENANT), "reason": "audit down"});
    let (s, v) = w.rbac.post_json_as("/api/v1/rbac/grants", &w.admin(), &body).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(w.scalar("SELECT count(*) AS n FROM rbac.legacy_writeback").await, before, "no grant, no row");
    peer.handle.stop(false).await;
}

/// A second revoke is refused (409) and writes nothing more.
async fn revoke_again_is_no_new_row(w: &World, id: &str) {
    let n = rows(w, id).await.len();
    let (s, _) = w.revoke_on(&w.rbac, id).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(rows(w, id).await.len(), n);
}

#[tokio::test]
async fn without_a_url_rows_wait_and_a_refusal_fails_for_good_and_stays_visible() {
    let w = World::start().await;
    raptor_people(&w).await;

    // No writeback_url: the rows are recorded and wait; the revoke waits for Raptor's id.
    let g = w.grant(ADA, "triage", tenant(TENANT), None).await;
    let id = g["grant"]["id"].as_str().expect("id").to_string();
    revoke(&w, &id).await;
    assert_eq!(
        rows(&w, &id).await,
        vec![
            ("grant.create".into(), "/internal/queue/v1/grants".into(), None),
            ("grant.revoke".into(), "/internal/queue/v1/grants/{legacy_id}/revoke".into(), None),
        ]
    );
    let wb = write_back(&w).await;
    assert_eq!(
        (wb["enabled"].as_bool(), wb["pending"].as_i64(), wb["failed"].as_i64()),
        (Some(false), Some(2), Some(0))
    );
    let kinds: Vec<&str> =
        wb["kinds"].as_array().expect("kinds").iter().map(|k| k["kind"].as_str().unwrap_or("?")).collect();
    assert_eq!(kinds, vec!["grant.create", "grant.revoke"], "{wb}");

    // A replica that sends, to a Raptor that refuses (422): both rows fail for good, visible.
    let peer = Peer::start();
    peer.status.store(422, Ordering::SeqCst);
    let url = peer.url.clone();
    let sender = spawn_rbac(&w.keys, &w.rbac_db, &w.audit, move |c| {
        c.legacy.writeback_url = Some(url);
        c.legacy.writeback_poll_interval_ms = 200;
    })
    .await;
    let mut wb = Value::Null;
    for _ in 0..100 {
        wb = write_back(&w).await;
        if wb["failed"] == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!((wb["pending"].as_i64(), wb["failed"].as_i64()), (Some(0), Some(2)), "{wb}");
    let create = &wb["kinds"][0];
    assert!(create["last_error"].as_str().expect("error").contains("422"), "{wb}");
    assert_eq!(peer.seen().len(), 1, "the revoke was never sent: Raptor's id is unknown");
    assert!(wb["kinds"][1]["last_error"].as_str().expect("error").contains("Raptor's id is unknown"), "{wb}");
    assert_eq!(
        w.scalar(&format!("SELECT count(*) AS n FROM rbac.rbac_grants WHERE id = '{id}' AND legacy_id IS NULL")).await,
        1
    );
    sender.stop().await;
    peer.handle.stop(false).await;
}

#[tokio::test]
async fn principals_pair_once_conflicts_are_refused_and_only_importers_may() {
    let w = World::start().await;
    let first = import(&w, "principals", json!([{"legacy_id": "11", "principal_id": ADA}])).await;
    assert_eq!(outcomes(&first), vec!["created"]);
    let again = import(
        &w,
        "principals",
        json!([{"legacy_id": "11", "principal_id": ADA}, {"legacy_id": "13", "principal_id": GRACE},
               {"legacy_id": "015", "principal_id": NATIVE}]),
    )
    .await;
    assert_eq!(outcomes(&again), vec!["unchanged", "created", "refused"], "{again:?}");
    let conflicts = import(
        &w,
        "principals",
        json!([{"legacy_id": "12", "principal_id": ADA}, {"legacy_id": "11", "principal_id": NATIVE}]),
    )
    .await;
    assert_eq!(outcomes(&conflicts), vec!["refused", "refused"], "{conflicts:?}");
    let reason = |r: &Value| r["reason"].as_str().unwrap_or("").to_string();
    assert!(reason(&conflicts[0]).contains(&format!("user {ADA} is customer 11 already")), "{conflicts:?}");
    assert!(reason(&conflicts[1]).contains(&format!("customer 11 is user {ADA} already")), "{conflicts:?}");
    let twice = import(
        &w,
        "principals",
        json!([{"legacy_id": "20", "principal_id": NATIVE}, {"legacy_id": "21", "principal_id": NATIVE}]),
    )
    .await;
    assert_eq!(outcomes(&twice), vec!["created", "refused"], "{twice:?}");
    assert!(reason(&twice[1]).contains("appears twice"), "{twice:?}");
    assert_eq!(w.scalar("SELECT count(*) AS n FROM rbac.legacy_principals").await, 3);
    let events = w.audit_events("_platform").await;
    let linked: Vec<&Value> = events.iter().filter(|e| e["action"] == "rbac.legacy.principals.linked").collect();
    assert_eq!(linked.len(), 3, "one audited event per batch with new pairs: {linked:?}");

    // Not an importer: refused, nothing written.
    let other = "4e0c9d85-6f40-4c1b-8d5e-8f9a0b1c2d34";
    let body = json!({"records": [{"legacy_id": "40", "principal_id": other}]});
    let (s, _) = w.rbac.post_json_as("/internal/v1/import/principals", &w.admin(), &body).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let dry = json!({"records": [{"legacy_id": "40", "principal_id": other}], "dry_run": true});
    let (s, v) = w.rbac.post_json_as("/internal/v1/import/principals", &importer(&w), &dry).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"][0]["outcome"], "created");
    assert_eq!(w.scalar("SELECT count(*) AS n FROM rbac.legacy_principals").await, 3, "a dry run writes nothing");
}
