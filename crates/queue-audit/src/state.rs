//! What the audit handlers share.

use queue_platform::db::Db;
use queue_platform::{ApiError, ServiceCaller};

use crate::config::ChainConfig;
use crate::domain::append::Appender;
use crate::domain::keyring::KeyRing;
use crate::metrics::AuditMetrics;
use crate::ratelimit::RateLimiter;

pub struct AuditState {
    pub db: Db,
    pub appender: Appender,
    pub keys: KeyRing,
    pub limiter: RateLimiter,
    pub metrics: AuditMetrics,
    pub chain: ChainConfig,
    /// Users reading the log (with `[users]` configured).
    pub users: Option<crate::reader::UserReads>,
}

impl AuditState {
    /// The per-caller rate limit: `cost` is the number of events (1 for reads).
    pub fn admit(&self, caller: &ServiceCaller, cost: u32) -> Result<(), ApiError> {
        self.admit_bucket(caller.issuer(), cost)
    }

    pub fn admit_bucket(&self, bucket: &str, cost: u32) -> Result<(), ApiError> {
        self.limiter.take(bucket, cost).map_err(|retry_after_secs| {
            self.metrics.rate_limited(bucket);
            ApiError::TooManyRequests { retry_after_secs }
        })
    }
}
