//! The admin listener (loopback by default): the table in force, reload, phase, rollback, the
//! shadow report. Handlers are thin: they call the [`TableStore`](crate::store::TableStore) or
//! the shadow report and map the result.

use actix_web::{HttpResponse, web};
use queue_platform::ApiError;
use serde::{Deserialize, Serialize};

use crate::ProxyState;
use crate::store::{Change, ChangeError};
use crate::table::{Route, Side};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/routes", web::get().to(routes))
        .route("/admin/reload", web::post().to(reload))
        .route("/admin/phase", web::post().to(phase))
        .route("/admin/rollback", web::post().to(rollback))
        .route("/admin/shadow", web::get().to(shadow))
        .route("/healthz", web::get().to(healthz))
        .route("/metrics", web::get().to(metrics));
}

#[derive(Serialize)]
struct RouteView<'a> {
    #[serde(flatten)]
    route: &'a Route,
    /// Where the route sends now: `legacy`, `queue`, or `canary` (by cohort).
    now: &'static str,
}

#[derive(Serialize)]
struct TableView<'a> {
    version: &'a str,
    label: Option<&'a str>,
    phase: u8,
    generation: u64,
    trigger: &'a str,
    loaded_at: chrono::DateTime<chrono::Utc>,
    file: Option<String>,
    default_legacy: Option<&'a str>,
    upstreams: Vec<&'a crate::table::Upstream>,
    routes: Vec<RouteView<'a>>,
    /// Previous tables (newest first): what `POST /admin/rollback` returns to.
    history: Vec<HistoryEntry>,
}

#[derive(Serialize)]
struct HistoryEntry {
    version: String,
    phase: u8,
    generation: u64,
    trigger: &'static str,
}

async fn routes(state: web::Data<ProxyState>) -> HttpResponse {
    let loaded = state.tables.current();
    let t = &loaded.table;
    let view = TableView {
        version: &t.version,
        label: t.label.as_deref(),
        phase: t.phase,
        generation: loaded.generation,
        trigger: loaded.trigger,
        loaded_at: loaded.loaded_at,
        file: state.tables.path().map(|p| p.display().to_string()),
        default_legacy: t.default_legacy.as_deref(),
        upstreams: t.legacy.values().chain(t.services.values()).collect(),
        routes: t
            .routes
            .iter()
            .map(|r| RouteView {
                route: r,
                now: match t.static_side(r) {
                    Some((Side::Legacy, _)) => "legacy",
                    Some((Side::Queue, _)) => "queue",
                    None => "canary",
                },
            })
            .collect(),
        history: state
            .tables
            .history()
            .iter()
            .map(|h| HistoryEntry {
                version: h.table.version.clone(),
                phase: h.table.phase,
                generation: h.generation,
                trigger: h.trigger,
            })
            .collect(),
    };
    HttpResponse::Ok().json(view)
}

fn answer(result: Result<Change, ChangeError>) -> Result<HttpResponse, ApiError> {
    match result {
        Ok(c) => Ok(HttpResponse::Ok().json(c)),
        Err(ChangeError::Invalid(e)) => {
            Err(ApiError::invalid(e.key.clone(), format!("{e}; the table in force is unchanged")))
        }
        Err(ChangeError::Conflict(m)) => Err(ApiError::Conflict(m)),
        Err(ChangeError::Io(m)) => Err(ApiError::Unavailable(m)),
    }
}

async fn reload(state: web::Data<ProxyState>) -> Result<HttpResponse, ApiError> {
    answer(state.tables.reload("admin"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseRequest {
    phase: u8,
}

async fn phase(state: web::Data<ProxyState>, body: web::Json<PhaseRequest>) -> Result<HttpResponse, ApiError> {
    answer(state.tables.set_phase(body.phase))
}

async fn rollback(state: web::Data<ProxyState>) -> Result<HttpResponse, ApiError> {
    answer(state.tables.rollback())
}

async fn shadow(state: web::Data<ProxyState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "routes": state.shadow.report() }))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok", "service": "queue-proxy-admin"}))
}

async fn metrics(state: web::Data<ProxyState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.platform.metrics.render())
}
