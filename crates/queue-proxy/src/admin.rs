//! The admin listener (loopback by default): the table in force, reload, phase, rollback, the
//! shadow report, and the proxy's own metrics and OpenAPI document. Handlers are thin: they call
//! the [`TableStore`](crate::store::TableStore) or the shadow report and map the result.
//!
//! Locked three ways (docs/proxy.md, "The admin API"):
//! * [`refuse_browsers`] runs before anything else: a request with an `Origin`, a
//!   `Sec-Fetch-Site` other than `none`, or a `Host` that is not this listener's is refused, so
//!   a web page open on an operator's machine (CSRF, DNS rebinding) reaches nothing;
//! * every endpoint but `/healthz` takes a service token for this proxy with scope
//!   `proxy:admin` from a configured operator issuer (`admin.issuers`);
//! * a phase change, reload or rollback is written to the audit service first (who, from what
//!   table to what); if that write fails the change is refused with 503 and nothing changes.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};
use queue_audit_client::{AuditEvent, Party};
use queue_platform::{ApiError, ServiceCaller, ServicePolicy};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

use crate::ProxyState;
use crate::store::{Change, ChangeError, Plan, PlanKind};
use crate::table::{Route, Side};

/// The scope every admin endpoint (but `/healthz`) requires.
pub(crate) const ADMIN_SCOPE: &str = "proxy:admin";

/// The audit-log tenant of the proxy's events: they belong to no tenant (as rbac's global
/// changes).
const AUDIT_TENANT: &str = "_platform";

pub(crate) fn configure(issuers: Vec<String>) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg| {
        let issuers: Vec<&str> = issuers.iter().map(String::as_str).collect();
        let policy = || ServicePolicy::issuers(&issuers).scope(ADMIN_SCOPE).data();
        cfg.service(web::resource("/admin/routes").app_data(policy()).get(routes))
            .service(web::resource("/admin/reload").app_data(policy()).post(reload))
            .service(web::resource("/admin/phase").app_data(policy()).post(phase))
            .service(web::resource("/admin/rollback").app_data(policy()).post(rollback))
            .service(web::resource("/admin/shadow").app_data(policy()).get(shadow))
            .service(web::resource("/metrics").app_data(policy()).get(metrics))
            .service(web::resource("/openapi.json").app_data(policy()).get(openapi))
            // Open for probes: it says only that the process is up.
            .route("/healthz", web::get().to(healthz));
    }
}

/// The host names the admin listener answers to (lowercase, without port).
pub(crate) struct AdminGuard {
    hosts: Vec<String>,
}

impl AdminGuard {
    /// Loopback's names, the bound address and the configured `admin.hosts`.
    pub(crate) fn new(bound: SocketAddr, configured: &[String]) -> Self {
        let own = match bound {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]"].iter().map(|h| h.to_string()).collect();
        hosts.push(own);
        hosts.extend(configured.iter().map(|h| h.to_ascii_lowercase()));
        Self { hosts }
    }

    /// Why a request is refused, if it is shaped like a browser's or names a foreign host.
    fn refusal(&self, req: &ServiceRequest) -> Option<&'static str> {
        let headers = req.headers();
        if headers.contains_key(actix_web::http::header::ORIGIN) {
            return Some("the admin API refuses browser requests (an Origin header was sent)");
        }
        if let Some(site) = headers.get("sec-fetch-site")
            && site.as_bytes() != b"none"
        {
            return Some("the admin API refuses browser requests (Sec-Fetch-Site is not `none`)");
        }
        let host = headers.get(actix_web::http::header::HOST).and_then(|h| h.to_str().ok());
        match host.map(host_name) {
            Some(name) if self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name)) => None,
            _ => Some("the admin API answers only to its own host names (Host refused)"),
        }
    }
}

/// `name` of `name[:port]` (IPv6 literals keep their brackets).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Refuses browser-shaped requests and foreign `Host`s with 403 before routing, tokens or
/// bodies are looked at.
pub(crate) async fn refuse_browsers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let refusal = match req.app_data::<web::Data<AdminGuard>>() {
        Some(guard) => guard.refusal(&req),
        None => Some("the admin API has no host list; refusing"),
    };
    if let Some(reason) = refusal {
        tracing::info!(path = req.path(), reason, "admin request refused");
        return Err(ApiError::Forbidden(reason.into()).into());
    }
    next.call(req).await
}

/// The proxy's document: exactly what the admin listener serves (the public listener's
/// platform endpoints are not in it: `Platform::with_own_document`).
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "queue-proxy", description = "Queue proxy: phased strangler-fig routing. This is the admin \
        API: the admin listener (loopback), for operators' service tokens (issuers `admin.issuers`, scope \
        `proxy:admin`); requests shaped like a browser's (an `Origin`, a `Sec-Fetch-Site` other than `none`) \
        or naming a foreign `Host` are refused with 403 before anything else (docs/proxy.md, \"The admin API\")."),
    paths(routes, reload, phase, rollback, shadow, metrics, openapi, healthz),
    tags((name = "admin", description = "The route table, its phase, reloads and rollbacks, the shadow report."))
)]
pub(crate) struct AdminApi;

#[derive(Serialize)]
struct RouteView<'a> {
    #[serde(flatten)]
    route: &'a Route,
    /// Where the route sends now: `legacy`, `queue`, or `canary` (by cohort).
    now: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"version": "9f2c41d0a7b3", "label": "december cutover", "phase": 2, "generation": 7,
    "trigger": "admin", "loaded_at": "2026-12-07T14:03:22.481Z", "file": "/etc/queue/routes.toml",
    "default_legacy": "raptor",
    "upstreams": [{"name": "raptor", "side": "legacy", "base": "http://10.0.0.5:8080", "response_timeout_ms": 30000, "max_in_flight": 512}],
    "routes": [{"name": "backup-codes", "match": {"prefix": "/api/v1/auth/backup-codes"}, "methods": [], "legacy": "raptor",
        "queue_service": "auth", "queue_path": "/api/v1/auth/backup-codes", "cutover_phase": 2, "pinned": null,
        "canary": null, "shadow": null, "now": "queue"}],
    "history": [{"version": "51be07c3e8d2", "phase": 1, "generation": 6, "trigger": "phase"}]}))]
struct TableView<'a> {
    /// The table's content hash.
    version: &'a str,
    label: Option<&'a str>,
    phase: u8,
    /// Counts the tables installed since start.
    generation: u64,
    /// What installed it: `start`, `admin`, `phase`, `rollback`, `file-change`, `sighup`.
    trigger: &'a str,
    loaded_at: chrono::DateTime<chrono::Utc>,
    /// The table file, when the proxy runs with one.
    file: Option<String>,
    default_legacy: Option<&'a str>,
    /// The legacy and Queue upstreams (docs/proxy.md, "The route table").
    #[schema(value_type = Vec<Object>)]
    upstreams: Vec<&'a crate::table::Upstream>,
    /// Each route as the table states it, with `now`: where it sends now (`legacy`, `queue`, or
    /// `canary`, by cohort).
    #[schema(value_type = Vec<Object>)]
    routes: Vec<RouteView<'a>>,
    /// Previous tables (newest first): what `POST /admin/rollback` returns to.
    history: Vec<HistoryEntry>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct HistoryEntry {
    version: String,
    phase: u8,
    generation: u64,
    trigger: &'static str,
}

/// The route table in force, where each route sends now, and the tables a rollback returns to.
#[utoipa::path(get, path = "/admin/routes", tag = "admin", operation_id = "get_route_table",
    security(("service_token" = ["proxy:admin"])),
    responses((status = 200, description = "The table in force.", body = TableView<'_>)))]
async fn routes(state: web::Data<ProxyState>, _caller: ServiceCaller) -> HttpResponse {
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
    result.map(|c| HttpResponse::Ok().json(c)).map_err(refused)
}

fn refused(e: ChangeError) -> ApiError {
    match e {
        ChangeError::Invalid(e) => ApiError::invalid(e.key.clone(), format!("{e}; the table in force is unchanged")),
        ChangeError::Conflict(m) => ApiError::Conflict(m),
        ChangeError::Io(m) => ApiError::Unavailable(m),
    }
}

/// Re-read the table file and install it (validated whole first; audited before it applies).
#[utoipa::path(post, path = "/admin/reload", tag = "admin", operation_id = "reload_route_table",
    security(("service_token" = ["proxy:admin"])),
    responses(
        (status = 200, description = "Installed, or the file holds the table in force (`changed: false`).", body = Change),
        (status = 409, description = "The proxy runs without a table file, or the table in force changed meanwhile; nothing changed."),
        (status = 422, description = "The table file holds a table that does not validate: `field` names the key (`(file)` for \
            the file as a whole); the table in force is unchanged."),
        (status = 503, description = "The table file cannot be read, or the audit service did not record the change; nothing changed. \
            Try again after `Retry-After` seconds."),
    ))]
async fn reload(
    state: web::Data<ProxyState>,
    caller: ServiceCaller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    change(&state, &caller, &req, || state.tables.plan_reload()).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"phase": 2}))]
struct PhaseRequest {
    /// The migration phase: a route sends to Queue from its `cutover_phase` on.
    #[schema(schema_with = phase_schema)]
    #[serde(deserialize_with = "integral")]
    phase: u8,
}

/// A JSON Schema `integer` is any number without a fraction, `2.0` too (serde's `u8` takes only
/// `2`); out of `u8`'s range, or with a fraction, it is refused (422).
fn integral<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_u64()
        .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= 255.0).map(|f| f as u64))
        .and_then(|v| u8::try_from(v).ok())
        .ok_or_else(|| serde::de::Error::custom(format!("`{n}` is not a phase")))
}

/// `phase`'s schema, from the phases a table may have.
fn phase_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .minimum(Some(*crate::table::PHASES.start()))
        .maximum(Some(*crate::table::PHASES.end()))
        .build()
}

/// Install the table in force with another phase (audited before it applies; written back to
/// the table file).
#[utoipa::path(post, path = "/admin/phase", tag = "admin", operation_id = "set_phase",
    security(("service_token" = ["proxy:admin"])),
    request_body = PhaseRequest,
    responses(
        (status = 200, description = "Installed, or already in force (`changed: false`).", body = Change),
        (status = 409, description = "The table in force changed meanwhile; nothing changed."),
        (status = 422, description = "Not a phase (`field` is `phase`); the table in force is unchanged."),
        (status = 503, description = "The audit service did not record the change, or the table file cannot be written; \
            nothing changed. Try again after `Retry-After` seconds."),
    ))]
async fn phase(
    state: web::Data<ProxyState>,
    caller: ServiceCaller,
    req: HttpRequest,
    body: web::Json<PhaseRequest>,
) -> Result<HttpResponse, ApiError> {
    change(&state, &caller, &req, || state.tables.plan_phase(body.phase)).await
}

/// Return to the previous table, exactly (audited before it applies).
#[utoipa::path(post, path = "/admin/rollback", tag = "admin", operation_id = "roll_back_route_table",
    security(("service_token" = ["proxy:admin"])),
    responses(
        (status = 200, description = "The previous table is in force.", body = Change),
        (status = 409, description = "There is no previous table, or the table in force changed meanwhile; nothing changed."),
        (status = 503, description = "The audit service did not record the change; nothing changed. Try again after `Retry-After` seconds."),
    ))]
async fn rollback(
    state: web::Data<ProxyState>,
    caller: ServiceCaller,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    change(&state, &caller, &req, || state.tables.plan_rollback()).await
}

/// Plans the change, writes its audit event, then applies it: one admin change at a time, and
/// none without its audit record. A plan that changes nothing is answered without an event.
async fn change(
    state: &ProxyState,
    caller: &ServiceCaller,
    req: &HttpRequest,
    plan: impl FnOnce() -> Result<Plan, ChangeError>,
) -> Result<HttpResponse, ApiError> {
    let _one_at_a_time = state.admin_changes.lock().await;
    let plan = plan().map_err(refused)?;
    if plan.is_noop() && plan.kind() != PlanKind::Rollback {
        return answer(state.tables.apply(&plan));
    }
    let event = audit_event(&plan, caller, req);
    if let Some(audit) = &state.audit
        && let Err(e) = audit.append(&event).await
    {
        tracing::warn!(error = %e, action = %event.action, "pre-write audit failed; the table in force is unchanged");
        return Err(ApiError::Unavailable(
            "the audit service did not record the change, so nothing was changed".into(),
        ));
    }
    let result = state.tables.apply(&plan);
    if result.is_err()
        && let Some(audit) = &state.audit
    {
        compensate(audit.clone(), &event);
    }
    answer(result)
}

fn action(kind: PlanKind) -> &'static str {
    match kind {
        PlanKind::Phase => "proxy.phase.changed",
        PlanKind::Reload => "proxy.table.reloaded",
        PlanKind::Rollback => "proxy.table.rolled_back",
    }
}

/// Who (the token's issuer and id), from what table and phase to what.
fn audit_event(plan: &Plan, caller: &ServiceCaller, req: &HttpRequest) -> AuditEvent {
    let claims = &caller.0.claims;
    AuditEvent {
        id: uuid::Uuid::new_v4(),
        tenant_id: AUDIT_TENANT.into(),
        actor: Party::new("service", caller.issuer()),
        action: action(plan.kind()).into(),
        target: Party::new("route_table", plan.to_version.clone()),
        occurred_at: chrono::Utc::now(),
        ip: req.peer_addr().map(|a| a.ip().to_string()),
        user_agent: req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(256).collect()),
        trace_id: None,
        payload: serde_json::json!({
            "from": { "version": plan.from_version, "phase": plan.from_phase, "generation": plan.from_generation },
            "to": { "version": plan.to_version, "phase": plan.to_phase },
            "token_id": claims.jti,
        }),
    }
}

/// Records that a change whose event was written did not apply (the table changed in between).
/// A few retries in the background; the event id makes them idempotent.
fn compensate(audit: queue_audit_client::AuditClient, announced: &AuditEvent) {
    let event = AuditEvent {
        id: uuid::Uuid::new_v4(),
        action: "proxy.change.aborted".into(),
        occurred_at: chrono::Utc::now(),
        payload: serde_json::json!({
            "aborted_event_id": announced.id,
            "note": "the change this event announced was not applied",
        }),
        ..announced.clone()
    };
    tokio::spawn(async move {
        let mut wait = Duration::from_millis(200);
        for _ in 0..8 {
            match audit.append(&event).await {
                Ok(_) => return,
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "compensating audit event not delivered yet");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                Err(_) => break,
            }
        }
        tracing::error!(event_id = %event.id, "compensating audit event could not be delivered");
    });
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"routes": {"backup-codes": {"compared": 120, "matched": 118, "mismatched": 2,
    "shadow_errors": 0, "skipped": 1, "dropped": 0, "match_rate": 0.9833, "samples": []}}}))]
struct ShadowView {
    /// Per shadowed route: compared, matched, mismatched, shadow errors, skipped, dropped, the
    /// match rate and the newest mismatch samples.
    #[schema(value_type = BTreeMap<String, Object>)]
    routes: std::collections::BTreeMap<String, crate::shadow::RouteReport>,
}

/// The shadow comparison report, per shadowed route.
#[utoipa::path(get, path = "/admin/shadow", tag = "admin", operation_id = "get_shadow_report",
    security(("service_token" = ["proxy:admin"])),
    responses((status = 200, description = "The report since start.", body = ShadowView)))]
async fn shadow(state: web::Data<ProxyState>, _caller: ServiceCaller) -> HttpResponse {
    HttpResponse::Ok().json(ShadowView { routes: state.shadow.report() })
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"status": "ok", "service": "queue-proxy-admin"}))]
struct AdminHealth {
    status: &'static str,
    service: &'static str,
}

/// The admin listener is up (open: no token, for probes).
#[utoipa::path(get, path = "/healthz", tag = "admin", operation_id = "admin_healthz",
    responses(
        (status = 200, description = "Up.", body = AdminHealth),
        (status = 403, description = "A browser-shaped request (`Origin`, `Sec-Fetch-Site`) or a foreign `Host`.",
            body = queue_platform::error::ErrorBody),
    ))]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(AdminHealth { status: "ok", service: "queue-proxy-admin" })
}

/// The proxy's own metrics: here only, never on the front door.
#[utoipa::path(get, path = "/metrics", tag = "admin", operation_id = "get_metrics",
    security(("service_token" = ["proxy:admin"])),
    responses((status = 200, description = "Prometheus text exposition.", content_type = "text/plain")))]
async fn metrics(state: web::Data<ProxyState>, _caller: ServiceCaller) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(state.platform.metrics.render())
}

/// The proxy's OpenAPI document: here only, never on the front door.
#[utoipa::path(get, path = "/openapi.json", tag = "admin", operation_id = "get_openapi_document",
    security(("service_token" = ["proxy:admin"])),
    responses((status = 200, description = "This document.", content_type = "application/json")))]
async fn openapi(state: web::Data<ProxyState>, _caller: ServiceCaller) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(state.platform.openapi().to_string())
}
