//! queue-rbac's configuration: the shared tables plus `[audit]`, `[auth]`, `[callers]`,
//! `[cache]` and `[expiry]`.

use queue_platform::config::{DatabaseConfig, ServerConfig, TelemetryConfig, TokensConfig};
use queue_platform::{ConfigError, Validate};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RbacConfig {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    pub tokens: TokensConfig,
    /// The audit service: every grant and revoke is written there first.
    pub audit: AuditLink,
    /// The auth service, to accept user sessions; without it only service tokens are accepted.
    #[serde(default)]
    pub auth: Option<AuthLink>,
    #[serde(default)]
    pub callers: CallersConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub expiry: ExpiryConfig,
    /// Issue 19, item 3: where grants made at Queue for Raptor's users are written back
    /// (`writeback_url`: Raptor; absent or empty: off, the rows wait in `rbac.legacy_writeback`).
    #[serde(default)]
    pub legacy: queue_platform::writeback::LegacyConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditLink {
    /// Base URL, e.g. `http://127.0.0.1:8083`.
    pub url: url::Url,
    /// How long the pre-write audit call may take before the grant is refused with 503.
    #[serde(default = "default_audit_timeout")]
    pub timeout_ms: u64,
    /// How long the compensating event of a change waits in the outbox (`rbac_audit_outbox`) for
    /// the change to commit. If the change fails it is delivered at once; if the process dies
    /// between the audit write and the change, it is delivered this long after it was held (by
    /// any replica). Longer than `timeout_ms`, so a slow but live change is not aborted.
    #[serde(default = "default_compensate_after")]
    pub compensate_after_secs: u64,
}

fn default_audit_timeout() -> u64 {
    2_000
}

fn default_compensate_after() -> u64 {
    60
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthLink {
    /// Base URL, e.g. `http://127.0.0.1:8081`.
    pub url: url::Url,
    /// How long a validated session is trusted without asking auth again (0 = always ask).
    #[serde(default = "default_session_cache")]
    pub session_cache_secs: u64,
}

fn default_session_cache() -> u64 {
    5
}

/// Which services may call what (service tokens; routes also need the scope named).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallersConfig {
    /// May grant and revoke anything (`rbac:grant`), and define roles.
    pub granters: Vec<String>,
    /// May ask checks for any principal (`rbac:check`).
    pub checkers: Vec<String>,
    /// May read roles, grants, history and reconcile (`rbac:read`).
    pub readers: Vec<String>,
    /// May import Raptor's roles and grants (`rbac:import`, `/internal/v1/import/*`; issue 19).
    pub importers: Vec<String>,
}

impl Default for CallersConfig {
    fn default() -> Self {
        Self {
            granters: vec!["raptor".into()],
            checkers: vec!["raptor".into(), "proxy".into(), "audit".into(), "auth".into()],
            readers: vec!["raptor".into()],
            importers: vec!["operator".into()],
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Principals whose grants are kept in memory (0 = no cache: every check reads PostgreSQL).
    pub max_principals: usize,
    /// Length of this replica's lease in milliseconds (docs/rbac-service.md, "Freshness"):
    /// while it is live, checks skip the revision read, and changes made through any replica
    /// wait until this one has applied them. 0 = no lease: every check reads the revision.
    pub lease_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self { max_principals: 200_000, lease_ms: 2_000 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExpiryConfig {
    /// How often expired grants are looked for and their expiry written to the audit log.
    pub interval_secs: u64,
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        Self { interval_secs: 30 }
    }
}

impl RbacConfig {
    /// The tables every service has, plus rbac's own at defaults, writing to audit at `audit_url`.
    pub fn new(base: queue_platform::ServiceConfig, audit_url: url::Url) -> Self {
        Self {
            server: base.server,
            database: base.database,
            telemetry: base.telemetry,
            tokens: base.tokens,
            audit: AuditLink {
                url: audit_url,
                timeout_ms: default_audit_timeout(),
                compensate_after_secs: default_compensate_after(),
            },
            auth: None,
            callers: CallersConfig::default(),
            cache: CacheConfig::default(),
            expiry: ExpiryConfig::default(),
            legacy: queue_platform::writeback::LegacyConfig::default(),
        }
    }
}

impl Validate for RbacConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.database.validate()?;
        self.telemetry.validate()?;
        self.tokens.validate()?;
        if !matches!(self.audit.url.scheme(), "http" | "https") {
            return Err(ConfigError::new("audit.url", "must be an http or https URL"));
        }
        if !(50..=60_000).contains(&self.audit.timeout_ms) {
            return Err(ConfigError::new("audit.timeout_ms", "must be between 50 and 60000"));
        }
        if !(1..=3600).contains(&self.audit.compensate_after_secs)
            || self.audit.compensate_after_secs.saturating_mul(1000) <= self.audit.timeout_ms
        {
            return Err(ConfigError::new(
                "audit.compensate_after_secs",
                "must be between 1 and 3600, and longer than audit.timeout_ms",
            ));
        }
        if let Some(a) = &self.auth {
            if !matches!(a.url.scheme(), "http" | "https") {
                return Err(ConfigError::new("auth.url", "must be an http or https URL"));
            }
            if a.session_cache_secs > 60 {
                return Err(ConfigError::new("auth.session_cache_secs", "must be at most 60"));
            }
        }
        if self.cache.lease_ms != 0 && !(200..=60_000).contains(&self.cache.lease_ms) {
            return Err(ConfigError::new("cache.lease_ms", "must be 0 (no lease) or between 200 and 60000"));
        }
        self.legacy.validate()?;
        if self.expiry.interval_secs == 0 {
            return Err(ConfigError::new("expiry.interval_secs", "must be at least 1"));
        }
        Ok(())
    }
}

impl queue_platform::bootstrap::ServiceSettings for RbacConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}
