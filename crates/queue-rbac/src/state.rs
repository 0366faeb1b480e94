//! What the rbac handlers share.

use queue_audit_client::AuditClient;
use queue_platform::db::Db;
use std::sync::Arc;

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
}
