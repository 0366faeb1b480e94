//! What the audit handlers share.

use queue_platform::db::Db;
use queue_platform::{ApiError, ServiceCaller};

use crate::config::ChainConfig;
use crate::domain::append::Appender;
use crate::domain::keyring::KeyRing;
use crate::domain::writers::WriterPolicy;
use crate::metrics::AuditMetrics;
use crate::ratelimit::RateLimiter;

pub struct AuditState {
    pub db: Db,
    pub appender: Appender,
    pub keys: KeyRing,
    pub limiter: RateLimiter,
    pub metrics: AuditMetrics,
    pub chain: ChainConfig,
    /// Which actions each writer may write (`limits.writers`).
    pub writers: WriterPolicy,
    /// Users reading the log (with `[users]` configured).
    pub users: Option<crate::reader::UserReads>,
}

impl AuditState {
    /// The per-caller rate limit: `cost` is the number of events (1 for reads).
    pub fn admit(&self, caller: &ServiceCaller, cost: u32) -> Result<(), ApiError> {
        self.admit_bucket(caller.issuer(), cost)
    }

    /// A writer writes only the actions it owns: anything else is refused before anything is
    /// written (`field` names the event in a batch).
    pub fn admit_action(&self, caller: &ServiceCaller, field: &str, action: &str) -> Result<(), ApiError> {
        if self.writers.allows(caller.issuer(), action) {
            return Ok(());
        }
        self.metrics.forged_action(caller.issuer());
        tracing::warn!(issuer = caller.issuer(), action, "audit write refused: the writer does not own this action");
        Err(ApiError::Forbidden(format!(
            "{field}action `{action}` is not one that `{}` may write (limits.writers); nothing was written",
            caller.issuer()
        )))
    }

    pub fn admit_bucket(&self, bucket: &str, cost: u32) -> Result<(), ApiError> {
        self.limiter.take(bucket, cost).map_err(|retry_after_secs| {
            self.metrics.rate_limited(bucket);
            ApiError::TooManyRequests { retry_after_secs }
        })
    }
}
