//! The public listener. The platform endpoints (`/healthz`, `/readyz`, `/metrics`,
//! `/.well-known/jwks.json`, `/openapi.json`, `/internal/v1/caller`) are queue-platform's, with
//! its per-request span and metrics; every other path, whatever the method, is forwarded
//! according to the route table.
//!
//! The proxy serves its own `App` instead of `queue_platform::server::serve` so that forwarded
//! requests skip the platform's per-request middleware (a span, a trace id, an
//! `x-trace-id` header and a metrics series per request): the proxy records its own metrics
//! per route and side, writes its access log and passes `traceparent` on (forward.rs). And
//! forwarding is the default service: no pattern (regex) to match per request.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, web};
use queue_platform::config::ServerConfig;
use queue_platform::error;
use queue_platform::server::{platform_routes, trace_requests};
use queue_platform::{Platform, Running, Signals};
use std::sync::Arc;

use crate::{ProxyState, forward};

/// The paths `platform_routes` serves: only these get the platform's request middleware.
const PLATFORM_PATHS: [&str; 6] =
    ["/healthz", "/readyz", "/metrics", "/.well-known/jwks.json", "/openapi.json", "/internal/v1/caller"];

/// Binds and starts the public listener (like `queue_platform::server::serve`: graceful
/// shutdown, workers from `server.workers`, the JWKS refresh task).
pub fn serve(
    platform: Arc<Platform>,
    config: &ServerConfig,
    signals: Signals,
    state: web::Data<ProxyState>,
) -> anyhow::Result<Running> {
    let data = web::Data::from(platform.clone());
    let max_body = config.max_body_bytes;
    let factory = move || {
        App::new()
            .app_data(data.clone())
            .app_data(state.clone())
            .app_data(web::JsonConfig::default().limit(max_body).error_handler(error::json_error_handler))
            .app_data(web::PayloadConfig::new(max_body))
            .app_data(web::QueryConfig::default().error_handler(error::query_error_handler))
            .app_data(web::PathConfig::default().error_handler(error::path_error_handler))
            .wrap(from_fn(platform_middleware))
            .configure(platform_routes)
            .default_service(web::to(forward::forward))
    };
    queue_platform::server::listen(platform, config, signals, factory)
}

/// The platform's request span and metrics for its own endpoints; forwarded requests pass
/// straight through.
async fn platform_middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if PLATFORM_PATHS.contains(&req.path()) {
        trace_requests(req, next).await.map(ServiceResponse::map_into_boxed_body)
    } else {
        next.call(req).await.map(ServiceResponse::map_into_boxed_body)
    }
}
