//! The proxy's own metrics, registered in the platform's registry (so `/metrics` serves them
//! beside the per-endpoint ones). Every series carries the route table's version: a version is a
//! content hash, so the number of series grows with distinct tables, not with reloads.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use std::sync::OnceLock;

use crate::table::{Side, Table};

#[derive(Clone)]
pub(crate) struct ProxyMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
    upstream_errors: IntCounterVec,
    pub(crate) shadow: IntCounterVec,
    pub(crate) shadow_dropped: IntCounterVec,
    pub(crate) reloads: IntCounterVec,
    table: IntGaugeVec,
    /// Requests from the arrival of their head to the end of their response, all clients.
    pub(crate) client_in_flight: IntGauge,
    /// The proxy's refusals of a client's request by kind (`too_many_requests`, `body_timeout`,
    /// `body_too_large`, `bad_path`).
    pub(crate) client_refusals: IntCounterVec,
    /// Raptor sessions carried over to Queue (carry.rs).
    pub(crate) legacy_sessions_carried: IntCounter,
    /// Raptor session cookies not carried over, by reason (`malformed`, `unknown`,
    /// `unavailable`).
    pub(crate) legacy_sessions_refused: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    // Registration only fails on a duplicate name, which a fresh registry cannot have.
    let _ = registry.register(Box::new(c.clone()));
    c
}

impl ProxyMetrics {
    pub(crate) fn new(registry: &Registry) -> Self {
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "proxy_upstream_duration_seconds",
                "Time to the upstream's response headers, by route, side and table version",
            )
            .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["route", "side", "table_version"],
        )
        .expect("static metric definition");
        let _ = registry.register(Box::new(latency.clone()));
        let table = IntGaugeVec::new(
            Opts::new("proxy_table_info", "The route table in force (1) by version and phase"),
            &["table_version", "phase"],
        )
        .expect("static metric definition");
        let _ = registry.register(Box::new(table.clone()));
        let client_in_flight = IntGauge::new(
            "proxy_client_requests_in_flight",
            "Forwarded requests from the arrival of their head to the end of their response",
        )
        .expect("static metric definition");
        let _ = registry.register(Box::new(client_in_flight.clone()));
        let legacy_sessions_carried = IntCounter::new(
            "proxy_legacy_sessions_carried_total",
            "Requests to Queue signed in with a Raptor session auth knows (queue_session set in the answer)",
        )
        .expect("static metric definition");
        let _ = registry.register(Box::new(legacy_sessions_carried.clone()));
        Self {
            requests: counter(
                registry,
                "proxy_requests_total",
                "Forwarded requests by route, side, status class and table version",
                &["route", "side", "status", "table_version"],
            ),
            latency,
            upstream_errors: counter(
                registry,
                "proxy_upstream_errors_total",
                "Upstream failures answered with 502/503/504, by route, side and kind",
                &["route", "side", "kind", "table_version"],
            ),
            shadow: counter(
                registry,
                "proxy_shadow_comparisons_total",
                "Shadow copies by route and outcome (match, mismatch, error, skipped)",
                &["route", "outcome", "table_version"],
            ),
            shadow_dropped: counter(
                registry,
                "proxy_shadow_dropped_total",
                "Shadow copies dropped because the shadow queue was full",
                &["route", "table_version"],
            ),
            reloads: counter(
                registry,
                "proxy_table_changes_total",
                "Route table changes by trigger and result",
                &["trigger", "result"],
            ),
            table,
            client_in_flight,
            client_refusals: counter(
                registry,
                "proxy_client_refusals_total",
                "Requests the proxy refused before choosing an upstream, by kind",
                &["kind"],
            ),
            legacy_sessions_carried,
            legacy_sessions_refused: counter(
                registry,
                "proxy_legacy_sessions_refused_total",
                "Raptor session cookies on requests to Queue not carried over, by reason (malformed, unknown, unavailable)",
                &["reason"],
            ),
        }
    }

    pub(crate) fn upstream_error(&self, route: &str, side: &str, kind: &str, version: &str) {
        self.upstream_errors.with_label_values(&[route, side, kind, version]).inc();
    }

    pub(crate) fn table_in_force(&self, version: &str, phase: u8) {
        self.table.reset();
        self.table.with_label_values(&[version, &phase.to_string()]).set(1);
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// One route and side's series under one table version, each looked up (label values hashed)
/// the first time it is used instead of on every request. A series appears in `/metrics` only
/// once it has been used, as with `with_label_values` per request.
#[derive(Default)]
struct SideSeries {
    requests: [OnceLock<IntCounter>; 5],
    latency: OnceLock<Histogram>,
}

/// A loaded table's metric handles: per route (by position) and side, plus the default route.
pub(crate) struct TableMetrics {
    routes: Vec<[SideSeries; 2]>,
    default: SideSeries,
}

impl TableMetrics {
    pub(crate) fn new(table: &Table) -> Self {
        Self { routes: table.routes.iter().map(|_| Default::default()).collect(), default: SideSeries::default() }
    }

    /// Counts a forwarded request and its time to the response headers. `route` is the route's
    /// index and name, or `None` for the default route (`name` "default").
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn observe(
        &self,
        m: &ProxyMetrics,
        route: Option<usize>,
        name: &str,
        side: Side,
        status: u16,
        version: &str,
        seconds: f64,
    ) {
        let series = match route.and_then(|i| self.routes.get(i)) {
            Some(sides) => &sides[side as usize],
            None => &self.default,
        };
        let class = class_index(status);
        let side = side.as_str();
        series.requests[class]
            .get_or_init(|| m.requests.with_label_values(&[name, side, CLASSES[class], version]))
            .inc();
        series.latency.get_or_init(|| m.latency.with_label_values(&[name, side, version])).observe(seconds);
    }
}
