//! What the rbac handlers share.

use queue_audit_client::AuditClient;
use queue_platform::db::Db;
use std::sync::Arc;
use tokio::sync::Notify;

use crate::checker::Checker;
use crate::config::CallersConfig;
use crate::metrics::RbacMetrics;

pub struct RbacState {
    pub db: Db,
    pub checker: Arc<Checker>,
    pub audit: AuditClient,
    pub sessions: Option<queue_platform::sessions::SessionValidator>,
    pub callers: CallersConfig,
    pub metrics: RbacMetrics,
    /// Wakes the outbox relay (a compensation became due).
    pub outbox: Arc<Notify>,
    /// `audit.compensate_after_secs`.
    pub compensate_after_secs: u64,
    /// Test-only: where to make the process die (`RBAC_TEST_FAILPOINT`), to show that a crash
    /// between the audit write and the change loses nothing.
    pub failpoint: Option<Failpoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    /// `abort()` right after a change's audit event was written, before the change.
    AbortAfterPrewrite,
}

impl Failpoint {
    /// `RBAC_TEST_FAILPOINT=abort-after-prewrite` (outside the `QUEUE_*` config namespace: it is
    /// no setting, and start-up logs a warning when it is set).
    pub fn from_env() -> Option<Self> {
        match std::env::var("RBAC_TEST_FAILPOINT").ok()?.as_str() {
            "abort-after-prewrite" => Some(Self::AbortAfterPrewrite),
            other => {
                tracing::warn!(failpoint = other, "unknown RBAC_TEST_FAILPOINT ignored");
                None
            }
        }
    }
}
