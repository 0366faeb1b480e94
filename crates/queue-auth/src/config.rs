//! queue-auth's configuration: the shared tables plus `[auth]`, `[sessions]`, `[webauthn]`,
//! `[email]`, `[mailer]`, `[limits]`, `[audit]`, `[legacy]` and `[flags]` (docs/configuration.md,
//! auth).

use queue_platform::bootstrap::ServiceSettings;
use queue_platform::config::{ConfigError, DatabaseConfig, ServerConfig, TelemetryConfig, TokensConfig, Validate};
use queue_platform::net::TrustedNetworks;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    pub tokens: TokensConfig,
    #[serde(default)]
    pub auth: GeneralConfig,
    #[serde(default)]
    pub sessions: SessionsConfig,
    #[serde(default)]
    pub webauthn: WebauthnConfig,
    #[serde(default)]
    pub email: EmailConfig,
    #[serde(default)]
    pub mailer: MailerConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub audit: AuditRelayConfig,
    /// Write-back to Raptor after a cutover (`queue_platform::writeback`).
    #[serde(default)]
    pub legacy: queue_platform::writeback::LegacyConfig,
    #[serde(default)]
    pub flags: FlagsConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneralConfig {
    /// The tenant of requests that name none.
    pub default_tenant: String,
    /// 32+ random bytes, base64, that key the HMACs of verification codes, link tokens and
    /// backup codes (`queuectl keys init` writes a development one).
    pub pepper_file: PathBuf,
    /// Issuers allowed to provision users (`POST /internal/v1/users`, scope `users:write`).
    pub provisioners: Vec<String>,
    /// Issuers allowed to validate sessions (`POST /internal/v1/sessions/validate`).
    pub validators: Vec<String>,
    /// Issuers allowed to import Raptor's data (`POST /internal/v1/import/{users,sessions,
    /// backup-codes}`, scope `users:import`): `queuectl legacy import` signs as `operator`.
    pub importers: Vec<String>,
    /// Proxies (CIDRs or addresses; the queue-proxy's, any load balancer's) whose
    /// `X-Forwarded-For` is believed: the client is the right-most address in it that is not one
    /// of them (`queue_platform::net`). From any other peer the header is ignored and the TCP
    /// peer is the client. Empty: every request behind a proxy counts as the proxy's.
    pub trusted_proxies: TrustedNetworks,
}

impl Default for GeneralConfig {
    fn default() -> Self {
        Self {
            default_tenant: "default".into(),
            pepper_file: "var/keys/auth-pepper.key".into(),
            provisioners: vec!["raptor".into()],
            validators: vec!["proxy".into(), "rbac".into(), "audit".into(), "raptor".into()],
            importers: vec!["operator".into()],
            trusted_proxies: TrustedNetworks::none(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// A session unused this long expires (use slides it).
    pub idle_timeout_secs: i64,
    /// No session lives longer than this, however active.
    pub absolute_lifetime_secs: i64,
    /// Use writes `last_seen` (and slides the idle timeout) at most this often.
    pub last_seen_interval_secs: i64,
    /// Lifetime of enrollment and recovery sessions (they may only register a passkey).
    pub restricted_lifetime_secs: i64,
    /// Step-up: adding a passkey or generating backup codes with a full session needs a passkey
    /// assertion (the login, or a re-authentication) at most this long ago.
    pub step_up_secs: i64,
    /// `Secure` on the cookie. Absent: on, unless every WebAuthn origin is http://localhost
    /// (local development over plain HTTP).
    #[serde(default)]
    pub cookie_secure: Option<bool>,
    /// Coalesced validation (`POST /internal/v1/sessions/validate`): this many tasks each take
    /// whatever validations are waiting and answer them with one query (so up to this many
    /// queries are in flight) …
    pub validation_workers: usize,
    /// … of at most this many tokens each.
    pub validation_batch_max: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 30 * 60,
            absolute_lifetime_secs: 12 * 3600,
            last_seen_interval_secs: 60,
            restricted_lifetime_secs: 15 * 60,
            step_up_secs: 5 * 60,
            cookie_secure: None,
            validation_workers: 4,
            validation_batch_max: 256,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebauthnConfig {
    /// The relying party id: the registrable domain the passkeys belong to.
    pub rp_id: String,
    pub rp_name: String,
    /// Origins the browser may report (the first is the primary).
    pub origins: Vec<url::Url>,
    /// An unfinished ceremony expires after this long.
    pub ceremony_ttl_secs: i64,
}

impl Default for WebauthnConfig {
    fn default() -> Self {
        Self {
            rp_id: "localhost".into(),
            rp_name: "Queue".into(),
            origins: vec![url::Url::parse("http://localhost:8080").expect("static URL")],
            ceremony_ttl_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    pub code_ttl_secs: i64,
    pub max_attempts: i32,
    pub resend_cooldown_secs: i64,
    /// Messages per address per day, and per client IP per day.
    pub daily_cap_per_address: i32,
    pub daily_cap_per_ip: i32,
    /// The link in the message: `<link_base_url>?token=…`.
    pub link_base_url: url::Url,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            code_ttl_secs: 15 * 60,
            max_attempts: 5,
            resend_cooldown_secs: 60,
            daily_cap_per_address: 10,
            daily_cap_per_ip: 100,
            link_base_url: url::Url::parse("http://localhost:8080/verify-email").expect("static URL"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailerConfig {
    /// `dev` (files in `dev_dir`) or `postmark`.
    pub kind: String,
    pub from: String,
    pub dev_dir: PathBuf,
    pub postmark_base_url: url::Url,
    /// A file holding the Postmark server token.
    #[serde(default)]
    pub postmark_token_file: Option<PathBuf>,
    pub postmark_message_stream: String,
    /// Give up on a message after this many failed sends.
    pub max_attempts: i32,
}

impl Default for MailerConfig {
    fn default() -> Self {
        Self {
            kind: "dev".into(),
            from: "Queue <no-reply@localhost>".into(),
            dev_dir: "var/mail".into(),
            postmark_base_url: url::Url::parse("https://api.postmarkapp.com").expect("static URL"),
            postmark_token_file: None,
            postmark_message_stream: "outbound".into(),
            max_attempts: 8,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Counting window for failures and attempts.
    pub window_secs: i64,
    /// Failures (per account, and per IP) after which the subject is locked out …
    pub lockout_after_failures: i32,
    /// … for this long.
    pub lockout_secs: i64,
    /// Failures before the progressive delay starts; each further failure doubles it.
    pub delay_after_failures: i32,
    pub delay_base_secs: i64,
    pub delay_max_secs: i64,
    /// Attempts per IP per window on the anonymous endpoints (login, confirm, redeem).
    pub per_ip_attempts: i32,
    /// Per IP (many users may share one address): failures before the delay, and before lockout.
    pub ip_delay_after_failures: i32,
    pub ip_lockout_after_failures: i32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            window_secs: 3600,
            lockout_after_failures: 10,
            lockout_secs: 900,
            delay_after_failures: 3,
            delay_base_secs: 1,
            delay_max_secs: 60,
            per_ip_attempts: 300,
            ip_delay_after_failures: 20,
            ip_lockout_after_failures: 100,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditRelayConfig {
    /// The audit service; absent: events wait in the outbox until one is configured.
    #[serde(default)]
    pub url: Option<url::Url>,
    pub batch: i64,
    pub poll_interval_ms: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for AuditRelayConfig {
    fn default() -> Self {
        Self { url: None, batch: 100, poll_interval_ms: 2000, backoff_initial_ms: 500, backoff_max_ms: 60_000 }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlagsConfig {
    /// FLAG_AUTH_BACKUP_CODES of the seeds (`QUEUE_FLAGS__AUTH_BACKUP_CODES=true`): off by default.
    #[serde(default)]
    pub auth_backup_codes: bool,
}

impl AuthConfig {
    /// The tables every service has, plus auth's own at defaults.
    pub fn new(base: queue_platform::ServiceConfig, pepper_file: PathBuf) -> Self {
        Self {
            server: base.server,
            database: base.database,
            telemetry: base.telemetry,
            tokens: base.tokens,
            auth: GeneralConfig { pepper_file, ..GeneralConfig::default() },
            sessions: SessionsConfig::default(),
            webauthn: WebauthnConfig::default(),
            email: EmailConfig::default(),
            mailer: MailerConfig::default(),
            limits: LimitsConfig::default(),
            audit: AuditRelayConfig::default(),
            legacy: queue_platform::writeback::LegacyConfig::default(),
            flags: FlagsConfig::default(),
        }
    }

    /// Whether the session cookie carries `Secure`.
    pub fn cookie_secure(&self) -> bool {
        self.sessions.cookie_secure.unwrap_or_else(|| {
            !self.webauthn.origins.iter().all(|o| o.scheme() == "http" && o.host_str() == Some("localhost"))
        })
    }
}

/// Writes a fresh pepper file (mode 0600) unless it exists and `replace` is false; returns
/// whether it wrote one.
pub fn write_pepper(path: &std::path::Path, replace: bool) -> std::io::Result<bool> {
    use base64::Engine;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() && !replace {
        return Ok(false);
    }
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| std::io::Error::other("no randomness"))?;
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(true)
}

fn at_least(key: &str, v: i64, min: i64) -> Result<(), ConfigError> {
    if v < min { Err(ConfigError::new(key, format!("must be at least {min}"))) } else { Ok(()) }
}

impl Validate for AuthConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.database.validate()?;
        self.telemetry.validate()?;
        self.tokens.validate()?;
        if !self.auth.pepper_file.is_file() {
            return Err(ConfigError::new(
                "auth.pepper_file",
                format!(
                    "{} does not exist (`queuectl keys init` creates a dev pepper)",
                    self.auth.pepper_file.display()
                ),
            ));
        }
        crate::domain::crypto::Pepper::load(&self.auth.pepper_file)
            .map_err(|e| ConfigError::new("auth.pepper_file", e))?;
        if self.auth.default_tenant.is_empty() {
            return Err(ConfigError::new("auth.default_tenant", "must not be empty"));
        }
        let s = &self.sessions;
        at_least("sessions.idle_timeout_secs", s.idle_timeout_secs, 60)?;
        at_least("sessions.absolute_lifetime_secs", s.absolute_lifetime_secs, s.idle_timeout_secs)?;
        at_least("sessions.last_seen_interval_secs", s.last_seen_interval_secs, 1)?;
        at_least("sessions.restricted_lifetime_secs", s.restricted_lifetime_secs, 60)?;
        at_least("sessions.step_up_secs", s.step_up_secs, 30)?;
        if !(1..=64).contains(&s.validation_workers) {
            return Err(ConfigError::new("sessions.validation_workers", "must be between 1 and 64"));
        }
        if !(1..=4096).contains(&s.validation_batch_max) {
            return Err(ConfigError::new("sessions.validation_batch_max", "must be between 1 and 4096"));
        }
        let w = &self.webauthn;
        if w.rp_id.is_empty() {
            return Err(ConfigError::new("webauthn.rp_id", "must not be empty"));
        }
        if w.origins.is_empty() {
            return Err(ConfigError::new("webauthn.origins", "name at least one origin"));
        }
        for o in &w.origins {
            let host = o.host_str().unwrap_or_default();
            if !(host == w.rp_id || host.ends_with(&format!(".{}", w.rp_id))) {
                return Err(ConfigError::new("webauthn.origins", format!("{o} is not within rp_id {}", w.rp_id)));
            }
        }
        at_least("webauthn.ceremony_ttl_secs", w.ceremony_ttl_secs, 10)?;
        let e = &self.email;
        at_least("email.code_ttl_secs", e.code_ttl_secs, 60)?;
        at_least("email.max_attempts", e.max_attempts.into(), 1)?;
        at_least("email.daily_cap_per_address", e.daily_cap_per_address.into(), 1)?;
        at_least("email.daily_cap_per_ip", e.daily_cap_per_ip.into(), 1)?;
        let m = &self.mailer;
        match m.kind.as_str() {
            "dev" => {}
            "postmark" => match &m.postmark_token_file {
                Some(p) if p.is_file() => {}
                Some(p) => {
                    return Err(ConfigError::new(
                        "mailer.postmark_token_file",
                        format!("{} does not exist", p.display()),
                    ));
                }
                None => return Err(ConfigError::new("mailer.postmark_token_file", "required with kind postmark")),
            },
            _ => return Err(ConfigError::new("mailer.kind", "must be `dev` or `postmark`")),
        }
        at_least("mailer.max_attempts", m.max_attempts.into(), 1)?;
        let l = &self.limits;
        at_least("limits.window_secs", l.window_secs, 1)?;
        at_least("limits.lockout_after_failures", l.lockout_after_failures.into(), 1)?;
        at_least("limits.lockout_secs", l.lockout_secs, 1)?;
        at_least("limits.per_ip_attempts", l.per_ip_attempts.into(), 1)?;
        at_least("limits.ip_lockout_after_failures", l.ip_lockout_after_failures.into(), 1)?;
        let a = &self.audit;
        if let Some(u) = &a.url
            && !matches!(u.scheme(), "http" | "https")
        {
            return Err(ConfigError::new("audit.url", "must be an http or https URL"));
        }
        at_least("audit.batch", a.batch, 1)?;
        self.legacy.validate()?;
        Ok(())
    }
}

impl ServiceSettings for AuthConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}
