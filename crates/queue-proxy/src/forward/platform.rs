//! The platform endpoints (`PLATFORM_PATHS` in forward/mod.rs), relayed to queue-platform's app
//! on its loopback listener, which adds its own request span, metrics and `x-trace-id`. That
//! listener's peer is always the proxy itself, so an untrusted client's trace context is
//! dropped here.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::net::IpAddr;

use super::answer::{self, Answer};
use super::body::RespBody;
use super::worker::Worker;
use crate::headers::{strip_hop_by_hop, strip_trace_context};
use crate::upstream::{self, ReqBody};

/// Relays one request for a platform endpoint, body and all, and its answer.
pub(super) async fn relay(w: &Worker, req: Request<Incoming>, peer: IpAddr) -> Response<RespBody> {
    let (mut parts, body) = req.into_parts();
    let Some(path_and_query) = parts.uri.path_and_query().cloned() else {
        return Answer::proxy(StatusCode::BAD_REQUEST, "bad_request", "invalid request target").respond("-");
    };
    parts.uri = path_and_query.into();
    strip_hop_by_hop(&mut parts.headers);
    if !w.state.trusted_proxies.contains(peer) {
        strip_trace_context(&mut parts.headers);
    }
    match upstream::send(&w.pool, &w.internal, parts, ReqBody::Incoming(body)).await {
        Ok((mut parts, body)) => {
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, RespBody::Plain(body))
        }
        Err(e) => {
            let e = e.at_platform();
            tracing::error!(error = ?e, "the platform endpoints' listener did not answer");
            answer::failure(&e, "-", "none").respond("-")
        }
    }
}
