//! Header policy, in both directions: which headers never cross the proxy (hop-by-hop, and
//! the names `Connection` lists), what the proxy adds on the way upstream (`X-Forwarded-*`, the
//! request id, trace context) and whom it believes about them (`forwarding.trusted_proxies`),
//! what the legacy side may not see (Queue's session) and what Queue may not see (Raptor's). Pure functions over `http` header
//! maps; the forwarding path (forward/) calls them, and upstream.rs's response parser drops
//! the same hop-by-hop fields as it reads a head (its test checks against [`HOP_BY_HOP_NAMES`]).

use http::header::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

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

/// The client's forwarding headers (replaced or extended), the shadow mark (removed) and
/// `X-Real-IP` (kept from a trusted proxy only), in the order [`upstream_headers`] reads them.
const FORWARDING: [HeaderName; 6] = [
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-queue-shadow"),
    HeaderName::from_static("x-real-ip"),
];

/// W3C trace context (believed only from trusted proxies).
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

pub(crate) const REQUEST_ID: &str = "x-request-id";
pub(crate) const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(REQUEST_ID);

/// The client's `X-Forwarded-For` values, for `TrustedNetworks::client_ip`.
pub(crate) fn forwarded_for(h: &HeaderMap) -> impl Iterator<Item = &[u8]> {
    h.get_all(&FORWARDING[0]).iter().map(|v| v.as_bytes())
}

/// The headers of a shadow copy: the primary's upstream headers, marked as a copy (the shadow
/// side can tell it from real traffic, to skip sending mail, say), without Queue's session
/// (`cookie`) when the copy goes to the legacy side and without the legacy side's
/// (`legacy_cookie`, when set) when it goes to Queue.
pub(crate) fn shadow_copy(
    upstream_headers: &HeaderMap,
    to_legacy: bool,
    cookie: &str,
    legacy_cookie: &str,
) -> HeaderMap {
    let mut headers = upstream_headers.clone();
    headers.insert(FORWARDING[4].clone(), HeaderValue::from_static("1"));
    if to_legacy {
        strip_queue_credentials(&mut headers, cookie);
    } else if !legacy_cookie.is_empty() {
        rewrite_cookies(&mut headers, &[legacy_cookie], None);
    }
    headers
}

/// Whether a bearer token has the shape of a Queue session token: 43 base64url characters
/// (auth's `new_token`, 32 random bytes). Service tokens (JWTs, with dots) do not.
pub(crate) fn looks_like_session_token(t: &str) -> bool {
    t.len() == 43 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Removes what would hand a Queue session to the legacy side: the session cookie (other
/// cookies are kept) and an `Authorization: Bearer` that looks like a Queue session token.
pub(crate) fn strip_queue_credentials(h: &mut HeaderMap, cookie: &str) {
    let bearer_is_session = h.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.trim().split_once(' ').is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer") && looks_like_session_token(token.trim())
        })
    });
    if bearer_is_session {
        h.remove(http::header::AUTHORIZATION);
    }
    rewrite_cookies(h, &[cookie], None);
}

/// Removes the cookies named in `drop` from the request's `Cookie` headers (others are kept) and, with
/// `add`, adds that cookie (name, value): the headers become one `Cookie` header when anything
/// changes. Untouched when there is nothing to drop or add.
pub(crate) fn rewrite_cookies(h: &mut HeaderMap, drop: &[&str], add: Option<(&str, &str)>) {
    let is_dropped = |pair: &str| pair.split_once('=').is_some_and(|(name, _)| drop.contains(&name.trim()));
    let carries =
        h.get_all(http::header::COOKIE).iter().any(|v| v.to_str().map_or(true, |v| v.split(';').any(is_dropped)));
    if !carries && add.is_none() {
        return;
    }
    // Cookie values that are not text are dropped with it: nothing can be kept safely.
    let added = add.map(|(name, value)| format!("{name}={value}"));
    let kept: Vec<&str> = h
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !is_dropped(pair))
        .chain(added.as_deref())
        .collect();
    let rebuilt = (!kept.is_empty()).then(|| HeaderValue::from_str(&kept.join("; ")).ok()).flatten();
    h.remove(http::header::COOKIE);
    if let Some(v) = rebuilt {
        h.insert(http::header::COOKIE, v);
    }
}

/// The first value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie_value<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.split_once('=').filter(|(n, _)| n.trim() == name).map(|(_, v)| v.trim()))
}

/// The incoming `x-request-id` when it is a sane token, else a new one.
pub(crate) fn request_id(headers: &HeaderMap) -> String {
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
pub(crate) fn strip_trace_context(h: &mut HeaderMap) {
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
/// (9-14, in [`FORWARDING`]'s order) present in `headers`: one pass over the names, no lookups
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
            "x-real-ip" => 14,
            _ => continue,
        };
        mask |= 1 << bit;
    }
    mask
}

/// Removes the hop-by-hop headers and those `Connection` names, in place.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
pub(crate) fn upstream_headers(
    h: &mut HeaderMap,
    request_id: &HeaderValue,
    peer: IpAddr,
    trusted_peer: bool,
    tracing_on: bool,
) {
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
    // Another common name for the client's address: believed from a trusted proxy only, as
    // X-Forwarded-For (an upstream that reads it must not get a client's claim).
    if let Some(v) = take(5).filter(|_| trusted_peer) {
        h.insert(FORWARDING[5].clone(), v);
    }

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
    fn raptors_cookie_is_swapped_for_queues() {
        let mut h = HeaderMap::new();
        h.append(http::header::COOKIE, HeaderValue::from_static("theme=dark; raptor_session=r1"));
        h.append(http::header::COOKIE, HeaderValue::from_static("raptor_session=r2; lang=en"));
        assert_eq!(cookie_value(&h, "raptor_session"), Some("r1"), "the first one");
        assert_eq!(cookie_value(&h, "raptor"), None);
        rewrite_cookies(&mut h, &["raptor_session"], Some(("queue_session", "r1")));
        assert_eq!(
            h.get_all(http::header::COOKIE).iter().collect::<Vec<_>>(),
            ["theme=dark; lang=en; queue_session=r1"]
        );
        let mut h = HeaderMap::new();
        rewrite_cookies(&mut h, &["raptor_session"], None);
        assert!(h.is_empty(), "nothing to drop or add: untouched");

        // A stale Queue session is replaced by the carried one, never sent beside it.
        let mut h = HeaderMap::new();
        h.insert(http::header::COOKIE, HeaderValue::from_static("queue_session=old; raptor_session=r3; a=1"));
        rewrite_cookies(&mut h, &["raptor_session", "queue_session"], Some(("queue_session", "r3")));
        assert_eq!(h.get_all(http::header::COOKIE).iter().collect::<Vec<_>>(), ["a=1; queue_session=r3"]);
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
    fn a_clients_address_claims_are_replaced_and_a_trusted_proxys_kept() {
        let claims = |h: &mut HeaderMap| {
            h.insert(FORWARDING[0].clone(), HeaderValue::from_static("203.0.113.66"));
            h.insert(FORWARDING[3].clone(), HeaderValue::from_static("for=203.0.113.66"));
            h.insert(FORWARDING[5].clone(), HeaderValue::from_static("203.0.113.66"));
        };
        let id = HeaderValue::from_static("req-1");
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        let mut h = HeaderMap::new();
        claims(&mut h);
        upstream_headers(&mut h, &id, peer, false, false);
        assert_eq!(h[&FORWARDING[0]], "192.0.2.7");
        assert!(h.get(&FORWARDING[3]).is_none() && h.get(&FORWARDING[5]).is_none(), "{h:?}");
        let mut h = HeaderMap::new();
        claims(&mut h);
        upstream_headers(&mut h, &id, peer, true, false);
        assert_eq!(h[&FORWARDING[0]], "203.0.113.66, 192.0.2.7");
        assert_eq!(h[&FORWARDING[5]], "203.0.113.66", "a trusted proxy's X-Real-IP passes");
    }
}
