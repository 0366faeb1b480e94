//! Forwarding: every path the platform endpoints do not claim comes here. The request's path is
//! made canonical (canonical.rs) and matched against the table in force (loaded once, held to
//! the end of the request); its body is read whole, within limits, before it takes an upstream
//! slot; it is sent to the chosen side over pooled keep-alive connections, and answered with the
//! upstream's response streamed back — or a JSON error naming the side that failed (or `proxy`
//! for the proxy's own refusals).
//!
//! Requests arrive from hyper's server (listener.rs) as `http` 1.x values, the types the
//! upstream client takes: the head is edited in place (hop-by-hop headers out, `X-Forwarded-*`
//! and the request id in, Queue's session out on the way to the legacy side).

use futures_util::{Stream, StreamExt};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::{Body as _, Bytes, Frame, Incoming, SizeHint};
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::ProxyState;
use crate::canonical;
use crate::clients::ClientSlot;
use crate::listener::{PLATFORM_PATHS, Worker};
use crate::pool::SendError;
use crate::shadow::{Job, Outcome};
use crate::store::Loaded;
use crate::table::{Cohort, Reason, Side, Upstream, bucket, in_percent};
use crate::upstream::UpBody;

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded in either direction.
/// `connection` first: [`strip_hop_by_hop`] reads its tokens.
const HOP_BY_HOP: [HeaderName; 9] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// [`HOP_BY_HOP`] as text (comparing with a `HeaderName` looks its text up first).
pub(crate) const HOP_BY_HOP_NAMES: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The client's forwarding headers (replaced or extended) and the shadow mark (removed), in
/// the order [`upstream_headers`] reads them.
const FORWARDING: [HeaderName; 5] = [
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-queue-shadow"),
];

/// W3C trace context (believed only from trusted proxies).
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

pub const REQUEST_ID: &str = "x-request-id";
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(REQUEST_ID);

/// Where one request goes.
struct Plan<'t> {
    route: &'t str,
    /// The route's position in the table; `None` for the default route.
    index: Option<usize>,
    side: Side,
    reason: Reason,
    upstream: &'t Upstream,
    /// The path upstream; `None`: the client's path, unchanged.
    path: Option<String>,
    shadow: Option<ShadowPlan<'t>>,
}

struct ShadowPlan<'t> {
    side: Side,
    upstream: &'t Upstream,
    path: String,
    ignore: Arc<Vec<String>>,
    max_body: usize,
}

/// Serves one request from the public listener: a platform endpoint goes to queue-platform's
/// app, everything else is forwarded.
pub async fn handle(w: &Worker, req: Request<Incoming>, peer: SocketAddr) -> Response<RespBody> {
    if PLATFORM_PATHS.contains(&req.uri().path()) {
        return platform(w, req, peer.ip()).await;
    }
    // Forwarded requests skip the platform's per-request span and metrics (the proxy records
    // its own per route). With tracing on, this span becomes the upstream's parent; it
    // continues the client's `traceparent` only from a trusted proxy (else a client could pick
    // the trace its requests, and the audit events they cause, are filed under). Otherwise it
    // is disabled and costs nothing.
    let span = tracing::info_span!("proxy.forward", otel.kind = "server", http.method = %req.method());
    if span.is_disabled() {
        return forward(w, req, peer.ip()).await;
    }
    if w.state.trusted_proxies.contains(peer.ip()) {
        let _ = span.set_parent(queue_platform::telemetry::extract_parent(&trace_headers(req.headers())));
    }
    forward(w, req, peer.ip()).instrument(span).await
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

/// A platform endpoint: relayed to queue-platform's app on its loopback listener, which adds
/// its own request span, metrics and `x-trace-id`. That listener's peer is always the proxy
/// itself, so an untrusted client's trace context is dropped here.
async fn platform(w: &Worker, req: Request<Incoming>, peer: IpAddr) -> Response<RespBody> {
    let (mut parts, body) = req.into_parts();
    let Some(path_and_query) = parts.uri.path_and_query().cloned() else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "invalid request target", "proxy", "-", "none", "-");
    };
    parts.uri = path_and_query.into();
    strip_hop_by_hop(&mut parts.headers);
    if !w.state.trusted_proxies.contains(peer) {
        strip_trace_context(&mut parts.headers);
    }
    match w.pool.send(&w.internal, parts, ReqBody::Incoming(body)).await {
        Ok((mut parts, body)) => {
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, RespBody::Plain(body))
        }
        Err(e) => {
            tracing::error!(error = ?e, "the platform endpoints' listener did not answer");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the platform endpoints are not available",
                "proxy",
                "-",
                "none",
                "-",
            )
        }
    }
}

async fn forward(w: &Worker, req: Request<Incoming>, peer: IpAddr) -> Response<RespBody> {
    let started = Instant::now();
    let state = &*w.state;
    let loaded = state.tables.current();
    let table = &loaded.table;
    let version = table.version.as_str();
    let (mut head, body) = req.into_parts();
    let client_uri = std::mem::take(&mut head.uri);
    // Standard methods clone without allocating.
    let client_method = head.method.clone();
    let method = client_method.as_str();
    let request_id = request_id(&head.headers);
    let trusted_peer = state.trusted_proxies.contains(peer);
    let client_ip =
        state.trusted_proxies.client_ip(peer, head.headers.get_all(&FORWARDING[0]).iter().map(|v| v.as_bytes()));
    // The route is decided on the canonical path, and that path is what goes upstream.
    let canonical = match canonical::canonical_path(client_uri.path()) {
        Ok(p) => p,
        Err(e) => return refused(state, StatusCode::BAD_REQUEST, "bad_path", e.message(), &request_id),
    };
    let path: &str = &canonical;
    let header_bytes: usize = head.headers.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
    if header_bytes > state.max_header_bytes {
        return error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            &format!("the request's headers are larger than {} bytes", state.max_header_bytes),
            "proxy",
            "-",
            "none",
            &request_id,
        );
    }

    // From here until its response body ends, the request counts against its client's cap.
    let Some(client_slot) = state.clients.try_take(client_ip) else {
        let message =
            format!("this client has {} requests in flight already; retry when one has finished", state.clients.max());
        let mut r = refused(state, StatusCode::TOO_MANY_REQUESTS, "too_many_requests", &message, &request_id);
        r.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };

    let found = table.find(method, path);
    if letter_case_variant(table, method, path, found.as_ref().map(|m| m.index)) {
        let message = "the path differs from a routed path only in letter case";
        return refused(state, StatusCode::BAD_REQUEST, "bad_path", message, &request_id);
    }
    let mut plan = match found {
        Some(m) => {
            let route = m.route;
            let (side, reason) = match table.static_side(route) {
                Some(s) => s,
                None => {
                    let canary = route.canary.as_ref().map(|c| (c.percent, c.cohort)).unwrap_or((0.0, Cohort::Client));
                    let key = state.cohort_key(&head.headers, canary.1, Some(client_ip)).await;
                    let on_queue = in_percent(bucket(&table.canary_salt, &key), canary.0);
                    (if on_queue { Side::Queue } else { Side::Legacy }, Reason::Canary)
                }
            };
            let target = |s: Side| match s {
                Side::Legacy => (table.upstream(Side::Legacy, &route.legacy), None),
                Side::Queue => (table.upstream(Side::Queue, &route.queue_service), Some(table.queue_path(&m, path))),
            };
            let (Some(upstream), target_path) = target(side) else {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no_upstream",
                    "no upstream for this route",
                    side.as_str(),
                    "?",
                    &route.name,
                    &request_id,
                );
            };
            let shadow = route.shadow.as_ref().and_then(|s| {
                let sampled = s.percent >= 100.0 || in_percent(sample_bucket(), s.percent);
                if !sampled || !s.methods.iter().any(|m| m == method) {
                    return None;
                }
                let (up, p) = target(side.other());
                Some(ShadowPlan {
                    side: side.other(),
                    upstream: up?,
                    path: p.unwrap_or_else(|| path.to_string()),
                    ignore: Arc::new(s.ignore.clone()),
                    max_body: s.max_body_bytes,
                })
            });
            Plan { route: &route.name, index: Some(m.index), side, reason, upstream, path: target_path, shadow }
        }
        None => match table.default_legacy.as_deref().and_then(|d| table.upstream(Side::Legacy, d)) {
            Some(upstream) => Plan {
                route: "default",
                index: None,
                side: Side::Legacy,
                reason: Reason::Default,
                upstream,
                path: None,
                shadow: None,
            },
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    "no_route",
                    "no route in the proxy's table matches this path",
                    "proxy",
                    "-",
                    "none",
                    &request_id,
                );
            }
        },
    };

    // The legacy side gets the canonical path too (the Queue side's is rewritten from it).
    if plan.path.is_none() && matches!(canonical, Cow::Owned(_)) {
        plan.path = Some(path.to_string());
    }

    // The body is read whole (within its limits) before the request takes an upstream slot:
    // a client that sends slowly holds only its own connection and its own client slot.
    let body_deadline = tokio::time::Instant::now() + state.client_body_timeout;
    let body = match w.deadlines.within(body_deadline, read_body(body, &head.headers, state.max_body_bytes)).await {
        Some(Ok(b)) => b,
        Some(Err(BodyError::TooLarge)) => {
            let message = format!("the request body is larger than {} bytes", state.max_body_bytes);
            return closing(refused(state, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", &message, &request_id));
        }
        Some(Err(BodyError::Failed)) => {
            return closing(error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the request body could not be read",
                "proxy",
                "-",
                plan.route,
                &request_id,
            ));
        }
        None => {
            let message =
                format!("the request body did not arrive within {} ms", state.client_body_timeout.as_millis());
            return closing(refused(state, StatusCode::REQUEST_TIMEOUT, "body_timeout", &message, &request_id));
        }
    };

    // The upstream slot: taken only now that the exchange can start at once.
    let Ok(permit) = plan.upstream.in_flight.clone().try_acquire_owned() else {
        state.metrics.upstream_error(plan.route, plan.side.as_str(), "overloaded", version);
        let mut r = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_overloaded",
            &format!(
                "the {} upstream ({}) has {} requests in flight already; retry shortly",
                plan.side.as_str(),
                plan.upstream.name,
                plan.upstream.max_in_flight
            ),
            plan.side.as_str(),
            &plan.upstream.name,
            plan.route,
            &request_id,
        );
        r.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };

    let query = client_uri.query();
    let tracing_on = !tracing::Span::current().is_disabled();
    // The request id was checked (or made) to be a token: a valid header value.
    let request_id_value = HeaderValue::from_str(&request_id).unwrap_or(HeaderValue::from_static("-"));
    upstream_headers(&mut head.headers, &request_id_value, peer, trusted_peer, tracing_on);

    // A shadowed request's copy goes with the same (whole) body, unless it is over the route's cap.
    let mut primary_tx = None;
    if let Some(sp) = &plan.shadow
        && body.as_ref().is_none_or(|b| b.len() <= sp.max_body)
    {
        let (tx, rx) = oneshot::channel();
        primary_tx = Some((tx, sp.max_body));
        // The shadow side can tell a copy from real traffic (to skip mail, say).
        let mut headers = head.headers.clone();
        headers.insert("x-queue-shadow", HeaderValue::from_static("1"));
        if sp.side == Side::Legacy {
            strip_queue_credentials(&mut headers, &state.cookie);
        }
        state.shadow.submit(Job {
            route: plan.route.to_string(),
            table_version: version.to_string(),
            request_id: request_id.clone(),
            method: head.method.clone(),
            path: path.to_string(),
            url: format!("{}{}{}", sp.upstream.base, sp.path, query.map(|q| format!("?{q}")).unwrap_or_default()),
            headers,
            body: body.clone().unwrap_or_default(),
            shadow_side: sp.side,
            timeout: sp.upstream.response_timeout,
            ignore: sp.ignore.clone(),
            max_body: sp.max_body,
            primary: rx,
        });
    }
    if plan.side == Side::Legacy {
        strip_queue_credentials(&mut head.headers, &state.cookie);
    }
    let body = ReqBody::Full(body);

    // The response timeout runs from the start of the exchange (the body is in hand).
    let deadline = tokio::time::Instant::now() + plan.upstream.response_timeout;
    let sent =
        w.deadlines.within(deadline, send(w, head, plan.upstream, plan.path.as_deref(), &client_uri, body)).await;
    let side = plan.side.as_str();
    let resp = match sent {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            let (status, code, what) = match e {
                SendError::ConnectTimeout => {
                    (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "did not accept the connection in time")
                }
                SendError::Connect => (StatusCode::BAD_GATEWAY, "upstream_unavailable", "could not be connected to"),
                SendError::Failed => {
                    (StatusCode::BAD_GATEWAY, "upstream_failed", "closed the connection or sent an invalid response")
                }
            };
            return failed(state, &loaded, &plan, status, code, what, &request_id, started, method, path);
        }
        None => {
            let what = format!("did not answer within {} ms", plan.upstream.response_timeout_ms);
            return failed(
                state,
                &loaded,
                &plan,
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                &what,
                &request_id,
                started,
                method,
                path,
            );
        }
    };

    let (mut parts, upstream_body) = resp;
    let status = parts.status.as_u16();
    let elapsed = started.elapsed();
    loaded.metrics.observe(&state.metrics, plan.index, plan.route, plan.side, status, version, elapsed.as_secs_f64());
    access_log(
        method,
        path,
        plan.route,
        side,
        plan.reason,
        version,
        status,
        elapsed,
        &request_id,
        &plan.upstream.name,
        plan.shadow.as_ref().map(|s| s.side),
    );

    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(REQUEST_ID_HEADER, request_id_value);
    // With a known length, hyper stops polling a body once that many bytes are written: the
    // tee hands its copy over when the last byte passes, not at the end of the stream.
    let remaining = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let tee = primary_tx.map(|(tx, cap)| Tee { tx: Some(tx), buf: Vec::new(), cap, over: false, status, remaining });
    let body = Relay {
        inner: upstream_body,
        tee,
        read_timeout: state.read_timeout,
        pause: None,
        _permit: permit,
        _client: client_slot,
    };
    Response::from_parts(parts, RespBody::Relay(body))
}

#[allow(clippy::too_many_arguments)]
fn failed(
    state: &ProxyState,
    loaded: &Loaded,
    plan: &Plan<'_>,
    status: StatusCode,
    code: &str,
    what: &str,
    request_id: &str,
    started: Instant,
    method: &str,
    path: &str,
) -> Response<RespBody> {
    let side = plan.side.as_str();
    let version = loaded.table.version.as_str();
    let elapsed = started.elapsed();
    state.metrics.upstream_error(plan.route, side, code, version);
    loaded.metrics.observe(
        &state.metrics,
        plan.index,
        plan.route,
        plan.side,
        status.as_u16(),
        version,
        elapsed.as_secs_f64(),
    );
    access_log(
        method,
        path,
        plan.route,
        side,
        plan.reason,
        version,
        status.as_u16(),
        elapsed,
        request_id,
        &plan.upstream.name,
        None,
    );
    let message = format!("the {side} upstream ({}) {what}", plan.upstream.name);
    error(status, code, &message, side, &plan.upstream.name, plan.route, request_id)
}

/// The synthetic error answer, from one place: `{"error": {code, message, side, upstream, route}}`.
/// `side` is `legacy` or `queue` for an upstream's failure, `proxy` for the proxy's own refusals.
fn error(
    status: StatusCode,
    code: &str,
    message: &str,
    side: &'static str,
    upstream: &str,
    route: &str,
    request_id: &str,
) -> Response<RespBody> {
    let body = serde_json::json!({"error": {
        "code": code, "message": message, "side": side, "upstream": upstream, "route": route,
    }});
    let mut r = Response::new(RespBody::Full(Some(Bytes::from(body.to_string()))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(REQUEST_ID_HEADER, v);
    }
    h.insert("x-queue-proxy-error", HeaderValue::from_static(side));
    r
}

/// The proxy's own refusal of a client's request, before an upstream was chosen (counted).
fn refused(
    state: &ProxyState,
    status: StatusCode,
    code: &'static str,
    message: &str,
    request_id: &str,
) -> Response<RespBody> {
    state.metrics.client_refusals.with_label_values(&[code]).inc();
    error(status, code, message, "proxy", "-", "none", request_id)
}

/// `r`, closing the connection after it: the request's body was not read to its end.
fn closing(mut r: Response<RespBody>) -> Response<RespBody> {
    r.headers_mut().insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// Whether `path` (with upper-case letters) matches another route once lower-cased than it
/// matches as it is: an upstream that ignores letter case (as some legacy servers do) would
/// serve it as that other route, so the proxy cannot decide it safely.
fn letter_case_variant(table: &crate::table::Table, method: &str, path: &str, found: Option<usize>) -> bool {
    if !path.bytes().any(|b| b.is_ascii_uppercase()) {
        return false;
    }
    let lower = path.to_ascii_lowercase();
    table.find(method, &lower).is_some_and(|m| Some(m.index) != found)
}

/// Whether a bearer token has the shape of a Queue session token: 43 base64url characters
/// (auth's `new_token`, 32 random bytes). Service tokens (JWTs, with dots) do not.
fn looks_like_session_token(t: &str) -> bool {
    t.len() == 43 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Removes what would hand a Queue session to the legacy side: the session cookie (other
/// cookies are kept) and an `Authorization: Bearer` that looks like a Queue session token.
fn strip_queue_credentials(h: &mut HeaderMap, cookie: &str) {
    let bearer_is_session = h.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.trim().split_once(' ').is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer") && looks_like_session_token(token.trim())
        })
    });
    if bearer_is_session {
        h.remove(http::header::AUTHORIZATION);
    }
    let is_session = |pair: &str| pair.split_once('=').is_some_and(|(name, _)| name.trim() == cookie);
    let carries =
        h.get_all(http::header::COOKIE).iter().any(|v| v.to_str().map_or(true, |v| v.split(';').any(is_session)));
    if !carries {
        return;
    }
    // Cookie values that are not text are dropped with it: nothing can be kept safely.
    let kept: Vec<&str> = h
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !is_session(pair))
        .collect();
    let rebuilt = (!kept.is_empty()).then(|| HeaderValue::from_str(&kept.join("; ")).ok()).flatten();
    h.remove(http::header::COOKIE);
    if let Some(v) = rebuilt {
        h.insert(http::header::COOKIE, v);
    }
}

#[allow(clippy::too_many_arguments)]
fn access_log(
    method: &str,
    path: &str,
    route: &str,
    side: &str,
    reason: Reason,
    version: &str,
    status: u16,
    elapsed: std::time::Duration,
    request_id: &str,
    upstream: &str,
    shadow: Option<Side>,
) {
    tracing::info!(
        target: "queue_proxy::access",
        method,
        path,
        route,
        side,
        reason = reason.as_str(),
        upstream,
        table_version = version,
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        request_id,
        shadow = shadow.map(Side::as_str),
        "access"
    );
}

/// A uniform bucket from 0 to 9999 for shadow sampling (no system call per request).
fn sample_bucket() -> u32 {
    use std::cell::Cell;
    thread_local! {
        static RNG: Cell<u64> = Cell::new((uuid::Uuid::new_v4().as_u128() as u64) | 1);
    }
    RNG.with(|r| {
        // xorshift64*
        let mut x = r.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        r.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32 % 10_000
    })
}

/// The incoming `x-request-id` when it is a sane token, else a new one.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map(str::to_string)
        .unwrap_or_else(queue_platform::telemetry::new_id)
}

/// Removes `traceparent` and `tracestate`: an untrusted client's trace context goes no further.
fn strip_trace_context(h: &mut HeaderMap) {
    h.remove(TRACEPARENT);
    h.remove(TRACESTATE);
}

/// The header names listed in `Connection` (lower-cased), other than the hop-by-hop ones
/// removed anyway; none (no allocation) in the usual case (`Connection: keep-alive`).
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    let tokens = || {
        headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !HOP_BY_HOP_NAMES.iter().any(|h| h.eq_ignore_ascii_case(t)))
    };
    if tokens().next().is_none() {
        return Vec::new();
    }
    tokens().map(str::to_ascii_lowercase).collect()
}

/// Bits for the hop-by-hop names (0-8, in [`HOP_BY_HOP`]'s order) and the forwarding names
/// (9-13, in [`FORWARDING`]'s order) present in `headers`: one pass over the names, no lookups
/// (a lookup hashes the name; most messages carry few of these).
fn present(headers: &HeaderMap) -> u32 {
    let mut mask = 0;
    for name in headers.keys() {
        let bit = match name.as_str() {
            "connection" => 0,
            "keep-alive" => 1,
            "proxy-authenticate" => 2,
            "proxy-authorization" => 3,
            "proxy-connection" => 4,
            "te" => 5,
            "trailer" => 6,
            "transfer-encoding" => 7,
            "upgrade" => 8,
            "x-forwarded-for" => 9,
            "x-forwarded-proto" => 10,
            "x-forwarded-host" => 11,
            "forwarded" => 12,
            "x-queue-shadow" => 13,
            _ => continue,
        };
        mask |= 1 << bit;
    }
    mask
}

/// Removes the hop-by-hop headers and those `Connection` names, in place.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mask = present(headers);
    strip_present(headers, mask);
}

/// [`strip_hop_by_hop`] with [`present`]'s answer at hand.
fn strip_present(headers: &mut HeaderMap, mask: u32) {
    if mask & 0x1ff == 0 {
        return;
    }
    let tokens = if mask & 1 != 0 { connection_tokens(headers) } else { Vec::new() };
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if mask & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    for t in &tokens {
        headers.remove(t.as_str());
    }
}

/// Turns the client's headers into the ones sent upstream, in place: minus hop-by-hop ones
/// and `Host`, plus `X-Forwarded-For/Proto/Host`, the request id and `traceparent`.
/// Forwarding headers from an untrusted peer are replaced, never extended, so a client cannot
/// forge its address.
fn upstream_headers(h: &mut HeaderMap, request_id: &HeaderValue, peer: IpAddr, trusted_peer: bool, tracing_on: bool) {
    // A chunked request's body is forwarded at its decoded length: never with the client's
    // Content-Length beside it (a mismatch is how requests get smuggled).
    if h.contains_key(http::header::TRANSFER_ENCODING) {
        h.remove(http::header::CONTENT_LENGTH);
    }
    let mask = present(h);
    strip_present(h, mask);
    let host = h.remove(http::header::HOST);
    // Room for the four headers added below (one growth at most).
    h.reserve(4);
    let mut take = |i: usize| if mask & (1 << (9 + i)) != 0 { h.remove(&FORWARDING[i]) } else { None };
    let prev_xff = take(0);
    let prev_proto = take(1);
    let prev_host = take(2);
    take(3);
    // Only the proxy marks shadow copies.
    take(4);

    let xff = match (trusted_peer, prev_xff.as_ref().and_then(|v| v.to_str().ok())) {
        (true, Some(prev)) => HeaderValue::from_str(&format!("{prev}, {peer}")).ok(),
        _ => peer_value(peer),
    };
    if let Some(v) = xff {
        h.insert(FORWARDING[0].clone(), v);
    }
    let proto = prev_proto.filter(|v| trusted_peer && v.to_str().is_ok());
    h.insert(FORWARDING[1].clone(), proto.unwrap_or(HeaderValue::from_static("http")));
    let forwarded_host =
        prev_host.filter(|v| trusted_peer && v.to_str().is_ok()).or(host.filter(|v| v.to_str().is_ok()));
    if let Some(v) = forwarded_host {
        h.insert(FORWARDING[2].clone(), v);
    }
    h.insert(REQUEST_ID_HEADER, request_id.clone());
    // A trusted proxy's trace context passes on (under the proxy's own span when tracing is
    // on); an untrusted client's never does: the upstream would continue it.
    if !trusted_peer {
        strip_trace_context(h);
    }
    if tracing_on {
        queue_platform::telemetry::inject_current(h);
    }
}

/// The peer's address as a header value; the last one is kept per thread (a keep-alive
/// connection sends many requests from one address), so it is formatted once.
fn peer_value(peer: IpAddr) -> Option<HeaderValue> {
    use std::cell::RefCell;
    thread_local! {
        static LAST: RefCell<Option<(IpAddr, HeaderValue)>> = const { RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((ip, v)) = last.as_ref()
            && *ip == peer
        {
            return Some(v.clone());
        }
        let v = HeaderValue::from_str(&peer.to_string()).ok()?;
        *last = Some((peer, v.clone()));
        Some(v)
    })
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// The data frames of a body as a stream (trailers are not forwarded).
fn data_stream<B>(body: B) -> ByteStream
where
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Box::pin(futures_util::stream::unfold(body, |mut body| async move {
        loop {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                None => return None,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Some((Ok(data), body));
                    }
                }
                Some(Err(e)) => return Some((Err(std::io::Error::other(e)), body)),
            }
        }
    }))
}

enum BodyError {
    TooLarge,
    Failed,
}

/// The request's whole body (`None` when it has none), at most `limit` bytes. A declared
/// `Content-Length` over the limit is refused before anything is read.
async fn read_body(body: Incoming, headers: &HeaderMap, limit: usize) -> Result<Option<Bytes>, BodyError> {
    if body.is_end_stream() {
        return Ok(None);
    }
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut stream = data_stream(body);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| BodyError::Failed)?;
        len += chunk.len();
        if len > limit {
            return Err(BodyError::TooLarge);
        }
        chunks.push(chunk);
    }
    Ok(Some(match chunks.len() {
        // One frame (the usual small body): no copy.
        1 => chunks.swap_remove(0),
        _ => {
            let mut whole = Vec::with_capacity(len);
            for c in &chunks {
                whole.extend_from_slice(c);
            }
            Bytes::from(whole)
        }
    }))
}

/// Copies the primary's body for the shadow comparison as it streams past (up to the cap).
struct Tee {
    tx: Option<oneshot::Sender<Outcome>>,
    buf: Vec<u8>,
    cap: usize,
    over: bool,
    status: u16,
    /// Bytes still to come, when the response has a `Content-Length`.
    remaining: Option<u64>,
}

impl Tee {
    /// Hands the copy to the shadow comparison (once).
    fn finish(&mut self) {
        if let Some(tx) = self.tx.take() {
            let body = (!self.over).then(|| Bytes::from(std::mem::take(&mut self.buf)));
            let _ = tx.send(Outcome { status: self.status, body });
        }
    }
}

/// A request body on its way upstream: the client's as it came (to the platform endpoints),
/// or whole (a forwarded request's, read before it took an upstream slot).
pub enum ReqBody {
    Incoming(Incoming),
    Full(Option<Bytes>),
}

impl hyper::body::Body for ReqBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            ReqBody::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            ReqBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Incoming(b) => b.is_end_stream(),
            ReqBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Incoming(b) => b.size_hint(),
            ReqBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// A response body on its way to the client: a proxy error's, a platform endpoint's, or an
/// upstream's (relayed, with its permit, read timeout and shadow tee).
pub enum RespBody {
    Full(Option<Bytes>),
    Plain(UpBody),
    Relay(Relay),
}

impl hyper::body::Body for RespBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            RespBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            RespBody::Plain(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            RespBody::Relay(r) => r.poll_data(cx).map(|c| c.map(|c| c.map(Frame::data).map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RespBody::Full(b) => b.is_none(),
            RespBody::Plain(b) => b.is_end_stream(),
            RespBody::Relay(r) => match &r.inner {
                UpstreamBody::Direct(b) => b.is_end_stream() && r.tee.as_ref().is_none_or(|t| t.tx.is_none()),
                UpstreamBody::Reqwest(_) => false,
            },
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RespBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            RespBody::Plain(b) => b.size_hint(),
            RespBody::Relay(r) => match &r.inner {
                UpstreamBody::Direct(b) => b.size_hint(),
                UpstreamBody::Reqwest(_) => SizeHint::default(),
            },
        }
    }
}

/// An upstream's response body: from the hyper client (plain http upstreams), or from reqwest
/// (https upstreams, which need its TLS set-up).
enum UpstreamBody {
    Direct(UpBody),
    Reqwest(ByteStream),
}

/// Sends one request upstream and returns its response head and body. Plain-http upstreams
/// (the usual in-cluster case) go through the worker's connection pool (pool.rs), in origin
/// form with the prefix parsed when the table was loaded; https upstreams go through reqwest
/// (rustls with the platform's verifier).
async fn send(
    w: &Worker,
    mut head: http::request::Parts,
    upstream: &Upstream,
    path: Option<&str>,
    client_uri: &http::Uri,
    body: ReqBody,
) -> Result<(http::response::Parts, UpstreamBody), SendError> {
    let query = client_uri.query();
    if let Some((authority, prefix)) = &upstream.plain {
        let path_and_query = match (prefix.is_empty(), path) {
            // The client's path and query, as they came (no parsing).
            (true, None) => client_uri.path_and_query().cloned(),
            _ => {
                let p = path.unwrap_or(client_uri.path());
                let mut s = String::with_capacity(prefix.len() + p.len() + query.map_or(0, |q| q.len() + 1));
                s.push_str(prefix);
                s.push_str(p);
                if let Some(q) = query {
                    s.push('?');
                    s.push_str(q);
                }
                Some(http::uri::PathAndQuery::try_from(s).map_err(|_| SendError::Failed)?)
            }
        };
        head.uri = match path_and_query {
            Some(pq) => pq.into(),
            None => http::Uri::from_static("/"),
        };
        // `Host` is the upstream's authority, written by the pool's exchange (upstream.rs).
        let (parts, body) = w.pool.send(authority, head, body).await?;
        return Ok((parts, UpstreamBody::Direct(body)));
    }
    let url = format!(
        "{}{}{}{}",
        upstream.base,
        path.unwrap_or(client_uri.path()),
        if query.is_some() { "?" } else { "" },
        query.unwrap_or("")
    );
    let mut request = w.state.http.request(head.method, &url).headers(head.headers);
    match body {
        ReqBody::Incoming(b) if b.is_end_stream() => {}
        ReqBody::Incoming(b) => request = request.body(reqwest::Body::wrap_stream(data_stream(b))),
        ReqBody::Full(Some(b)) => request = request.body(b),
        ReqBody::Full(None) => {}
    }
    match request.send().await {
        Ok(r) => {
            let r = http::Response::from(r);
            let (parts, body) = r.into_parts();
            Ok((parts, UpstreamBody::Reqwest(data_stream(body))))
        }
        Err(e) if e.is_timeout() => Err(SendError::ConnectTimeout),
        Err(e) if e.is_connect() => Err(SendError::Connect),
        Err(_) => Err(SendError::Failed),
    }
}

/// The upstream body on its way to the client; holds the upstream's in-flight permit until
/// the body is done (or the client goes away). A pause longer than `read_timeout` while
/// reading it ends the body with an error (the client's connection is aborted).
pub struct Relay {
    inner: UpstreamBody,
    tee: Option<Tee>,
    read_timeout: Duration,
    /// Armed only while the upstream keeps us waiting; reused across pauses.
    pause: Option<(bool, Pin<Box<tokio::time::Sleep>>)>,
    _permit: OwnedSemaphorePermit,
    /// The client's place in its per-client cap, given back with the permit.
    _client: ClientSlot,
}

impl Relay {
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        match &mut self.inner {
            UpstreamBody::Direct(body) => loop {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            return Poll::Ready(Some(Ok(data)));
                        }
                        // Trailers are not forwarded.
                    }
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(std::io::Error::other(e)))),
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                }
            },
            UpstreamBody::Reqwest(s) => s.as_mut().poll_next(cx),
        }
    }

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        let polled = self.poll_inner(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some((armed, _)) = self.pause.as_mut() {
                    *armed = false;
                }
                if let Some(t) = self.tee.as_mut() {
                    if !t.over {
                        if t.buf.len() + chunk.len() > t.cap {
                            t.over = true;
                            t.buf = Vec::new();
                        } else {
                            t.buf.extend_from_slice(chunk);
                        }
                    }
                    if let Some(r) = t.remaining.as_mut() {
                        *r = r.saturating_sub(chunk.len() as u64);
                        if *r == 0 {
                            t.finish();
                        }
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(t) = self.tee.as_mut() {
                    t.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => {}
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + self.read_timeout;
                let (armed, sleep) =
                    self.pause.get_or_insert_with(|| (false, Box::pin(tokio::time::sleep_until(deadline))));
                if !*armed {
                    sleep.as_mut().reset(deadline);
                    *armed = true;
                }
                if sleep.as_mut().poll(cx).is_ready() {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the upstream paused longer than the read timeout",
                    );
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn queue_credentials_are_stripped_and_other_cookies_kept() {
        let session = "A".repeat(43);
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, HeaderValue::from_str("theme=dark; queue_session=abc").unwrap());
        h.append(http::header::COOKIE, HeaderValue::from_static("queue_session_x=1;lang=en"));
        h.insert(http::header::AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {session}")).unwrap());
        strip_queue_credentials(&mut h, "queue_session");
        assert_eq!(
            h.get_all(http::header::COOKIE).iter().collect::<Vec<_>>(),
            ["theme=dark; queue_session_x=1; lang=en"]
        );
        assert!(h.get(http::header::AUTHORIZATION).is_none());

        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, HeaderValue::from_static("queue_session=abc"));
        h.insert(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer raptor.jwt.token"));
        strip_queue_credentials(&mut h, "queue_session");
        assert!(h.get(http::header::COOKIE).is_none(), "a cookie header with only the session goes");
        assert_eq!(h[http::header::AUTHORIZATION], "Bearer raptor.jwt.token", "other bearers stay");
    }

    #[test]
    fn present_bits_follow_the_name_lists() {
        assert_eq!(HOP_BY_HOP.map(|n| n.as_str().to_string()), HOP_BY_HOP_NAMES.map(str::to_string));
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), HeaderValue::from_static("x"));
            h.insert(http::header::HOST, HeaderValue::from_static("h"));
            assert_eq!(present(&h), 1 << i, "{name}");
        }
        for (i, name) in FORWARDING.iter().enumerate() {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), HeaderValue::from_static("x"));
            assert_eq!(present(&h), 1 << (9 + i), "{name}");
        }
        let mut h = HeaderMap::new();
        h.insert(http::header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert(HeaderName::from_static("x-secret"), HeaderValue::from_static("s"));
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["content-type"]);
    }

    #[test]
    fn sample_buckets_spread_over_the_range() {
        let below_ten_percent = (0..100_000).filter(|_| sample_bucket() < 1_000).count();
        assert!((9_000..11_000).contains(&below_ten_percent), "{below_ten_percent}");
    }
}
