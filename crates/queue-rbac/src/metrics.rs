//! The rbac service's own metrics, registered in the service's registry.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct RbacMetrics {
    checks: IntCounterVec,
    cache: IntCounterVec,
    fence_catch_ups: IntCounter,
    changes: IntCounterVec,
    freshness: IntCounterVec,
    propagation_timeouts: IntCounter,
}

impl RbacMetrics {
    pub fn new(registry: &Registry) -> Self {
        let vec =
            |name: &str, help: &str, label: &str| IntCounterVec::new(Opts::new(name, help), &[label]).expect("metric");
        let m = Self {
            checks: vec("rbac_checks_total", "Checks answered, by result", "result"),
            cache: vec("rbac_cache_lookups_total", "Principal lookups, by cache hit or miss", "outcome"),
            fence_catch_ups: IntCounter::new(
                "rbac_fence_catch_ups_total",
                "Revision checks that had to read changes the notifications had not delivered yet",
            )
            .expect("metric"),
            changes: vec("rbac_changes_total", "Grants, revokes, roles and expiries, by outcome", "outcome"),
            freshness: vec(
                "rbac_freshness_total",
                "Checks (and other reads) made current by this replica's live lease or by a revision read",
                "via",
            ),
            propagation_timeouts: IntCounter::new(
                "rbac_propagation_timeouts_total",
                "Changes after which a replica with a live lease did not record the revision in time",
            )
            .expect("metric"),
        };
        let _ = registry.register(Box::new(m.checks.clone()));
        let _ = registry.register(Box::new(m.cache.clone()));
        let _ = registry.register(Box::new(m.fence_catch_ups.clone()));
        let _ = registry.register(Box::new(m.changes.clone()));
        let _ = registry.register(Box::new(m.freshness.clone()));
        let _ = registry.register(Box::new(m.propagation_timeouts.clone()));
        m
    }

    pub fn checked(&self, allowed: bool) {
        self.checks.with_label_values(&[if allowed { "allowed" } else { "denied" }]).inc();
    }

    pub fn cache(&self, hit: bool) {
        self.cache.with_label_values(&[if hit { "hit" } else { "miss" }]).inc();
    }

    pub fn fence_catch_up(&self) {
        self.fence_catch_ups.inc();
    }

    pub fn change(&self, outcome: &str) {
        self.changes.with_label_values(&[outcome]).inc();
    }

    pub fn fresh(&self, via: &str) {
        self.freshness.with_label_values(&[via]).inc();
    }

    pub fn propagation_timeout(&self) {
        self.propagation_timeouts.inc();
    }
}
