//! The audit service's own metrics, registered in the service's registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct AuditMetrics {
    appended: IntCounter,
    batch_size: Histogram,
    commit_seconds: Histogram,
    retried_batches: IntCounter,
    stale_heads: IntCounter,
    verify_runs: IntCounterVec,
    verified_events: IntCounter,
    rate_limited: IntCounterVec,
    forged_actions: IntCounterVec,
}

impl AuditMetrics {
    pub fn new(registry: &Registry) -> Self {
        let m = Self {
            appended: IntCounter::new("audit_events_appended_total", "Events appended to chains").expect("metric"),
            batch_size: Histogram::with_opts(
                HistogramOpts::new("audit_append_batch_events", "Events per group-commit transaction")
                    .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]),
            )
            .expect("metric"),
            commit_seconds: Histogram::with_opts(HistogramOpts::new(
                "audit_append_commit_seconds",
                "Time of one group-commit transaction",
            ))
            .expect("metric"),
            retried_batches: IntCounter::new(
                "audit_append_retried_batches_total",
                "Group commits rolled back and done again because an event id was stored already (a retry)",
            )
            .expect("metric"),
            stale_heads: IntCounter::new(
                "audit_append_stale_heads_total",
                "Group commits rolled back and done again because a remembered chain head or key epoch was out of \
                 date (another replica appended to the tenant, or a key was rotated)",
            )
            .expect("metric"),
            verify_runs: IntCounterVec::new(
                Opts::new("audit_verify_runs_total", "Chain verifications by result"),
                &["result"],
            )
            .expect("metric"),
            verified_events: IntCounter::new("audit_verified_events_total", "Events checked by verifications")
                .expect("metric"),
            rate_limited: IntCounterVec::new(
                Opts::new("audit_rate_limited_total", "Requests refused by the per-caller rate limit"),
                &["caller"],
            )
            .expect("metric"),
            forged_actions: IntCounterVec::new(
                Opts::new(
                    "audit_refused_actions_total",
                    "Writes refused because the writer does not own the action (limits.writers)",
                ),
                &["caller"],
            )
            .expect("metric"),
        };
        let _ = registry.register(Box::new(m.appended.clone()));
        let _ = registry.register(Box::new(m.batch_size.clone()));
        let _ = registry.register(Box::new(m.commit_seconds.clone()));
        let _ = registry.register(Box::new(m.retried_batches.clone()));
        let _ = registry.register(Box::new(m.stale_heads.clone()));
        let _ = registry.register(Box::new(m.verify_runs.clone()));
        let _ = registry.register(Box::new(m.verified_events.clone()));
        let _ = registry.register(Box::new(m.rate_limited.clone()));
        let _ = registry.register(Box::new(m.forged_actions.clone()));
        m
    }

    pub fn observe_batch(&self, events: usize, seconds: f64) {
        self.appended.inc_by(events as u64);
        self.batch_size.observe(events as f64);
        self.commit_seconds.observe(seconds);
    }

    /// A batch held an id stored already: rolled back, and done again looking ids up first.
    pub fn observe_retry_probe(&self) {
        self.retried_batches.inc();
    }

    /// A batch chained from a remembered head that had moved (or an old key epoch): rolled
    /// back, and done again reading the heads first.
    pub fn observe_stale_heads(&self) {
        self.stale_heads.inc();
    }

    pub fn observe_verify(&self, ok: bool, events: i64) {
        self.verify_runs.with_label_values(&[if ok { "ok" } else { "tampered" }]).inc();
        self.verified_events.inc_by(events.max(0) as u64);
    }

    pub fn rate_limited(&self, caller: &str) {
        self.rate_limited.with_label_values(&[caller]).inc();
    }

    /// A writer tried an action it does not own.
    pub fn forged_action(&self, caller: &str) {
        self.forged_actions.with_label_values(&[caller]).inc();
    }
}
