//! What the audit handlers share.

use queue_platform::db::Db;
use queue_platform::{ApiError, Caller, ServiceCaller};

use crate::config::ChainConfig;
use crate::domain::append::Appender;
use crate::domain::keyring::KeyRing;
use crate::domain::writers::WriterPolicy;
use crate::metrics::AuditMetrics;
use crate::ratelimit::RateLimiter;
use crate::reader::UserReads;

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
    pub users: Option<UserReads>,
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

    /// The per-caller rate limit, then, for a user, `audit.read` for `tenant`.
    pub async fn admit_reader(&self, reader: &Caller, tenant: &str) -> Result<(), ApiError> {
        self.admit_bucket(&reader.bucket(), 1)?;
        if let Caller::User(u) = reader {
            let users = self.users.as_ref().ok_or_else(|| ApiError::Unauthorized("no user reads".into()))?;
            users.require_audit_read(u, tenant).await?;
        }
        Ok(())
    }

    pub fn admit_bucket(&self, bucket: &str, cost: u32) -> Result<(), ApiError> {
        self.limiter.take(bucket, cost).map_err(|retry_after_secs| {
            self.metrics.rate_limited(bucket);
            ApiError::TooManyRequests { retry_after_secs }
        })
    }
}
