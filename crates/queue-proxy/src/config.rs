//! queue-proxy's configuration: the shared tables (`[server]`, `[telemetry]`, `[tokens]`, no
//! database) plus `[admin]`, `[routing]`, `[forwarding]`, `[identity]`, `[shadow]` and
//! `[audit]` (docs/configuration.md, proxy). Read once at start-up and validated here (a bad
//! value exits with code 64); the route table it names is a file of its own, parsed by
//! table.rs, because it is reloaded while the proxy runs.

use queue_platform::bootstrap::ServiceSettings;
use queue_platform::config::{ConfigError, ServerConfig, TelemetryConfig, TokensConfig, Validate};
use queue_platform::net::TrustedNetworks;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::table::Table;

/// The proxy's configuration: like the other services', without a database, plus its admin
/// listener, the route table file and how it forwards. The route table itself is a separate
/// file (`routing.table`) because it is reloaded while the proxy runs; this config is not.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    pub server: ServerConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    pub tokens: TokensConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub forwarding: ForwardingConfig,
    #[serde(default)]
    pub identity: IdentityConfig,
    #[serde(default)]
    pub shadow: ShadowConfig,
    /// Absent: admin changes are applied without an audit record (a warning at start-up says
    /// so). Every shipped config sets it.
    #[serde(default)]
    pub audit: Option<AuditLink>,
}

/// The admin listener. Every endpoint but `/healthz` takes a service token (audience this
/// proxy, scope `proxy:admin`) from one of `issuers`; requests shaped like a browser's (an
/// `Origin`, a `Sec-Fetch-Site` other than `none`, a `Host` that is not this listener's) are
/// refused first, so a web page on an operator's machine can neither drive it nor read it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Loopback only: the admin API is for operators on the machine (SSH tunnel, kubectl
    /// port-forward), never for the network.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// The issuers whose tokens may call the admin API (each must be in `tokens.trusted`).
    /// `queuectl proxy …` mints them from the operator's key.
    #[serde(default = "default_admin_issuers")]
    pub issuers: Vec<String>,
    /// Host names (without port) the admin API answers to besides `localhost`, `127.0.0.1`,
    /// `[::1]` and the listen address; any other `Host` is refused (DNS rebinding).
    #[serde(default)]
    pub hosts: Vec<String>,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9080))
}

fn default_admin_issuers() -> Vec<String> {
    vec!["operator".into()]
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: default_admin_listen(), issuers: default_admin_issuers(), hosts: Vec::new() }
    }
}

/// The audit service, which records every phase change, reload and rollback made through the
/// admin API before it applies (pre-write: no audit record, no change).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditLink {
    /// Base URL, e.g. `http://127.0.0.1:8083`.
    pub url: url::Url,
    /// How long the audit write may take before the change is refused with 503.
    #[serde(default = "default_audit_timeout")]
    pub timeout_ms: u64,
}

fn default_audit_timeout() -> u64 {
    2_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// The route table file (TOML). Absent: no routes; every forwarded path gets a JSON 404.
    #[serde(default)]
    pub table: Option<PathBuf>,
    /// How often the file is checked for changes, in ms; 0 turns the watch off (SIGHUP and
    /// `POST /admin/reload` still work).
    #[serde(default = "default_watch")]
    pub watch_interval_ms: u64,
    /// How many previous tables are kept for rollback.
    #[serde(default = "default_history")]
    pub history: usize,
}

fn default_watch() -> u64 {
    1000
}
fn default_history() -> usize {
    10
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self { table: None, watch_interval_ms: default_watch(), history: default_history() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardingConfig {
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Longest pause while reading an upstream's body, in ms.
    #[serde(default = "default_read_timeout")]
    pub read_timeout_ms: u64,
    #[serde(default = "default_idle")]
    pub pool_idle_timeout_secs: u64,
    #[serde(default = "default_idle_per_host")]
    pub pool_max_idle_per_host: usize,
    /// Peers (CIDRs or addresses: a load balancer or ingress in front) whose `X-Forwarded-*`
    /// headers are believed and extended, and whose `traceparent` is continued. Others'
    /// forwarding headers are replaced and their trace context dropped. The client is the
    /// right-most `X-Forwarded-For` address that is not one of these (`queue_platform::net`).
    #[serde(default)]
    pub trusted_proxies: TrustedNetworks,
    /// Largest total size of a request's header names and values; larger answers 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Largest request body, in bytes; larger answers 413. A body is read whole before the
    /// request takes an upstream slot, so a slow client never holds one.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long a client has to send a request's whole body, in ms, counted from its head;
    /// later answers 408 and closes the connection.
    #[serde(default = "default_client_body_timeout")]
    pub client_body_timeout_ms: u64,
    /// Longest pause while writing a response to a client, in ms (a client that stops reading);
    /// longer closes the connection, which gives back the upstream slot.
    #[serde(default = "default_client_write_timeout")]
    pub client_write_timeout_ms: u64,
    /// Requests one client (an address; IPv6 by /64) may have in flight at once; more answer
    /// 429. The client is the address `trusted_proxies` says it is.
    #[serde(default = "default_max_in_flight_per_client")]
    pub max_in_flight_per_client: u32,
    /// Path prefixes never forwarded from the public listener (404): the services' and the
    /// legacy side's internal APIs (`/internal/…`: Raptor's write-back API, auth's import and
    /// validation endpoints) are for peers on the internal network, not for clients. Matched on
    /// the canonical path. Empty forwards everything.
    #[serde(default = "default_blocked_prefixes")]
    pub blocked_prefixes: Vec<String>,
}

fn default_blocked_prefixes() -> Vec<String> {
    vec!["/internal/".into()]
}

fn default_max_body_bytes() -> usize {
    10 * 1024 * 1024
}
fn default_client_body_timeout() -> u64 {
    15_000
}
fn default_client_write_timeout() -> u64 {
    30_000
}
fn default_max_in_flight_per_client() -> u32 {
    128
}

fn default_max_header_bytes() -> usize {
    32 * 1024
}

fn default_connect_timeout() -> u64 {
    2000
}
fn default_read_timeout() -> u64 {
    30_000
}
fn default_idle() -> u64 {
    90
}
fn default_idle_per_host() -> usize {
    256
}

impl Default for ForwardingConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: default_connect_timeout(),
            read_timeout_ms: default_read_timeout(),
            pool_idle_timeout_secs: default_idle(),
            pool_max_idle_per_host: default_idle_per_host(),
            trusted_proxies: TrustedNetworks::none(),
            max_header_bytes: default_max_header_bytes(),
            max_body_bytes: default_max_body_bytes(),
            client_body_timeout_ms: default_client_body_timeout(),
            client_write_timeout_ms: default_client_write_timeout(),
            max_in_flight_per_client: default_max_in_flight_per_client(),
            blocked_prefixes: default_blocked_prefixes(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// auth's base URL, for `POST /internal/v1/sessions/validate`. Absent: user cohorts fall
    /// back to the tenant header, then the client address.
    #[serde(default)]
    pub auth_url: Option<url::Url>,
    #[serde(default = "default_identity_timeout")]
    pub timeout_ms: u64,
    /// How long a validation answer is reused, in seconds.
    #[serde(default = "default_cache")]
    pub cache_secs: u64,
    /// The session cookie (else `Authorization: Bearer`).
    #[serde(default = "default_cookie")]
    pub cookie: String,
    /// The header naming the tenant, for tenant cohorts without a session.
    #[serde(default = "default_tenant_header")]
    pub tenant_header: String,
    /// Validation answers kept for valid sessions, and (apart) for tokens auth refused. A full
    /// cache of valid sessions takes no new ones until entries expire; it is never emptied.
    #[serde(default = "default_cache_entries")]
    pub cache_entries: usize,
    /// Raptor's session cookie (issue 19, item 2): a request to a route on Queue that carries
    /// it and no Queue session is signed in at Queue when auth knows its value as a live
    /// (imported) session, and the answer sets `cookie` to it. Never sent to Queue's services
    /// itself. Empty turns the carry-over off (and Raptor's cookie then goes to Queue like any
    /// other).
    #[serde(default = "default_legacy_session_cookie")]
    pub legacy_session_cookie: String,
}

fn default_legacy_session_cookie() -> String {
    "raptor_session".into()
}

/// Whether `name` is a cookie name (an RFC 6265 token: visible ASCII but separators).
fn is_cookie_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

fn default_cache_entries() -> usize {
    100_000
}

fn default_identity_timeout() -> u64 {
    250
}
fn default_cache() -> u64 {
    30
}
fn default_cookie() -> String {
    "queue_session".into()
}
fn default_tenant_header() -> String {
    "x-tenant-id".into()
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            auth_url: None,
            timeout_ms: default_identity_timeout(),
            cache_secs: default_cache(),
            cookie: default_cookie(),
            tenant_header: default_tenant_header(),
            cache_entries: default_cache_entries(),
            legacy_session_cookie: default_legacy_session_cookie(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// Copies waiting for the shadow side; beyond this they are dropped (and counted).
    #[serde(default = "default_shadow_queue")]
    pub queue: usize,
    /// Copies in flight to the shadow side at once.
    #[serde(default = "default_shadow_concurrency")]
    pub concurrency: usize,
}

fn default_shadow_queue() -> usize {
    1024
}
fn default_shadow_concurrency() -> usize {
    16
}

impl Default for ShadowConfig {
    fn default() -> Self {
        Self { queue: default_shadow_queue(), concurrency: default_shadow_concurrency() }
    }
}

impl Validate for ProxyConfig {
    const USES_DATABASE_URL: bool = false;

    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.telemetry.validate()?;
        self.tokens.validate()?;
        if self.server.tls.serving().is_some() {
            // The public listener is hyper's, not actix's, and TLS for browsers ends at the
            // ingress or load balancer in front; only `ca_file` (for https upstreams) applies.
            return Err(ConfigError::new(
                "server.tls.cert_file",
                "the proxy does not serve TLS itself; set only server.tls.ca_file (for https upstreams)",
            ));
        }
        if !self.admin.listen.ip().is_loopback() {
            return Err(ConfigError::new(
                "admin.listen",
                "must be a loopback address: the admin API is for operators on the machine \
                 (reach it through an SSH tunnel or kubectl port-forward)",
            ));
        }
        if let Some(h) = self.admin.hosts.iter().find(|h| h.is_empty() || h.contains([':', '/', ' '])) {
            return Err(ConfigError::new("admin.hosts", format!("`{h}` is not a host name (give names without port)")));
        }
        if let Some(a) = &self.audit {
            if !matches!(a.url.scheme(), "http" | "https") {
                return Err(ConfigError::new("audit.url", "must be an http or https URL"));
            }
            if !(50..=60_000).contains(&a.timeout_ms) {
                return Err(ConfigError::new("audit.timeout_ms", "must be between 50 and 60000"));
            }
        }
        if let Some(p) = &self.routing.table {
            let text = std::fs::read_to_string(p)
                .map_err(|e| ConfigError::new("routing.table", format!("cannot read {}: {e}", p.display())))?;
            Table::parse(&text).map_err(|e| ConfigError::new("routing.table", e.to_string()))?;
        }
        if !(1024..=1024 * 1024).contains(&self.forwarding.max_header_bytes) {
            return Err(ConfigError::new("forwarding.max_header_bytes", "must be between 1024 and 1048576"));
        }
        if !(1024..=1024 * 1024 * 1024).contains(&self.forwarding.max_body_bytes) {
            return Err(ConfigError::new("forwarding.max_body_bytes", "must be between 1024 and 1073741824"));
        }
        if let Some(p) = self.forwarding.blocked_prefixes.iter().find(|p| !p.starts_with('/') || p.len() < 2) {
            return Err(ConfigError::new(
                "forwarding.blocked_prefixes",
                format!("{p:?} must be a path prefix like \"/internal/\""),
            ));
        }
        if !(1..=1_000_000).contains(&self.forwarding.max_in_flight_per_client) {
            return Err(ConfigError::new("forwarding.max_in_flight_per_client", "must be between 1 and 1000000"));
        }
        if !(16..=10_000_000).contains(&self.identity.cache_entries) {
            return Err(ConfigError::new("identity.cache_entries", "must be between 16 and 10000000"));
        }
        if !(1..=100).contains(&self.routing.history) {
            return Err(ConfigError::new("routing.history", "must be between 1 and 100"));
        }
        for (key, v) in [
            ("forwarding.connect_timeout_ms", self.forwarding.connect_timeout_ms),
            ("forwarding.read_timeout_ms", self.forwarding.read_timeout_ms),
            ("forwarding.client_body_timeout_ms", self.forwarding.client_body_timeout_ms),
            ("forwarding.client_write_timeout_ms", self.forwarding.client_write_timeout_ms),
            ("identity.timeout_ms", self.identity.timeout_ms),
        ] {
            if !(1..=600_000).contains(&v) {
                return Err(ConfigError::new(key, "must be between 1 and 600000"));
            }
        }
        if let Some(u) = &self.identity.auth_url
            && !matches!(u.scheme(), "http" | "https")
        {
            return Err(ConfigError::new("identity.auth_url", "must be an http or https URL"));
        }
        if actix_web::http::header::HeaderName::from_bytes(self.identity.tenant_header.as_bytes()).is_err() {
            return Err(ConfigError::new("identity.tenant_header", "not a header name"));
        }
        if !is_cookie_name(&self.identity.cookie) {
            return Err(ConfigError::new("identity.cookie", "not a cookie name"));
        }
        let legacy = &self.identity.legacy_session_cookie;
        if !legacy.is_empty() && (!is_cookie_name(legacy) || legacy == &self.identity.cookie) {
            return Err(ConfigError::new(
                "identity.legacy_session_cookie",
                "must be empty (no carry-over) or a cookie name other than identity.cookie",
            ));
        }
        if self.shadow.queue == 0 || self.shadow.concurrency == 0 {
            return Err(ConfigError::new("shadow.queue", "shadow.queue and shadow.concurrency must be at least 1"));
        }
        Ok(())
    }
}

impl ServiceSettings for ProxyConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_names_are_tokens() {
        for ok in ["raptor_session", "queue_session", "__Host-s", "a.b"] {
            assert!(is_cookie_name(ok), "{ok}");
        }
        for bad in ["", "raptor session", "a=b", "a;b", "a,b", "\"a\"", "é"] {
            assert!(!is_cookie_name(bad), "{bad}");
        }
    }
}
