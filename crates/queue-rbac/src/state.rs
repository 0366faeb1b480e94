//! What the rbac handlers share, built once by `run`.

use queue_platform::db::Db;
use std::sync::Arc;

use crate::config::CallersConfig;
use crate::domain::checker::Checker;
use crate::domain::prewrite::Prewriter;

pub struct RbacState {
    pub db: Db,
    pub checker: Arc<Checker>,
    /// Grants, revokes and roles go through it: audited before they are applied.
    pub writes: Prewriter,
    pub callers: CallersConfig,
    /// Whether `[legacy] writeback_url` is set: the relay sends the write-back rows to Raptor.
    pub write_back_enabled: bool,
}
