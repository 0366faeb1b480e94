//! Why a request was not forwarded: one error type for every failure between the client and an
//! upstream, in pingora's model (`pingora_error::Error { etype, esource, retry }`): where it
//! happened ([`Source`]), what happened ([`Kind`]) and whether the request may be sent again
//! ([`Retry`]).
//!
//! Built here only, by the constructors below: the layers that meet a failure (the client's
//! body, the pool's connect, the HTTP/1.1 exchange, reqwest, the response deadline) pick one,
//! and forward/answer.rs turns it into the proxy's JSON answer. The detail (an io error's text,
//! what was malformed) is for the debug log, never for the client.
//!
//! The route table's and the admin API's errors (`TableError`, `ChangeError`) stay apart: they
//! are about a file and an operator's change, have no side and are never retried, and the admin
//! API maps them to its own statuses.

use std::borrow::Cow;
use std::fmt;

use crate::table::Side;

/// Where a failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The client: its request body could not be had.
    Client,
    /// An upstream the failing layer cannot name: the pool and the exchange serve both sides
    /// (and the platform app); the forwarding path names it with [`ForwardError::on`].
    Upstream,
    /// An upstream of the route table, on this side.
    Side(Side),
    /// queue-platform's app on loopback, which serves the platform endpoints the proxy relays.
    Platform,
}

impl Source {
    /// The `side` of the JSON answer and of `x-queue-proxy-error`: the upstream's side, or
    /// `proxy` for everything the proxy answers on its own account.
    pub(crate) fn wire(self) -> &'static str {
        match self {
            Source::Side(s) => s.as_str(),
            Source::Client | Source::Upstream | Source::Platform => "proxy",
        }
    }
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// No connection within `forwarding.connect_timeout_ms`.
    ConnectTimeout,
    /// The connection was refused or could not be made.
    ConnectRefused,
    /// The connection ended before any byte of an answer (typically a kept connection the
    /// upstream had just closed).
    ClosedEarly,
    /// The exchange failed once under way: a reset, a failed write or read, a malformed or
    /// ambiguous answer, a switch of protocols.
    Protocol,
    /// Nothing (an upstream's response head, a client's whole body) within this many ms.
    Timeout { ms: u64 },
    /// More than this many bytes (a client's body).
    TooLarge { max: usize },
    /// The upstream has this many requests in flight already (its `max_in_flight`).
    Overloaded { max: usize },
    /// The route names an upstream the table does not have.
    NoUpstream,
}

/// Whether the request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// No: the upstream may have acted on it, or trying again cannot help.
    Never,
    /// Once, on a new connection, when the failed one came from the pool and the request is
    /// replayable (an idempotent method, no body): the upstream saw nothing of it
    /// (pingora's `RetryType::ReusedOnly`).
    ReusedOnly,
}

/// A failure to forward one request (see the module doc).
#[derive(Debug)]
pub(crate) struct ForwardError {
    pub(crate) source: Source,
    pub(crate) kind: Kind,
    pub(crate) retry: Retry,
    /// For the debug log only.
    detail: Option<Cow<'static, str>>,
}

impl ForwardError {
    fn new(source: Source, kind: Kind) -> Self {
        Self { source, kind, retry: Retry::Never, detail: None }
    }

    /// An upstream did not accept the connection in time.
    pub(crate) fn connect_timeout() -> Self {
        Self::new(Source::Upstream, Kind::ConnectTimeout)
    }

    /// An upstream refused the connection, or it could not be made.
    pub(crate) fn connect_refused() -> Self {
        Self::new(Source::Upstream, Kind::ConnectRefused)
    }

    /// The connection ended before any answer; replayable on a new connection if it was reused.
    pub(crate) fn closed_early() -> Self {
        Self { retry: Retry::ReusedOnly, ..Self::new(Source::Upstream, Kind::ClosedEarly) }
    }

    /// The exchange with an upstream failed once under way; `detail` says how (for the log).
    pub(crate) fn protocol(detail: impl Into<Cow<'static, str>>) -> Self {
        Self { detail: Some(detail.into()), ..Self::new(Source::Upstream, Kind::Protocol) }
    }

    /// An io error while `what` (writing the request, reading the response, ...).
    pub(crate) fn io(what: &str, e: &std::io::Error) -> Self {
        Self::protocol(format!("{what}: {e}"))
    }

    /// No response head within the upstream's `response_timeout_ms`.
    pub(crate) fn response_timeout(ms: u64) -> Self {
        Self::new(Source::Upstream, Kind::Timeout { ms })
    }

    /// The upstream's `max_in_flight` requests are already running.
    pub(crate) fn overloaded(side: Side, max: usize) -> Self {
        Self::new(Source::Side(side), Kind::Overloaded { max })
    }

    /// The route's upstream on `side` is not in the table.
    pub(crate) fn no_upstream(side: Side) -> Self {
        Self::new(Source::Side(side), Kind::NoUpstream)
    }

    /// The client's body did not arrive within `forwarding.client_body_timeout_ms`.
    pub(crate) fn client_timeout(ms: u64) -> Self {
        Self::new(Source::Client, Kind::Timeout { ms })
    }

    /// The client's body is over `forwarding.max_body_bytes`.
    pub(crate) fn client_too_large(max: usize) -> Self {
        Self::new(Source::Client, Kind::TooLarge { max })
    }

    /// The client's body could not be read (its connection broke, its chunks were malformed).
    pub(crate) fn client_unreadable() -> Self {
        Self::new(Source::Client, Kind::Protocol)
    }

    /// Names the side of an upstream failure (the layers below the forwarding path do not know it).
    pub(crate) fn on(self, side: Side) -> Self {
        match self.source {
            Source::Upstream => Self { source: Source::Side(side), ..self },
            _ => self,
        }
    }

    /// Marks an upstream failure as the platform app's (the relay of the platform endpoints).
    pub(crate) fn at_platform(self) -> Self {
        match self.source {
            Source::Upstream => Self { source: Source::Platform, ..self },
            _ => self,
        }
    }

    /// Whether the request may go again on a new connection: the failed connection was
    /// `reused` from the pool and the request is `replayable`.
    pub(crate) fn may_retry(&self, reused: bool, replayable: bool) -> bool {
        self.retry == Retry::ReusedOnly && reused && replayable
    }
}

impl fmt::Display for ForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            Kind::ConnectTimeout => "no connection in time",
            Kind::ConnectRefused => "the connection could not be made",
            Kind::ClosedEarly => "the connection closed before any response",
            Kind::Protocol => "the exchange failed",
            Kind::Timeout { .. } => "no answer in time",
            Kind::TooLarge { .. } => "too large",
            Kind::Overloaded { .. } => "too many requests in flight",
            Kind::NoUpstream => "no upstream",
        };
        write!(f, "{:?}: {what}", self.source)?;
        match &self.detail {
            Some(d) => write!(f, ": {d}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ForwardError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_early_close_on_a_reused_connection_of_a_replayable_request_is_retried() {
        assert!(ForwardError::closed_early().may_retry(true, true));
        assert!(!ForwardError::closed_early().may_retry(false, true));
        assert!(!ForwardError::closed_early().may_retry(true, false));
        assert!(!ForwardError::protocol("reset").may_retry(true, true));
        assert!(!ForwardError::connect_refused().may_retry(true, true));
    }

    #[test]
    fn the_side_is_named_once_and_only_for_upstream_failures() {
        let e = ForwardError::response_timeout(300).on(Side::Legacy);
        assert_eq!((e.source, e.source.wire()), (Source::Side(Side::Legacy), "legacy"));
        assert_eq!(e.on(Side::Queue).source, Source::Side(Side::Legacy));
        assert_eq!(ForwardError::client_timeout(5).on(Side::Queue).source.wire(), "proxy");
        assert_eq!(ForwardError::connect_refused().at_platform().source, Source::Platform);
    }
}
