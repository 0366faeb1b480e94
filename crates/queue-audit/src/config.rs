//! queue-audit's configuration: the shared tables plus `[keys]`, `[chain]` and `[limits]`.

use queue_platform::bootstrap::ServiceSettings;
use queue_platform::config::{ConfigError, DatabaseConfig, ServerConfig, TelemetryConfig, TokensConfig, Validate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    pub tokens: TokensConfig,
    #[serde(default)]
    pub keys: KeysConfig,
    #[serde(default)]
    pub chain: ChainConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Users reading the log with a session (auth validates it, rbac says whether they hold
    /// `audit.read` for the tenant). Without it only service tokens read.
    #[serde(default)]
    pub users: Option<UsersConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UsersConfig {
    /// The auth service, e.g. `http://127.0.0.1:8081`.
    pub auth_url: url::Url,
    /// The rbac service, e.g. `http://127.0.0.1:8082`.
    pub rbac_url: url::Url,
    /// How long a validated session is trusted without asking auth again (0-60).
    #[serde(default = "default_session_cache")]
    pub session_cache_secs: u64,
}

fn default_session_cache() -> u64 {
    5
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// `local` (key files; development) or `aws-kms`.
    #[serde(default = "default_provider")]
    pub provider: String,
    /// local: base64 of a 32-byte master key that wraps the data keys.
    #[serde(default = "default_master")]
    pub local_master_key: PathBuf,
    /// local: ECDSA P-256 private key (PKCS#8 PEM) that signs checkpoints.
    #[serde(default = "default_checkpoint")]
    pub local_checkpoint_key: PathBuf,
    /// aws-kms: endpoint override (a KMS-compatible server); AWS's own when absent.
    #[serde(default)]
    pub kms_endpoint: Option<url::Url>,
    #[serde(default = "default_region")]
    pub kms_region: String,
    /// aws-kms: the symmetric key that GenerateDataKey uses (id, ARN or alias).
    #[serde(default)]
    pub kms_data_key_id: Option<String>,
    /// aws-kms: the ECC_NIST_P256 SIGN_VERIFY key for checkpoints.
    #[serde(default)]
    pub kms_checkpoint_key_id: Option<String>,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            provider: default_provider(),
            local_master_key: default_master(),
            local_checkpoint_key: default_checkpoint(),
            kms_endpoint: None,
            kms_region: default_region(),
            kms_data_key_id: None,
            kms_checkpoint_key_id: None,
        }
    }
}

fn default_provider() -> String {
    "local".into()
}
fn default_master() -> PathBuf {
    "var/keys/audit-master.key".into()
}
fn default_checkpoint() -> PathBuf {
    "var/keys/audit-checkpoint.pem".into()
}
fn default_region() -> String {
    "us-east-1".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChainConfig {
    /// Sign a checkpoint of a tenant's head after this many new events …
    pub checkpoint_every: i64,
    /// … or after this many seconds with unsigned events.
    pub checkpoint_interval_secs: u64,
    /// The most events appended in one transaction.
    pub max_batch: usize,
    /// Writer tasks (each owns a share of the tenants and commits one transaction at a time,
    /// holding the events of several tenants). Two by default: while one writer waits on its
    /// commit the other works (docs/audit-service.md, "Group commit").
    pub writers: usize,
    /// The largest payload, in bytes of canonical JSON.
    pub max_payload_bytes: usize,
    /// The name of this audit log in its C2SP checkpoints (issue 20): each tenant's log has the
    /// origin `<name>/<tenant_id>`, and the checkpoint key signs as `<name>`. A host-like name,
    /// unique to this deployment; no spaces or `+`.
    pub checkpoint_origin: String,
}

impl Default for ChainConfig {
    fn default() -> Self {
        Self {
            checkpoint_every: 1000,
            checkpoint_interval_secs: 30,
            max_batch: 500,
            writers: 2,
            max_payload_bytes: 16 * 1024,
            checkpoint_origin: "audit.queue.local".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Issuers allowed to write events (with scope `audit:write`), each with the actions it owns:
    /// exact names or `prefix.*` (`domain::writers`). Anything else is refused with 403.
    pub writers: BTreeMap<String, Vec<String>>,
    /// Issuers allowed to read (with scope `audit:read`).
    pub readers: Vec<String>,
    /// Requests per second per calling service (token bucket), and its burst.
    pub per_caller_rps: u32,
    pub per_caller_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            writers: default_writers(),
            readers: vec!["rbac".into(), "raptor".into()],
            per_caller_rps: 5_000,
            per_caller_burst: 10_000,
        }
    }
}

/// What each service owns: auth its `auth.*` events, rbac its `rbac.*`, the proxy its admin
/// changes (`proxy.*`), Raptor (the legacy
/// app, ../shared/legacy/LEGACY.md) its own `raptor.*` events and the Console's tickets.
/// Add a writer here (or in the config file) with the actions it owns, never more.
pub fn default_writers() -> BTreeMap<String, Vec<String>> {
    [
        ("auth", &["auth.*"][..]),
        ("rbac", &["rbac.*"][..]),
        ("raptor", &["raptor.*", "ticket.*"][..]),
        ("proxy", &["proxy.*"][..]),
    ]
    .into_iter()
    .map(|(issuer, actions)| (issuer.to_string(), actions.iter().map(|a| a.to_string()).collect()))
    .collect()
}

impl AuditConfig {
    /// The tables every service has, plus audit's own with `chain` and `limits` at defaults.
    pub fn new(base: queue_platform::ServiceConfig, keys: KeysConfig) -> Self {
        Self {
            server: base.server,
            database: base.database,
            telemetry: base.telemetry,
            tokens: base.tokens,
            keys,
            chain: ChainConfig::default(),
            limits: LimitsConfig::default(),
            users: None,
        }
    }
}

// `KeysConfig::local_in` (creating dev key files) lives in `domain/keys.rs`, beside the key
// generation it calls: config stays below the domain.

impl Validate for AuditConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.database.validate()?;
        self.telemetry.validate()?;
        self.tokens.validate()?;
        let k = &self.keys;
        match k.provider.as_str() {
            "local" => {
                for (key, path) in [
                    ("keys.local_master_key", &k.local_master_key),
                    ("keys.local_checkpoint_key", &k.local_checkpoint_key),
                ] {
                    if !path.is_file() {
                        return Err(ConfigError::new(
                            key,
                            format!("{} does not exist (`queuectl keys init` creates dev keys)", path.display()),
                        ));
                    }
                }
            }
            "aws-kms" => {
                if k.kms_data_key_id.as_deref().is_none_or(str::is_empty) {
                    return Err(ConfigError::new("keys.kms_data_key_id", "required with provider aws-kms"));
                }
                if k.kms_checkpoint_key_id.as_deref().is_none_or(str::is_empty) {
                    return Err(ConfigError::new("keys.kms_checkpoint_key_id", "required with provider aws-kms"));
                }
            }
            _ => return Err(ConfigError::new("keys.provider", "must be `local` or `aws-kms`")),
        }
        if let Some(u) = &self.users {
            for (key, url) in [("users.auth_url", &u.auth_url), ("users.rbac_url", &u.rbac_url)] {
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(ConfigError::new(key, "must be an http or https URL"));
                }
            }
            if u.session_cache_secs > 60 {
                return Err(ConfigError::new("users.session_cache_secs", "must be at most 60"));
            }
        }
        let c = &self.chain;
        if c.checkpoint_every < 1 {
            return Err(ConfigError::new("chain.checkpoint_every", "must be at least 1"));
        }
        if c.checkpoint_interval_secs < 1 {
            return Err(ConfigError::new("chain.checkpoint_interval_secs", "must be at least 1"));
        }
        if !(1..=10_000).contains(&c.max_batch) {
            return Err(ConfigError::new("chain.max_batch", "must be between 1 and 10000"));
        }
        if !(1..=64).contains(&c.writers) {
            return Err(ConfigError::new("chain.writers", "must be between 1 and 64"));
        }
        if !signed_note::is_key_name_valid(&c.checkpoint_origin) || c.checkpoint_origin.contains('/') {
            return Err(ConfigError::new(
                "chain.checkpoint_origin",
                "must be a non-empty name without spaces, `+` or `/` (a host-like name, e.g. audit.example.com)",
            ));
        }
        if !(64..=1024 * 1024).contains(&c.max_payload_bytes) {
            return Err(ConfigError::new("chain.max_payload_bytes", "must be between 64 and 1048576"));
        }
        crate::domain::writers::WriterPolicy::from_config(&self.limits.writers)
            .map_err(|(issuer, message)| ConfigError::new(format!("limits.writers.{issuer}"), message))?;
        if self.limits.per_caller_rps == 0 || self.limits.per_caller_burst == 0 {
            return Err(ConfigError::new("limits.per_caller_rps", "rate and burst must be at least 1"));
        }
        Ok(())
    }
}

impl ServiceSettings for AuditConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}
