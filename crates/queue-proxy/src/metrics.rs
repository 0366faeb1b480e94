//! The proxy's own metrics, registered in the platform's registry (so `/metrics` serves them
//! beside the per-endpoint ones). Every series carries the route table's version: a version is a
//! content hash, so the number of series grows with distinct tables, not with reloads.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct ProxyMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
    upstream_errors: IntCounterVec,
    pub shadow: IntCounterVec,
    pub shadow_dropped: IntCounterVec,
    pub reloads: IntCounterVec,
    table: IntGaugeVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    // Registration only fails on a duplicate name, which a fresh registry cannot have.
    let _ = registry.register(Box::new(c.clone()));
    c
}

impl ProxyMetrics {
    pub fn new(registry: &Registry) -> Self {
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
        }
    }

    pub fn observe(&self, route: &str, side: &str, status: u16, version: &str, seconds: f64) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests.with_label_values(&[route, side, class, version]).inc();
        self.latency.with_label_values(&[route, side, version]).observe(seconds);
    }

    pub fn upstream_error(&self, route: &str, side: &str, kind: &str, version: &str) {
        self.upstream_errors.with_label_values(&[route, side, kind, version]).inc();
    }

    pub fn table_in_force(&self, version: &str, phase: u8) {
        self.table.reset();
        self.table.with_label_values(&[version, &phase.to_string()]).set(1);
    }
}
