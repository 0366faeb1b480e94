//! The proxy's own answers (synthetic responses), from one place: the JSON error
//! `{"error": {code, message, side, upstream, route}}` with `x-request-id` and
//! `x-queue-proxy-error` (the side), for the proxy's refusals of a client's request and for an
//! upstream's failure (docs/proxy.md, "Forwarding", pins every code). [`failure`] is the one
//! table from a [`ForwardError`] to status, code and message.

use http::header::HeaderValue;
use http::{Response, StatusCode};
use hyper::body::Bytes;
use std::borrow::Cow;

use super::body::RespBody;
use crate::error::{ForwardError, Kind, Source};
use crate::headers::REQUEST_ID_HEADER;
use crate::metrics::ProxyMetrics;

/// One synthetic answer, built step by step and sent with [`Answer::respond`].
pub(super) struct Answer<'a> {
    status: StatusCode,
    code: &'static str,
    message: Cow<'a, str>,
    /// `legacy` or `queue` for an upstream's failure, `proxy` for the proxy's own refusals.
    side: &'static str,
    upstream: &'a str,
    route: &'a str,
    /// `Retry-After: 1`: the refusal is about load, not the request.
    retry_after: bool,
    /// `Connection: close`: the request's body was not read to its end.
    close: bool,
}

impl<'a> Answer<'a> {
    /// The proxy's own answer, about no upstream: side `proxy`, upstream `-`, route `none`.
    pub(super) fn proxy(status: StatusCode, code: &'static str, message: impl Into<Cow<'a, str>>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            side: "proxy",
            upstream: "-",
            route: "none",
            retry_after: false,
            close: false,
        }
    }

    /// An answer about an upstream on `side`.
    fn upstream(
        status: StatusCode,
        code: &'static str,
        message: impl Into<Cow<'a, str>>,
        side: &'static str,
        upstream: &'a str,
    ) -> Self {
        Self { side, upstream, ..Self::proxy(status, code, message) }
    }

    pub(super) fn on_route(self, route: &'a str) -> Self {
        Self { route, ..self }
    }

    pub(super) fn retry_after(self) -> Self {
        Self { retry_after: true, ..self }
    }

    pub(super) fn closing(self) -> Self {
        Self { close: true, ..self }
    }

    pub(super) fn status(&self) -> StatusCode {
        self.status
    }

    pub(super) fn code(&self) -> &'static str {
        self.code
    }

    /// Counts it as the proxy's refusal of a client's request, by code
    /// (`proxy_client_refusals_total`).
    pub(super) fn counted(self, metrics: &ProxyMetrics) -> Self {
        metrics.client_refusals.with_label_values(&[self.code]).inc();
        self
    }

    pub(super) fn respond(self, request_id: &str) -> Response<RespBody> {
        let body = serde_json::json!({"error": {
            "code": self.code, "message": self.message, "side": self.side, "upstream": self.upstream,
            "route": self.route,
        }});
        let mut r = Response::new(RespBody::Full(Some(Bytes::from(body.to_string()))));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert(REQUEST_ID_HEADER, v);
        }
        h.insert("x-queue-proxy-error", HeaderValue::from_static(self.side));
        if self.retry_after {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.close {
            h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

/// The answer to a failure: `upstream` and `route` are the request's (when it has them).
pub(super) fn failure<'a>(e: &ForwardError, upstream: &'a str, route: &'a str) -> Answer<'a> {
    let side = e.source.wire();
    let about = |what: &str| format!("the {side} upstream ({upstream}) {what}");
    match (e.source, e.kind) {
        (Source::Platform, _) => {
            Answer::proxy(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the platform endpoints are not available")
        }
        (Source::Client, Kind::TooLarge { max }) => Answer::proxy(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {max} bytes"),
        )
        .closing(),
        (Source::Client, Kind::Timeout { ms }) => Answer::proxy(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the request body did not arrive within {ms} ms"),
        )
        .closing(),
        (Source::Client, _) => {
            Answer::proxy(StatusCode::BAD_REQUEST, "bad_request", "the request body could not be read")
                .on_route(route)
                .closing()
        }
        (_, Kind::NoUpstream) => {
            Answer::upstream(StatusCode::SERVICE_UNAVAILABLE, "no_upstream", "no upstream for this route", side, "?")
                .on_route(route)
        }
        (_, Kind::Overloaded { max }) => Answer::upstream(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_overloaded",
            about(&format!("has {max} requests in flight already; retry shortly")),
            side,
            upstream,
        )
        .on_route(route)
        .retry_after(),
        (_, Kind::ConnectTimeout) => Answer::upstream(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            about("did not accept the connection in time"),
            side,
            upstream,
        )
        .on_route(route),
        (_, Kind::Timeout { ms }) => Answer::upstream(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            about(&format!("did not answer within {ms} ms")),
            side,
            upstream,
        )
        .on_route(route),
        (_, Kind::ConnectRefused) => Answer::upstream(
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            about("could not be connected to"),
            side,
            upstream,
        )
        .on_route(route),
        // An upstream's body is never refused for its size: only a broken exchange is left.
        (_, Kind::ClosedEarly | Kind::Protocol | Kind::TooLarge { .. }) => Answer::upstream(
            StatusCode::BAD_GATEWAY,
            "upstream_failed",
            about("closed the connection or sent an invalid response"),
            side,
            upstream,
        )
        .on_route(route),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::table::Side;

    fn answered(e: ForwardError) -> (u16, String) {
        let r = failure(&e, "raptor", "sessions").respond("rid");
        let RespBody::Full(Some(body)) = r.body() else { panic!("a full body") };
        (r.status().as_u16(), String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn failures_answer_with_the_documented_codes_and_sides() {
        let (status, body) = answered(ForwardError::response_timeout(300).on(Side::Legacy));
        assert_eq!(status, 504);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"code": "upstream_timeout",
                "message": "the legacy upstream (raptor) did not answer within 300 ms",
                "side": "legacy", "upstream": "raptor", "route": "sessions"}})
        );
        assert_eq!(answered(ForwardError::connect_refused().on(Side::Queue)).0, 502);
        assert_eq!(answered(ForwardError::closed_early().on(Side::Queue)).0, 502);
        assert_eq!(answered(ForwardError::connect_timeout().on(Side::Queue)).0, 504);
        assert_eq!(answered(ForwardError::overloaded(Side::Queue, 4)).0, 503);
        assert_eq!(answered(ForwardError::client_too_large(1024)).0, 413);
        assert_eq!(answered(ForwardError::client_timeout(15)).0, 408);
        assert_eq!(answered(ForwardError::client_unreadable()).0, 400);
        assert_eq!(answered(ForwardError::connect_refused().at_platform()).0, 503);
    }
}
