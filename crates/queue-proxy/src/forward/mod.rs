//! Forwarding: every path the platform endpoints do not claim comes here. The request's path is
//! made canonical (canonical.rs) and matched against the table in force (loaded once, held to
//! the end of the request); its body is read whole, within limits, before it takes an upstream
//! slot; it is sent to the chosen side over pooled keep-alive connections, and answered with the
//! upstream's response streamed back — or a JSON error naming the side that failed (or `proxy`
//! for the proxy's own refusals).
//!
//! Requests arrive from hyper's server (listener.rs) as `http` 1.x values, the types the
//! upstream client takes: the head is edited in place by the header policy (headers.rs:
//! hop-by-hop headers out, `X-Forwarded-*` and the request id in, Queue's session out on the way
//! to the legacy side).
//!
//! This file only dispatches ([`handle`]); the work is below it, each file using only those
//! after it: `platform.rs` (the relay of the platform endpoints), `exchange.rs` (one forwarded
//! request, step by step), `plan.rs` (where it goes), `answer.rs` (the proxy's own answers),
//! `body.rs` (the bodies on their way), `worker.rs` (what a worker thread's requests reach).

mod answer;
mod body;
mod exchange;
mod plan;
mod platform;
mod worker;

use http::header::HeaderMap;
use http::{Request, Response};
use hyper::body::Incoming;
use std::net::SocketAddr;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub(crate) use body::RespBody;
pub(crate) use worker::Worker;

/// The paths queue-platform's app serves; every other path is forwarded. Not `/metrics` nor
/// `/openapi.json`: the proxy's own metrics and API document are for operators and are served
/// by the admin listener only (behind its token); on the front door those paths go through the
/// route table like any other.
const PLATFORM_PATHS: [&str; 4] = ["/healthz", "/readyz", "/.well-known/jwks.json", "/internal/v1/caller"];

/// Serves one request from the public listener: a platform endpoint goes to queue-platform's
/// app, everything else is forwarded.
pub(crate) async fn handle(w: &Worker, req: Request<Incoming>, peer: SocketAddr) -> Response<RespBody> {
    if PLATFORM_PATHS.contains(&req.uri().path()) {
        return platform::relay(w, req, peer.ip()).await;
    }
    // Forwarded requests skip the platform's per-request span and metrics (the proxy records
    // its own per route). With tracing on, this span becomes the upstream's parent; it
    // continues the client's `traceparent` only from a trusted proxy (else a client could pick
    // the trace its requests, and the audit events they cause, are filed under). Otherwise it
    // is disabled and costs nothing.
    let span = tracing::info_span!("proxy.forward", otel.kind = "server", http.method = %req.method());
    if span.is_disabled() {
        return exchange::forward(w, req, peer.ip()).await;
    }
    if w.state.trusted_proxies.contains(peer.ip()) {
        let _ = span.set_parent(queue_platform::telemetry::extract_parent(&trace_headers(req.headers())));
    }
    exchange::forward(w, req, peer.ip()).instrument(span).await
}

/// The trace context headers, in the actix type queue-platform's extractor reads (only when
/// tracing is on).
fn trace_headers(h: &HeaderMap) -> actix_web::http::header::HeaderMap {
    use actix_web::http::header as ah;
    let mut out = ah::HeaderMap::new();
    for name in ["traceparent", "tracestate"] {
        if let Some(v) = h.get(name)
            && let Ok(v) = ah::HeaderValue::from_bytes(v.as_bytes())
        {
            out.insert(ah::HeaderName::from_static(name), v);
        }
    }
    out
}
