//! Booting a service: building the shared state (`state::Platform`), the platform endpoints every service serves, the
//! per-request span and metrics, and the actix server with graceful shutdown.

use actix_web::body::MessageBody;
use actix_web::dev::{ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpMessage, HttpResponse, HttpServer, web};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use utoipa::OpenApi;

use crate::config::{ServerConfig, TelemetryConfig, TokensConfig};
use crate::contract::{self, Contract};
use crate::db::Db;
use crate::error;
use crate::http_client::HttpClient;
use crate::metrics::Metrics;
use crate::service_auth::{ServiceCaller, ServicePolicy};
use crate::state::{Platform, Tokens};
use crate::telemetry;

/// The trace id of the request being served (32 lowercase hex digits), in the request's
/// extensions: what handlers put into audit events and pass on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTraceId(pub String);

/// The response header that tells a caller which trace its request belongs to.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// Building the state: here rather than in `state.rs` because the document it serves includes
/// the platform endpoints this module owns.
impl Platform {
    pub fn new(
        name: &'static str,
        db: Option<Db>,
        tokens_config: &TokensConfig,
        telemetry: &TelemetryConfig,
        openapi: utoipa::openapi::OpenApi,
    ) -> anyhow::Result<Arc<Self>> {
        Self::with_client(name, db, tokens_config, telemetry, HttpClient::new(), openapi)
    }

    /// As [`Platform::new`], calling peers (and fetching their JWKS) with `http`; services pass
    /// `HttpClient::from_config(&config.server.tls)` so a configured CA is trusted.
    pub fn with_client(
        name: &'static str,
        db: Option<Db>,
        tokens_config: &TokensConfig,
        telemetry: &TelemetryConfig,
        http: HttpClient,
        mut openapi: utoipa::openapi::OpenApi,
    ) -> anyhow::Result<Arc<Self>> {
        openapi.merge(PlatformApi::openapi());
        Self::with_own_document(name, db, tokens_config, telemetry, http, openapi)
    }

    /// As [`Platform::with_client`], for a document that describes a listener without the
    /// platform endpoints (the proxy's admin listener): `openapi` is completed, not merged with
    /// them, so it lists exactly what that listener serves.
    pub fn with_own_document(
        name: &'static str,
        db: Option<Db>,
        tokens_config: &TokensConfig,
        telemetry: &TelemetryConfig,
        http: HttpClient,
        mut openapi: utoipa::openapi::OpenApi,
    ) -> anyhow::Result<Arc<Self>> {
        let tokens = Tokens::from_config(tokens_config, &http)?;
        // The error body every completed document refers to.
        openapi.merge(ErrorSchemas::openapi());
        let mut document = serde_json::to_value(&openapi)?;
        contract::complete(&mut document, crate::sessions::COOKIE);
        let contract = Contract::from_document(&document);
        let openapi = serde_json::to_string(&document)?;
        let trace_peers = telemetry.trusted_peers.clone();
        Ok(Arc::new(Self { name, db, metrics: Metrics::new(name), tokens, http, trace_peers, openapi, contract }))
    }
}

/// A started server. `server` must be awaited (or spawned) for it to run.
pub struct Running {
    pub addr: SocketAddr,
    pub server: actix_web::dev::Server,
    pub platform: Arc<Platform>,
    /// Background tasks (JWKS refresh, …) stopped when the server stops.
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Runs until the server stops (SIGTERM/SIGINT, or `handle().stop()`), then stops the
    /// background tasks.
    pub async fn wait(self) -> std::io::Result<()> {
        let result = self.server.await;
        for t in self.tasks {
            t.abort();
        }
        result
    }
}

/// Whether the server handles SIGTERM/SIGINT itself (binaries) or leaves stopping to its
/// owner (tests, which run many servers in one process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signals {
    Handle,
    Ignore,
}

/// Binds and starts the service: platform endpoints + `routes`, request spans and metrics, the
/// JSON error policy for extractor failures, a JSON 404.
pub fn serve<F>(platform: Arc<Platform>, config: &ServerConfig, signals: Signals, routes: F) -> anyhow::Result<Running>
where
    F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
{
    let data = web::Data::from(platform.clone());
    let max_body = config.max_body_bytes;
    let factory = move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::JsonConfig::default().limit(max_body).error_handler(error::json_error_handler))
            .app_data(web::PayloadConfig::new(max_body))
            .app_data(web::QueryConfig::default().error_handler(error::query_error_handler))
            .app_data(web::PathConfig::default().error_handler(error::path_error_handler))
            .wrap(from_fn(error::method_not_allowed))
            .wrap(from_fn(trace_requests))
            .configure(platform_routes)
            .configure(routes.clone())
            .default_service(web::to(error::not_found))
    };
    listen(platform, config, signals, factory)
}

/// Binds `config.listen` and starts serving the apps `factory` builds: graceful shutdown,
/// workers from `server.workers`, signals as asked, the JWKS refresh task. For services that
/// build their own `App` (the proxy's public listener); the others call [`serve`].
pub fn listen<F, I, S, B>(
    platform: Arc<Platform>,
    config: &ServerConfig,
    signals: Signals,
    factory: F,
) -> anyhow::Result<Running>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: actix_service::IntoServiceFactory<S, actix_http::Request>,
    S: actix_web::dev::ServiceFactory<actix_http::Request, Config = actix_web::dev::AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<actix_http::Response<B>> + 'static,
    <S::Service as actix_web::dev::Service<actix_http::Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let server = HttpServer::new(factory).shutdown_timeout(config.shutdown_timeout_secs);
    let (server, scheme) = match config.tls.serving() {
        Some((cert, key)) => {
            let tls = crate::tls::server_config(cert, key).map_err(|e| anyhow::anyhow!("server.tls: {e}"))?;
            (server.bind_rustls_0_23(config.listen, tls), "https")
        }
        None => (server.bind(config.listen), "http"),
    };
    let mut server = server.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    if let Some(w) = config.workers {
        server = server.workers(w);
    }
    if signals == Signals::Ignore {
        server = server.disable_signals();
    }
    let addr = *server.addrs().first().ok_or_else(|| anyhow::anyhow!("bound no address"))?;
    let server = server.run();
    let tasks = vec![platform.tokens.verifier.spawn_refresh()];
    tracing::info!(service = platform.name, %addr, "listening on {scheme}://{addr}");
    Ok(Running { addr, server, platform, tasks })
}

/// A span per request with method, route, status, latency and trace id; the trace continues
/// an incoming `traceparent` when the TCP peer is in `telemetry.trusted_peers` (else it starts a
/// new one); metrics per route; `x-trace-id` on the response. Public so a service that serves
/// its own `App` (queue-proxy) can apply it to the platform endpoints.
pub async fn trace_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let span = tracing::info_span!(
        "http.request",
        otel.name = tracing::field::Empty,
        otel.kind = "server",
        http.method = %method,
        http.route = tracing::field::Empty,
        http.status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        caller = tracing::field::Empty,
    );
    let platform = req.app_data::<web::Data<Platform>>().cloned();
    let peer_trusted = match (req.peer_addr(), &platform) {
        (Some(peer), Some(p)) => p.trace_peers.contains(peer.ip()),
        _ => false,
    };
    // A client's `traceparent` would let it pick the trace id its requests (and the audit events
    // they write) are filed under: only trusted peers' context is continued.
    let parent = if peer_trusted { telemetry::extract_parent(req.headers()) } else { opentelemetry::Context::new() };
    let incoming = telemetry::trace_id_in(&parent);
    let _ = span.set_parent(parent);
    let trace_id = telemetry::trace_id_of(&span)
        .or(incoming)
        .map(|t| t.to_string())
        // Without the OpenTelemetry layer (tests, benchmarks) and no incoming trace: a fresh
        // id without a system call.
        .unwrap_or_else(telemetry::new_id);
    span.record("trace_id", trace_id.as_str());
    req.extensions_mut().insert(RequestTraceId(trace_id.clone()));

    let result = next.call(req).instrument(span.clone()).await;

    let latency = started.elapsed();
    let (status, route) = match &result {
        Ok(res) => (res.status().as_u16(), res.request().match_pattern().unwrap_or_else(|| "unmatched".into())),
        Err(e) => (e.as_response_error().status_code().as_u16(), "unmatched".into()),
    };
    span.record("http.route", route.as_str());
    if !span.is_disabled() {
        span.record("otel.name", format!("{method} {route}"));
    }
    span.record("http.status", status);
    span.record("latency_ms", latency.as_secs_f64() * 1000.0);
    span.in_scope(|| tracing::info!(status, route = %route, "request"));
    if let Some(p) = platform {
        p.metrics.observe_request(&route, &method, status, latency.as_secs_f64());
    }
    result.map(|mut res| {
        if let Ok(v) = HeaderValue::from_str(&trace_id) {
            res.headers_mut().insert(HeaderName::from_static(TRACE_ID_HEADER), v);
        }
        res
    })
}

/// The platform endpoints every service serves (`/healthz`, `/readyz`, `/metrics`, …).
pub fn platform_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .route("/.well-known/jwks.json", web::get().to(jwks))
        .route("/openapi.json", web::get().to(openapi))
        .service(web::resource("/internal/v1/caller").app_data(ServicePolicy::any_trusted().data()).get(caller));
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
    pub service: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub ready: bool,
    pub service: &'static str,
    /// Each dependency and whether it answered.
    pub checks: Vec<Check>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CallerInfo {
    pub issuer: String,
    pub audience: String,
    pub scopes: Vec<String>,
    pub expires_at: u64,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "platform", responses((status = 200, body = Health)))]
async fn healthz(p: web::Data<Platform>) -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok", service: p.name })
}

/// The service can do its work: its database answers.
#[utoipa::path(get, path = "/readyz", tag = "platform",
    responses((status = 200, body = Readiness), (status = 503, body = Readiness)))]
async fn readyz(p: web::Data<Platform>) -> HttpResponse {
    let mut checks = Vec::new();
    if let Some(db) = &p.db {
        let ok = match db.ping().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "readiness: database check failed");
                false
            }
        };
        checks.push(Check { name: "database", ok });
    }
    let ready = checks.iter().all(|c| c.ok);
    let body = Readiness { ready, service: p.name, checks };
    if ready { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "platform", responses((status = 200, content_type = "text/plain")))]
async fn metrics(p: web::Data<Platform>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(p.metrics.render())
}

/// The public keys that verify this service's tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "platform", responses((status = 200)))]
async fn jwks(p: web::Data<Platform>) -> HttpResponse {
    HttpResponse::Ok().insert_header(("cache-control", "max-age=300")).json(&p.tokens.jwks)
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "platform", responses((status = 200)))]
async fn openapi(p: web::Data<Platform>) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(p.openapi.clone())
}

/// Echoes the verified service caller: a way to check a token end to end.
#[utoipa::path(get, path = "/internal/v1/caller", tag = "platform",
    security(("service_token" = [])),
    responses((status = 200, body = CallerInfo), (status = 401, body = error::ErrorBody), (status = 403, body = error::ErrorBody)))]
async fn caller(caller: ServiceCaller) -> HttpResponse {
    let c = caller.0.claims;
    HttpResponse::Ok().json(CallerInfo { issuer: c.iss, audience: c.aud, scopes: c.scope, expires_at: c.exp })
}

#[derive(OpenApi)]
#[openapi(paths(healthz, readyz, metrics, jwks, openapi, caller), components(schemas(error::ErrorBody)))]
struct PlatformApi;

#[derive(OpenApi)]
#[openapi(components(schemas(error::ErrorBody)))]
struct ErrorSchemas;
