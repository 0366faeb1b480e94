//! One forwarded request, step by step: admit it (canonical path, header size, the client's
//! cap), plan it (plan.rs), read its body whole within its limits, on its way to Queue check
//! for a Raptor session to carry over (carry.rs), take an upstream slot, edit its head
//! (headers.rs; carry.rs swaps the cookies) and queue its shadow copy, send it within the upstream's response
//! timeout (over the worker's pool for plain-http upstreams, reqwest for https ones), and relay
//! the answer (body.rs). Every failure becomes an answer from answer.rs; the table in force is
//! loaded once and held to the end of the request.

use http::header::{HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::{Body as _, Bytes, Incoming};
use std::borrow::Cow;
use std::net::IpAddr;
use std::time::Instant;
use tokio::sync::oneshot;

use super::answer::{self, Answer};
use super::body::{Relay, RespBody, Tee, UpstreamBody, data_stream, read_body};
use super::plan::{self, NoPlan, Plan};
use super::worker::Worker;
use crate::ProxyState;
use crate::canonical;
use crate::carry;
use crate::clients::ClientSlot;
use crate::error::{ForwardError, Kind};
use crate::headers;
use crate::shadow::{Job, Outcome};
use crate::store::Loaded;
use crate::table::{Reason, Side, Upstream};
use crate::upstream::{self, ReqBody};

/// Forwards one request from `peer` and answers it.
pub(super) async fn forward(w: &Worker, req: Request<Incoming>, peer: IpAddr) -> Response<RespBody> {
    let started = Instant::now();
    let state = &*w.state;
    let loaded = state.tables.current();
    let (mut head, body) = req.into_parts();
    let client_uri = std::mem::take(&mut head.uri);
    // Standard methods clone without allocating.
    let client_method = head.method.clone();
    let method = client_method.as_str();
    let request_id = headers::request_id(&head.headers);
    let client_ip = state.trusted_proxies.client_ip(peer, headers::forwarded_for(&head.headers));

    // The route is decided on the canonical path, and that path is what goes upstream.
    let (canonical, client_slot) = match admit(state, &head.headers, client_uri.path(), client_ip) {
        Ok(admitted) => admitted,
        Err(answer) => return answer.respond(&request_id),
    };
    let path: &str = &canonical;
    let rewritten = matches!(canonical, Cow::Owned(_));
    let plan = match plan::plan(state, &loaded.table, &head.headers, method, path, rewritten, client_ip).await {
        Ok(plan) => plan,
        Err(no) => return no_plan(state, no).respond(&request_id),
    };
    let ex = Exchange { state, loaded: &loaded, plan, request_id: &request_id, method, path, started };

    // The body is read whole (within its limits) before the request takes an upstream slot:
    // a client that sends slowly holds only its own connection and its own client slot.
    let body = match ex.read_body(w, body, &head.headers).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };

    // A Raptor session to carry over to Queue (auth asked before an upstream slot is taken).
    let carried = match ex.plan.side {
        Side::Queue => carry::check(state, &head.headers).await,
        Side::Legacy => None,
    };

    // The upstream slot: taken only now that the exchange can start at once.
    let Ok(permit) = ex.plan.upstream.in_flight.clone().try_acquire_owned() else {
        return ex.overloaded();
    };

    let tracing_on = !tracing::Span::current().is_disabled();
    // The request id was checked (or made) to be a token: a valid header value.
    let request_id_value = HeaderValue::from_str(&request_id).unwrap_or(HeaderValue::from_static("-"));
    let trusted_peer = state.trusted_proxies.contains(peer);
    let shared_session = carry::shared_session(state, &head.headers);
    headers::upstream_headers(&mut head.headers, &request_id_value, peer, trusted_peer, tracing_on);
    let primary_tx = ex.submit_shadow(&head, &body, client_uri.query());
    match ex.plan.side {
        Side::Legacy => headers::strip_queue_credentials(&mut head.headers, &state.cookie),
        Side::Queue => carry::to_queue(state, &mut head.headers, carried.as_ref()),
    }

    // The response timeout runs from the start of the exchange (the body is in hand).
    let upstream = ex.plan.upstream;
    let deadline = tokio::time::Instant::now() + upstream.response_timeout;
    let sending = send(w, head, upstream, ex.plan.path.as_deref(), &client_uri, ReqBody::Full(body));
    let (mut parts, upstream_body) = match w.deadlines.within(deadline, sending).await {
        Some(Ok(r)) => r,
        Some(Err(e)) => return ex.failed(e.on(ex.plan.side)),
        None => return ex.failed(ForwardError::response_timeout(upstream.response_timeout_ms).on(ex.plan.side)),
    };

    ex.record(parts.status.as_u16(), ex.plan.shadow.as_ref().map(|s| s.side));
    headers::strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(headers::REQUEST_ID_HEADER, request_id_value);
    if let Some(c) = &carried {
        carry::answer(state, &mut parts.headers, c, chrono::Utc::now());
    }
    if shared_session {
        carry::mirror_sign_out(state, ex.plan.side, &mut parts.headers);
    }
    let tee = primary_tx.map(|(tx, cap)| Tee::new(tx, cap, parts.status.as_u16(), content_length(&parts.headers)));
    let body = Relay::new(upstream_body, tee, state.read_timeout, permit, client_slot);
    Response::from_parts(parts, RespBody::Relay(body))
}

/// A response's `Content-Length`. With a known length, hyper stops polling a body once that
/// many bytes are written: the tee hands its copy over when the last byte passes, not at the
/// end of the stream.
fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok())
}

/// The checks before a request is planned, in order: its path can be made canonical, its
/// headers are within `max_header_bytes`, and its client is under its cap. The client's slot
/// counts the request from here until its response body ends.
fn admit<'p>(
    state: &ProxyState,
    headers: &HeaderMap,
    path: &'p str,
    client: IpAddr,
) -> Result<(Cow<'p, str>, ClientSlot), Answer<'static>> {
    let canonical = canonical::canonical_path(path)
        .map_err(|e| Answer::proxy(StatusCode::BAD_REQUEST, "bad_path", e.message()).counted(&state.metrics))?;
    if state.blocked_prefixes.iter().any(|p| canonical.starts_with(p.as_str())) {
        let message = "this path is not served through the front door";
        return Err(Answer::proxy(StatusCode::NOT_FOUND, "not_found", message).counted(&state.metrics));
    }
    let header_bytes: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
    if header_bytes > state.max_header_bytes {
        let message = format!("the request's headers are larger than {} bytes", state.max_header_bytes);
        return Err(Answer::proxy(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", message));
    }
    let Some(slot) = state.clients.try_take(client) else {
        let message =
            format!("this client has {} requests in flight already; retry when one has finished", state.clients.max());
        let answer = Answer::proxy(StatusCode::TOO_MANY_REQUESTS, "too_many_requests", message);
        return Err(answer.counted(&state.metrics).retry_after());
    };
    Ok((canonical, slot))
}

/// The answer to a request that has nowhere to go.
fn no_plan<'t>(state: &ProxyState, no: NoPlan<'t>) -> Answer<'t> {
    match no {
        NoPlan::LetterCase => {
            let message = "the path differs from a routed path only in letter case";
            Answer::proxy(StatusCode::BAD_REQUEST, "bad_path", message).counted(&state.metrics)
        }
        NoPlan::NoUpstream { route, side } => answer::failure(&ForwardError::no_upstream(side), "?", route),
        NoPlan::NoRoute => {
            Answer::proxy(StatusCode::NOT_FOUND, "no_route", "no route in the proxy's table matches this path")
        }
    }
}

/// A planned request: what its answer, metrics and access log need.
struct Exchange<'a> {
    state: &'a ProxyState,
    loaded: &'a Loaded,
    plan: Plan<'a>,
    request_id: &'a str,
    method: &'a str,
    path: &'a str,
    started: Instant,
}

impl Exchange<'_> {
    fn version(&self) -> &str {
        &self.loaded.table.version
    }

    /// The client's whole body (`None` when it has none), within `forwarding.max_body_bytes`
    /// and `forwarding.client_body_timeout_ms` from the head; else the answer to the client.
    async fn read_body(
        &self,
        w: &Worker,
        body: Incoming,
        headers: &HeaderMap,
    ) -> Result<Option<Bytes>, Response<RespBody>> {
        let state = self.state;
        let deadline = tokio::time::Instant::now() + state.client_body_timeout;
        match w.deadlines.within(deadline, read_body(body, headers, state.max_body_bytes)).await {
            Some(Ok(b)) => Ok(b),
            Some(Err(e)) => Err(self.client_failed(e)),
            None => Err(self.client_failed(ForwardError::client_timeout(state.client_body_timeout.as_millis() as u64))),
        }
    }

    /// The client's body could not be had: too large or too slow (refusals, counted) or
    /// unreadable. The connection is closed after the answer.
    fn client_failed(&self, e: ForwardError) -> Response<RespBody> {
        let answer = answer::failure(&e, "-", self.plan.route);
        let answer = match e.kind {
            Kind::Protocol => answer,
            _ => answer.counted(&self.state.metrics),
        };
        answer.respond(self.request_id)
    }

    /// The upstream has `max_in_flight` requests running already (counted as `overloaded`).
    fn overloaded(&self) -> Response<RespBody> {
        let p = &self.plan;
        self.state.metrics.upstream_error(p.route, p.side.as_str(), "overloaded", self.version());
        let e = ForwardError::overloaded(p.side, p.upstream.max_in_flight);
        answer::failure(&e, &p.upstream.name, p.route).respond(self.request_id)
    }

    /// The upstream failed before its response head: counted by its code, recorded and logged
    /// like an answer, and answered for the side that failed.
    fn failed(&self, e: ForwardError) -> Response<RespBody> {
        let p = &self.plan;
        let answer = answer::failure(&e, &p.upstream.name, p.route);
        self.state.metrics.upstream_error(p.route, p.side.as_str(), answer.code(), self.version());
        self.record(answer.status().as_u16(), None);
        answer.respond(self.request_id)
    }

    /// Counts the answer and its time to the response head, and writes the access log line.
    fn record(&self, status: u16, shadow: Option<Side>) {
        let p = &self.plan;
        let elapsed = self.started.elapsed();
        let version = self.version();
        self.loaded.metrics.observe(
            &self.state.metrics,
            p.index,
            p.route,
            p.side,
            status,
            version,
            elapsed.as_secs_f64(),
        );
        tracing::info!(
            target: "queue_proxy::access",
            method = self.method,
            path = self.path,
            route = p.route,
            side = p.side.as_str(),
            reason = Reason::as_str(p.reason),
            upstream = p.upstream.name.as_str(),
            table_version = version,
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            request_id = self.request_id,
            shadow = shadow.map(Side::as_str),
            "access"
        );
    }

    /// Queues the shadow copy of a shadowed request, with the same (whole) body unless it is
    /// over the route's cap; returns where the primary's answer goes for the comparison.
    fn submit_shadow(
        &self,
        head: &http::request::Parts,
        body: &Option<Bytes>,
        query: Option<&str>,
    ) -> Option<(oneshot::Sender<Outcome>, usize)> {
        let sp = self.plan.shadow.as_ref()?;
        if body.as_ref().is_some_and(|b| b.len() > sp.max_body) {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.state.shadow.submit(Job {
            route: self.plan.route.to_string(),
            table_version: self.version().to_string(),
            request_id: self.request_id.to_string(),
            method: head.method.clone(),
            path: self.path.to_string(),
            url: format!("{}{}{}", sp.upstream.base, sp.path, query.map(|q| format!("?{q}")).unwrap_or_default()),
            headers: headers::shadow_copy(
                &head.headers,
                sp.side == Side::Legacy,
                &self.state.cookie,
                &self.state.legacy_cookie,
            ),
            body: body.clone().unwrap_or_default(),
            shadow_side: sp.side,
            timeout: sp.upstream.response_timeout,
            ignore: sp.ignore.clone(),
            max_body: sp.max_body,
            primary: rx,
        });
        Some((tx, sp.max_body))
    }
}

/// Sends one request upstream and returns its response head and body. Plain-http upstreams
/// (the usual in-cluster case) go through the worker's connection pool (upstream.rs), in origin
/// form with the prefix parsed when the table was loaded; https upstreams go through reqwest
/// (rustls with the platform's verifier).
async fn send(
    w: &Worker,
    mut head: http::request::Parts,
    upstream: &Upstream,
    path: Option<&str>,
    client_uri: &http::Uri,
    body: ReqBody,
) -> Result<(http::response::Parts, UpstreamBody), ForwardError> {
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
                let pq = http::uri::PathAndQuery::try_from(s)
                    .map_err(|_| ForwardError::protocol("the upstream path is not a valid request target"))?;
                Some(pq)
            }
        };
        head.uri = match path_and_query {
            Some(pq) => pq.into(),
            None => http::Uri::from_static("/"),
        };
        // `Host` is the upstream's authority, written by the exchange (upstream.rs).
        let (parts, body) = upstream::send(&w.pool, authority, head, body).await?;
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
        Err(e) if e.is_timeout() => Err(ForwardError::connect_timeout()),
        Err(e) if e.is_connect() => Err(ForwardError::connect_refused()),
        Err(e) => Err(ForwardError::protocol(e.to_string())),
    }
}
