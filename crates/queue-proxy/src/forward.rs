//! Forwarding: every path the platform endpoints do not claim comes here. The request is
//! matched against the table in force (loaded once, held to the end of the request), sent to
//! the chosen side over pooled keep-alive connections with bodies streamed both ways, and
//! answered with the upstream's response — or a JSON 502/503/504 naming the side that failed.

use actix_web::body::{BodyStream, SizedStream};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::{Stream, StreamExt};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::ProxyState;
use crate::shadow::{Job, Outcome};
use crate::table::{Cohort, Reason, Side, Upstream, bucket, in_percent};

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded in either direction.
const HOP_BY_HOP: [&str; 9] = [
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

pub const REQUEST_ID: &str = "x-request-id";

/// Where one request goes.
struct Plan<'t> {
    route: &'t str,
    side: Side,
    reason: Reason,
    upstream: &'t Upstream,
    path: String,
    shadow: Option<ShadowPlan<'t>>,
}

struct ShadowPlan<'t> {
    side: Side,
    upstream: &'t Upstream,
    path: String,
    ignore: Arc<Vec<String>>,
    max_body: usize,
}

pub async fn forward(req: HttpRequest, payload: web::Payload, state: web::Data<ProxyState>) -> HttpResponse {
    // Forwarded requests skip the platform's per-request span and metrics (the proxy records
    // its own per route). With tracing on, this span continues the client's `traceparent` and
    // becomes the upstream's parent; otherwise it is disabled and costs nothing.
    let span = tracing::info_span!("proxy.forward", otel.kind = "server", http.method = %req.method());
    if !span.is_disabled() {
        let _ = span.set_parent(queue_platform::telemetry::extract_parent(req.headers()));
    }
    forward_in(req, payload, state).instrument(span).await
}

async fn forward_in(req: HttpRequest, payload: web::Payload, state: web::Data<ProxyState>) -> HttpResponse {
    let started = Instant::now();
    let loaded = state.tables.current();
    let table = &loaded.table;
    let version = table.version.as_str();
    let request_id = request_id(&req);
    let path = req.uri().path();
    let method = req.method().as_str();
    let peer = req.peer_addr().map(|a| a.ip());
    let trusted_peer = peer.is_some_and(|p| state.trusted_proxies.contains(&p));
    let client_ip = client_ip(&req, peer, trusted_peer, &state.trusted_proxies);
    if has_dot_segment(path) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_path",
            "the path has `.` or `..` segments; send the normalised path",
            "proxy",
            "-",
            "none",
            &request_id,
        );
    }
    let header_bytes: usize = req.headers().iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
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

    let plan = match table.find(method, path) {
        Some(m) => {
            let route = m.route;
            let (side, reason) = match table.static_side(route) {
                Some(s) => s,
                None => {
                    let canary = route.canary.as_ref().map(|c| (c.percent, c.cohort)).unwrap_or((0.0, Cohort::Client));
                    let key = state.cohort_key(&req, canary.1, client_ip).await;
                    let on_queue = in_percent(bucket(&table.canary_salt, &key), canary.0);
                    (if on_queue { Side::Queue } else { Side::Legacy }, Reason::Canary)
                }
            };
            let target = |s: Side| match s {
                Side::Legacy => (table.upstream(Side::Legacy, &route.legacy), path.to_string()),
                Side::Queue => (table.upstream(Side::Queue, &route.queue_service), table.queue_path(&m, path)),
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
                    path: p,
                    ignore: Arc::new(s.ignore.clone()),
                    max_body: s.max_body_bytes,
                })
            });
            Plan { route: &route.name, side, reason, upstream, path: target_path, shadow }
        }
        None => match table.default_legacy.as_deref().and_then(|d| table.upstream(Side::Legacy, d)) {
            Some(upstream) => Plan {
                route: "default",
                side: Side::Legacy,
                reason: Reason::Default,
                upstream,
                path: path.to_string(),
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
        r.headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, actix_web::http::header::HeaderValue::from_static("1"));
        return r;
    };

    let query = req.uri().query();
    let mut url = String::with_capacity(plan.upstream.base.len() + plan.path.len() + query.map_or(0, |q| q.len() + 1));
    url.push_str(&plan.upstream.base);
    url.push_str(&plan.path);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    let tracing_on = !tracing::Span::current().is_disabled();
    let headers = upstream_headers(&req, &request_id, peer, trusted_peer, tracing_on);
    let method = match http::Method::from_bytes(method.as_bytes()) {
        Ok(m) => m,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "unsupported method",
                "proxy",
                "-",
                plan.route,
                &request_id,
            );
        }
    };

    // A shadowed request's body is needed twice: buffer it (up to the cap), else stream it.
    let mut primary_tx = None;
    let body = if let Some(sp) = &plan.shadow {
        match buffer(payload, sp.max_body).await {
            Buffered::Whole(bytes) => {
                let (tx, rx) = oneshot::channel();
                primary_tx = Some((tx, sp.max_body));
                state.shadow.submit(Job {
                    route: plan.route.to_string(),
                    table_version: version.to_string(),
                    request_id: request_id.clone(),
                    method: method.clone(),
                    path: path.to_string(),
                    url: format!(
                        "{}{}{}",
                        sp.upstream.base,
                        sp.path,
                        query.map(|q| format!("?{q}")).unwrap_or_default()
                    ),
                    headers: {
                        // The shadow side can tell a copy from real traffic (to skip mail, say).
                        let mut h = headers.clone();
                        h.insert("x-queue-shadow", http::HeaderValue::from_static("1"));
                        h
                    },
                    body: bytes.clone(),
                    shadow_side: sp.side,
                    timeout: sp.upstream.response_timeout,
                    ignore: sp.ignore.clone(),
                    max_body: sp.max_body,
                    primary: rx,
                });
                ReqBody::Full(Some(bytes))
            }
            Buffered::TooLarge(stream) => ReqBody::Stream(stream),
            Buffered::Failed => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the request body could not be read",
                    "proxy",
                    "-",
                    plan.route,
                    &request_id,
                );
            }
        }
    } else if has_body(&req) {
        ReqBody::Stream(bridge(payload.into_inner()))
    } else {
        ReqBody::Empty
    };

    let sent = tokio::time::timeout(plan.upstream.response_timeout, send(&state, method, url, headers, body)).await;
    let side = plan.side.as_str();
    let resp = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let (status, code, what) = match e {
                SendError::ConnectTimeout => {
                    (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "did not accept the connection in time")
                }
                SendError::Connect => (StatusCode::BAD_GATEWAY, "upstream_unavailable", "could not be connected to"),
                SendError::Failed => {
                    (StatusCode::BAD_GATEWAY, "upstream_failed", "closed the connection or sent an invalid response")
                }
            };
            return failed(&state, &plan, status, code, what, version, &request_id, started, &req);
        }
        Err(_) => {
            let what = format!("did not answer within {} ms", plan.upstream.response_timeout_ms);
            return failed(
                &state,
                &plan,
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                &what,
                version,
                &request_id,
                started,
                &req,
            );
        }
    };

    let (parts, upstream_body) = resp;
    let status = parts.status.as_u16();
    let elapsed = started.elapsed();
    state.metrics.observe(plan.route, side, status, version, elapsed.as_secs_f64());
    access_log(
        &req,
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

    let mut builder = HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY));
    let connection_tokens =
        connection_tokens(parts.headers.get_all("connection").iter().filter_map(|v| v.to_str().ok()));
    let mut length = None;
    for (name, value) in &parts.headers {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || connection_tokens.iter().any(|t| t == n) {
            continue;
        }
        if n == "content-length" {
            length = value.to_str().ok().and_then(|v| v.parse::<u64>().ok());
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            actix_web::http::header::HeaderName::from_bytes(n.as_bytes()),
            actix_web::http::header::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            builder.append_header((n, v));
        }
    }
    builder.insert_header((REQUEST_ID, request_id.as_str()));
    let tee = primary_tx.map(|(tx, cap)| Tee { tx: Some(tx), buf: Vec::new(), cap, over: false, status });
    let body = Relay { inner: upstream_body, tee, read_timeout: state.read_timeout, pause: None, _permit: permit };
    match length {
        Some(len) => builder.body(SizedStream::new(len, body)),
        None => builder.body(BodyStream::new(body)),
    }
}

#[allow(clippy::too_many_arguments)]
fn failed(
    state: &ProxyState,
    plan: &Plan<'_>,
    status: StatusCode,
    code: &str,
    what: &str,
    version: &str,
    request_id: &str,
    started: Instant,
    req: &HttpRequest,
) -> HttpResponse {
    let side = plan.side.as_str();
    let elapsed = started.elapsed();
    state.metrics.upstream_error(plan.route, side, code, version);
    state.metrics.observe(plan.route, side, status.as_u16(), version, elapsed.as_secs_f64());
    access_log(
        req,
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
    side: &str,
    upstream: &str,
    route: &str,
    request_id: &str,
) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((REQUEST_ID, request_id))
        .insert_header(("x-queue-proxy-error", side))
        .json(serde_json::json!({"error": {
            "code": code, "message": message, "side": side, "upstream": upstream, "route": route,
        }}))
}

#[allow(clippy::too_many_arguments)]
fn access_log(
    req: &HttpRequest,
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
        method = %req.method(),
        path = req.uri().path(),
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
fn request_id(req: &HttpRequest) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        })
        .map(str::to_string)
        .unwrap_or_else(new_request_id)
}

/// A new request id: 32 hex digits, unique without a system call per request. Each worker
/// thread draws a random 64-bit prefix once; the suffix is a bijective mix (splitmix64) of a
/// per-thread counter, so ids never repeat within a thread and differ across threads and
/// restarts. Not a secret: nothing is authorised by a request id.
fn new_request_id() -> String {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<(u64, u64)> = Cell::new({
            let r = uuid::Uuid::new_v4().as_u128();
            ((r >> 64) as u64, r as u64)
        });
    }
    let (prefix, counter) = STATE.with(|s| {
        let (p, c) = s.get();
        s.set((p, c.wrapping_add(1)));
        (p, c)
    });
    let mut z = counter.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    format!("{prefix:016x}{z:016x}")
}

/// The client's address: the peer, or — when the peer is a trusted proxy — the right-most
/// address in `X-Forwarded-For` that is not itself a trusted proxy.
fn client_ip(req: &HttpRequest, peer: Option<IpAddr>, trusted_peer: bool, trusted: &[IpAddr]) -> Option<IpAddr> {
    if trusted_peer {
        let chain: Vec<IpAddr> = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        if let Some(ip) = chain.iter().rev().find(|ip| !trusted.contains(ip)) {
            return Some(*ip);
        }
    }
    peer
}

fn connection_tokens<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    values.flat_map(|v| v.split(',')).map(|t| t.trim().to_ascii_lowercase()).filter(|t| !t.is_empty()).collect()
}

/// The headers sent upstream: the client's, minus hop-by-hop ones and `Host`, plus
/// `X-Forwarded-For/Proto/Host`, the request id and `traceparent`. Forwarding headers from
/// an untrusted peer are replaced, never extended, so a client cannot forge its address.
fn upstream_headers(
    req: &HttpRequest,
    request_id: &str,
    peer: Option<IpAddr>,
    trusted_peer: bool,
    tracing_on: bool,
) -> http::HeaderMap {
    use http::header::{HeaderMap, HeaderName, HeaderValue};
    let incoming = req.headers();
    let tokens = connection_tokens(incoming.get_all("connection").filter_map(|v| v.to_str().ok()));
    let mut out = HeaderMap::with_capacity(incoming.len() + 4);
    for (name, value) in incoming {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n)
            || tokens.iter().any(|t| t == n)
            || matches!(
                n,
                "host" | "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" | "forwarded" | REQUEST_ID
            )
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_bytes(value.as_bytes())) {
            out.append(n, v);
        }
    }
    let get = |n: &str| incoming.get(n).and_then(|v| v.to_str().ok());
    let peer_s = peer.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into());
    let xff = match (trusted_peer, get("x-forwarded-for")) {
        (true, Some(prev)) => format!("{prev}, {peer_s}"),
        _ => peer_s,
    };
    let proto = if trusted_peer { get("x-forwarded-proto") } else { None }.unwrap_or("http");
    let host = if trusted_peer { get("x-forwarded-host") } else { None }.or_else(|| get("host"));
    let mut set = |n: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            out.insert(HeaderName::from_static(n), v);
        }
    };
    set("x-forwarded-for", &xff);
    set("x-forwarded-proto", proto);
    if let Some(h) = host {
        set("x-forwarded-host", h);
    }
    set(REQUEST_ID, request_id);
    // A chunked request's body is forwarded at its decoded length: never with the client's
    // Content-Length beside it (a mismatch is how requests get smuggled).
    if incoming.contains_key("transfer-encoding") {
        out.remove(http::header::CONTENT_LENGTH);
    }
    // Only the proxy marks shadow copies.
    out.remove("x-queue-shadow");
    // The proxy's own span becomes the parent when tracing is on; else the incoming
    // `traceparent` (copied above) passes through unchanged.
    if tracing_on {
        queue_platform::telemetry::inject_current(&mut out);
    }
    out
}

/// Whether any segment is `.` or `..`, also percent-encoded: such a path could match one route
/// here and reach another path upstream once the upstream normalises it.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|seg| {
        // `.`, `..`, and the same with any `.` written `%2e` / `%2E` (no allocation).
        let b = seg.as_bytes();
        let dot_at = |i: usize| match b.get(i) {
            Some(b'.') => Some(1),
            Some(b'%') if b.get(i + 1) == Some(&b'2') && matches!(b.get(i + 2), Some(b'e' | b'E')) => Some(3),
            _ => None,
        };
        match dot_at(0) {
            Some(n) if n == b.len() => true,
            Some(n) => dot_at(n).is_some_and(|m| n + m == b.len()),
            None => false,
        }
    })
}

fn has_body(req: &HttpRequest) -> bool {
    let h = req.headers();
    h.contains_key("transfer-encoding")
        || h.get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// actix's payload is tied to its worker thread; reqwest wants a `Send` stream. A small task
/// on the worker reads the payload into a channel of depth 4 (back-pressure both ways).
fn bridge(mut payload: actix_web::dev::Payload) -> ByteStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    actix_web::rt::spawn(async move {
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()));
            let stop = chunk.is_err();
            if tx.send(chunk).await.is_err() || stop {
                break;
            }
        }
    });
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }))
}

enum Buffered {
    Whole(Bytes),
    /// Over the cap: what was read so far, then the rest, streamed (no shadow copy).
    TooLarge(ByteStream),
    Failed,
}

async fn buffer(payload: web::Payload, cap: usize) -> Buffered {
    let mut payload = payload.into_inner();
    let mut buf = Vec::new();
    while let Some(chunk) = payload.next().await {
        let Ok(chunk) = chunk else { return Buffered::Failed };
        buf.extend_from_slice(&chunk);
        if buf.len() > cap {
            let head = futures_util::stream::once(async move { Ok(Bytes::from(buf)) });
            return Buffered::TooLarge(Box::pin(head.chain(bridge(payload))));
        }
    }
    Buffered::Whole(Bytes::from(buf))
}

/// Copies the primary's body for the shadow comparison as it streams past (up to the cap).
struct Tee {
    tx: Option<oneshot::Sender<Outcome>>,
    buf: Vec<u8>,
    cap: usize,
    over: bool,
    status: u16,
}

/// A request body on its way upstream: none, whole (a shadowed request's), or streamed.
pub(crate) enum ReqBody {
    Empty,
    Full(Option<Bytes>),
    Stream(ByteStream),
}

impl hyper::body::Body for ReqBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(hyper::body::Frame::data(b)))),
            ReqBody::Stream(s) => s.as_mut().poll_next(cx).map(|c| c.map(|c| c.map(hyper::body::Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Full(b) => b.is_none(),
            ReqBody::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            ReqBody::Empty => hyper::body::SizeHint::with_exact(0),
            ReqBody::Full(b) => hyper::body::SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ReqBody::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

/// Why a request did not get response headers from its upstream.
enum SendError {
    ConnectTimeout,
    Connect,
    Failed,
}

/// An upstream's response body: from the hyper client (plain http upstreams), or from reqwest
/// (https upstreams, which need its TLS set-up).
enum UpstreamBody {
    Hyper(hyper::body::Incoming),
    Reqwest(Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>),
}

/// Sends one request upstream and returns its response head and body. Plain-http upstreams
/// (the usual in-cluster case) go through hyper-util's pooled client directly, without
/// reqwest's URL parsing and layers; https upstreams go through reqwest (rustls with the
/// platform's verifier).
async fn send(
    state: &ProxyState,
    method: http::Method,
    url: String,
    headers: http::HeaderMap,
    body: ReqBody,
) -> Result<(http::response::Parts, UpstreamBody), SendError> {
    if url.starts_with("http://") {
        let Ok(uri) = http::Uri::try_from(url) else { return Err(SendError::Failed) };
        let mut request = http::Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        return match state.upstream.request(request).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                Ok((parts, UpstreamBody::Hyper(body)))
            }
            Err(e) if e.is_connect() => {
                let timed_out = std::iter::successors(std::error::Error::source(&e), |s| s.source()).any(|s| {
                    s.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
                });
                Err(if timed_out { SendError::ConnectTimeout } else { SendError::Connect })
            }
            Err(_) => Err(SendError::Failed),
        };
    }
    let mut request = state.http.request(method, &url).headers(headers);
    match body {
        ReqBody::Empty => {}
        ReqBody::Full(b) => request = request.body(b.unwrap_or_default()),
        ReqBody::Stream(s) => request = request.body(reqwest::Body::wrap_stream(s)),
    }
    match request.send().await {
        Ok(r) => {
            let r = http::Response::from(r);
            let (parts, body) = r.into_parts();
            let stream = http_body_stream(body);
            Ok((parts, UpstreamBody::Reqwest(stream)))
        }
        Err(e) if e.is_timeout() => Err(SendError::ConnectTimeout),
        Err(e) if e.is_connect() => Err(SendError::Connect),
        Err(_) => Err(SendError::Failed),
    }
}

fn http_body_stream(body: reqwest::Body) -> Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>> {
    use hyper::body::Body as _;
    Box::pin(futures_util::stream::unfold(body, |mut body| async move {
        loop {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                None => return None,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Some((Ok(data), body));
                    }
                }
                Some(Err(e)) => return Some((Err(e), body)),
            }
        }
    }))
}

/// The upstream body on its way to the client; holds the upstream's in-flight permit until
/// the body is done (or the client goes away). A pause longer than `read_timeout` while
/// reading it ends the body with an error (the client's connection is aborted).
struct Relay {
    inner: UpstreamBody,
    tee: Option<Tee>,
    read_timeout: Duration,
    /// Armed only while the upstream keeps us waiting; reused across pauses.
    pause: Option<(bool, Pin<Box<tokio::time::Sleep>>)>,
    _permit: OwnedSemaphorePermit,
}

impl Relay {
    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        match &mut self.inner {
            UpstreamBody::Hyper(body) => loop {
                use hyper::body::Body as _;
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
            UpstreamBody::Reqwest(s) => s.as_mut().poll_next(cx).map(|c| c.map(|c| c.map_err(std::io::Error::other))),
        }
    }
}

impl Stream for Relay {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let polled = this.poll_inner(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some((armed, _)) = this.pause.as_mut() {
                    *armed = false;
                }
                if let Some(t) = this.tee.as_mut()
                    && !t.over
                {
                    if t.buf.len() + chunk.len() > t.cap {
                        t.over = true;
                        t.buf = Vec::new();
                    } else {
                        t.buf.extend_from_slice(chunk);
                    }
                }
            }
            Poll::Ready(None) => {
                if let Some(mut t) = this.tee.take()
                    && let Some(tx) = t.tx.take()
                {
                    let body = (!t.over).then(|| Bytes::from(std::mem::take(&mut t.buf)));
                    let _ = tx.send(Outcome { status: t.status, body });
                }
            }
            Poll::Ready(Some(Err(_))) => {}
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.read_timeout;
                let (armed, sleep) =
                    this.pause.get_or_insert_with(|| (false, Box::pin(tokio::time::sleep_until(deadline))));
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
    fn dot_segments_are_found_also_percent_encoded() {
        for p in ["/a/../b", "/a/./b", "/..", "/a/%2e%2E/b", "/a/%2e", "/a/.%2e", "/a/%2E./b", "/a/.."] {
            assert!(has_dot_segment(p), "{p}");
        }
        for p in ["/", "/a/b", "/a/.b", "/a/...", "/a/b.", "/a/%2e%2e%2e", "/a/%2f", "/a/%2", "/a/%", "/.well-known/x"]
        {
            assert!(!has_dot_segment(p), "{p}");
        }
    }

    #[test]
    fn new_request_ids_are_32_hex_digits_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())));
        let other = std::thread::spawn(new_request_id).join().expect("thread");
        assert!(!ids.contains(&other));
    }

    #[test]
    fn sample_buckets_spread_over_the_range() {
        let below_ten_percent = (0..100_000).filter(|_| sample_bucket() < 1_000).count();
        assert!((9_000..11_000).contains(&below_ten_percent), "{below_ten_percent}");
    }
}
