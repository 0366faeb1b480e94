//! Typed configuration: a TOML file plus `QUEUE_*` environment overrides.
//!
//! Each service has one config struct with `#[serde(deny_unknown_fields)]` on every table, so a
//! misspelt key stops start-up instead of being ignored. Sources, lowest precedence first: the
//! file (`--config PATH` or `QUEUE_CONFIG`), the conventional `DATABASE_URL`, then
//! `QUEUE_<TABLE>__<KEY>` (double underscore between levels, e.g. `QUEUE_SERVER__LISTEN`).
//! The environment is read through [`EnvSource`] so tests pass a map instead of mutating the
//! process environment. Any problem becomes a [`ConfigError`] naming the key; binaries print it
//! on one line and exit with code 64 (EX_USAGE).

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Exit code for bad configuration (sysexits EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// For each table with required keys, the key to name when the whole table is missing.
const REQUIRED_FIRST: [(&str, &str); 3] =
    [("server", "server.listen"), ("database", "database.url"), ("tokens", "tokens.issuer")];

/// Variables that configure the loader itself rather than a key.
const META_VARS: [&str; 1] = ["QUEUE_CONFIG"];

/// A configuration problem, always tied to the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { key: key.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error: `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Where environment variables come from.
pub trait EnvSource {
    fn vars(&self) -> Vec<(String, String)>;
}

/// The real process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
    }
}

impl EnvSource for BTreeMap<String, String> {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl EnvSource for Vec<(&str, &str)> {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }
}

/// Checks that go beyond types: files exist, URLs have the right scheme, ranges hold.
pub trait Validate {
    /// Whether the conventional `DATABASE_URL` variable sets `database.url` for this config.
    /// A service without a database ignores it, so one shared environment can run them all.
    const USES_DATABASE_URL: bool = true;

    fn validate(&self) -> Result<(), ConfigError>;
}

/// Loads `T` from an optional file and the environment, then validates it.
pub fn load<T: DeserializeOwned + Validate>(file: Option<&Path>, env: &dyn EnvSource) -> Result<T, ConfigError> {
    let vars = env.vars();
    let file = file
        .map(Path::to_path_buf)
        .or_else(|| vars.iter().find(|(k, _)| k == "QUEUE_CONFIG").map(|(_, v)| PathBuf::from(v)));
    let mut figment = Figment::new();
    if let Some(path) = &file {
        if !path.is_file() {
            return Err(ConfigError::new("QUEUE_CONFIG", format!("config file {} does not exist", path.display())));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("QUEUE_CONFIG", format!("cannot read {}: {e}", path.display())))?;
        // Parse here first: figment would report a syntax error without the line.
        toml::from_str::<toml::Table>(&text)
            .map_err(|e| ConfigError::new(path.display().to_string(), one_line(&e.to_string())))?;
        figment = figment.merge(Toml::string(&text));
    }
    if let Some((_, url)) = vars.iter().find(|(k, _)| k == "DATABASE_URL" && T::USES_DATABASE_URL) {
        figment = figment.merge(Serialized::default("database.url", url));
    }
    for (name, value) in &vars {
        let Some(rest) = name.strip_prefix("QUEUE_") else { continue };
        if META_VARS.contains(&name.as_str()) || rest.is_empty() {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::new(name, "malformed variable name (empty key between `__`)"));
        }
        figment = figment.merge(Serialized::defaults(nest(&path, parse_env_value(value))));
    }
    let config: T = figment.extract().map_err(|e| from_figment(&e))?;
    config.validate()?;
    Ok(config)
}

/// Environment values are TOML literals when they parse as one (numbers, booleans, arrays,
/// inline tables), else plain strings.
fn parse_env_value(raw: &str) -> Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc).ok().and_then(|mut t| t.remove("v")) {
        Some(v) => Value::serialize(v).unwrap_or_else(|_| Value::from(raw.to_string())),
        None => Value::from(raw.to_string()),
    }
}

fn nest(path: &[String], leaf: Value) -> Dict {
    let mut value = leaf;
    for key in path.iter().skip(1).rev() {
        let mut d = Map::new();
        d.insert(key.clone(), value);
        value = Value::from(d);
    }
    let mut root = Map::new();
    if let Some(first) = path.first() {
        root.insert(first.clone(), value);
    }
    root
}

fn from_figment(errors: &figment::Error) -> ConfigError {
    use figment::error::Kind;
    let e = errors.clone().into_iter().next().unwrap_or_else(|| errors.clone());
    let mut path = e.path.clone();
    let message = match &e.kind {
        Kind::MissingField(f) => {
            path.push(f.to_string());
            "missing".to_string()
        }
        Kind::UnknownField(f, _) => {
            if path.last() != Some(f) {
                path.push(f.clone());
            }
            "unknown key".to_string()
        }
        Kind::DuplicateField(f) => {
            path.push(f.to_string());
            "given twice".to_string()
        }
        Kind::InvalidType(actual, expected) => format!("expected {expected}, found {actual}"),
        Kind::InvalidValue(actual, expected) => format!("expected {expected}, found {actual}"),
        other => one_line(&other.to_string()),
    };
    let mut key = if path.is_empty() { "(root)".to_string() } else { path.join(".") };
    // A whole table missing: name the first key it needs, which is what the operator must set.
    if let Some(first) = REQUIRED_FIRST.iter().find(|(table, _)| *table == key).map(|(_, k)| *k) {
        key = first.to_string();
    }
    let message = match key.as_str() {
        "database.url" if message == "missing" => {
            "missing (set it in the config file, QUEUE_DATABASE__URL or DATABASE_URL)".to_string()
        }
        _ => match e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
            Some(figment::Source::Code(_)) => format!("{message} (from the environment)"),
            _ => message,
        },
    };
    ConfigError::new(key, message)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---- sections shared by the services ----

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Socket address to listen on; port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// How peers reach this service; defaults to `http://<listen>`.
    #[serde(default)]
    pub public_url: Option<url::Url>,
    /// Worker threads; defaults to the number of cores.
    #[serde(default)]
    pub workers: Option<usize>,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout_secs: u64,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// HTTPS for this listener and the CA that peers are checked against. Off by default.
    #[serde(default)]
    pub tls: TlsConfig,
}

/// Service-to-service TLS (rustls). Unset, everything is plain HTTP, as for local runs;
/// deployments (compose, Kubernetes) set all three.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first) this service serves HTTPS with; needs `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1) of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// PEM CA certificate(s) for outgoing https calls (peers, JWKS). When set, these are the
    /// only roots trusted: a peer's certificate must chain to them.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl TlsConfig {
    /// The certificate and key to serve with, if HTTPS is on.
    pub fn serving(&self) -> Option<(&Path, &Path)> {
        Some((self.cert_file.as_deref()?, self.key_file.as_deref()?))
    }
}

impl Validate for TlsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                crate::tls::server_config(cert, key).map_err(|e| ConfigError::new("server.tls.cert_file", e))?;
            }
            (None, None) => {}
            (Some(_), None) => return Err(ConfigError::new("server.tls.key_file", "missing (cert_file is set)")),
            (None, Some(_)) => return Err(ConfigError::new("server.tls.cert_file", "missing (key_file is set)")),
        }
        if let Some(ca) = &self.ca_file {
            crate::tls::read_ca(ca).map_err(|e| ConfigError::new("server.tls.ca_file", e))?;
        }
        Ok(())
    }
}

fn default_shutdown_timeout() -> u64 {
    30
}
fn default_max_body() -> usize {
    256 * 1024
}

impl Validate for ServerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.workers == Some(0) {
            return Err(ConfigError::new("server.workers", "must be at least 1"));
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::new("server.max_body_bytes", "must be at least 1"));
        }
        if let Some(u) = &self.public_url
            && !matches!(u.scheme(), "http" | "https")
        {
            return Err(ConfigError::new("server.public_url", "must be an http or https URL"));
        }
        self.tls.validate()
    }
}

#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/db`; the password is never printed.
    pub url: String,
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Seconds to wait for a connection from the pool.
    #[serde(default = "default_db_timeout")]
    pub timeout_secs: u64,
}

fn default_pool_size() -> usize {
    16
}
fn default_db_timeout() -> u64 {
    5
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

/// The URL with any password replaced, for logs.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("redacted"));
            }
            u.to_string()
        }
        Err(_) => "<unparseable url>".to_string(),
    }
}

impl Validate for DatabaseConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let u = url::Url::parse(&self.url).map_err(|e| ConfigError::new("database.url", format!("not a URL: {e}")))?;
        if !matches!(u.scheme(), "postgres" | "postgresql") {
            return Err(ConfigError::new("database.url", "must be a postgres:// URL"));
        }
        if !(1..=1000).contains(&self.pool_size) {
            return Err(ConfigError::new("database.pool_size", "must be between 1 and 1000"));
        }
        if self.timeout_secs == 0 {
            return Err(ConfigError::new("database.timeout_secs", "must be at least 1"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,queue_audit=debug`.
    #[serde(default = "default_level")]
    pub level: String,
    /// OTLP/HTTP collector base URL (e.g. `http://127.0.0.1:4318`); spans are exported only
    /// when this is set.
    #[serde(default)]
    pub otlp_endpoint: Option<url::Url>,
    /// Peers (CIDRs or addresses) whose incoming `traceparent` a request continues; from anyone
    /// else it starts a new trace, so a client cannot choose the trace id its requests (and the
    /// audit events they write) are filed under. Default: loopback only. Deployments list the
    /// networks the other services and the proxy call from.
    #[serde(default = "crate::net::TrustedNetworks::loopback")]
    pub trusted_peers: crate::net::TrustedNetworks,
}

fn default_level() -> String {
    "info".into()
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: default_level(),
            otlp_endpoint: None,
            trusted_peers: crate::net::TrustedNetworks::loopback(),
        }
    }
}

impl Validate for TelemetryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map_err(|e| ConfigError::new("telemetry.level", format!("not a tracing filter: {e}")))?;
        if let Some(u) = &self.otlp_endpoint
            && !matches!(u.scheme(), "http" | "https")
        {
            return Err(ConfigError::new("telemetry.otlp_endpoint", "must be an http or https URL"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuerConfig {
    pub issuer: String,
    #[serde(default)]
    pub jwks_url: Option<url::Url>,
    #[serde(default)]
    pub public_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokensConfig {
    /// This service's identity: `iss` of the tokens it mints, the audience it accepts.
    pub issuer: String,
    /// Ed25519 private key (PKCS#8 PEM) that signs this service's tokens.
    pub signing_key: PathBuf,
    /// Older public keys still published in the JWKS during a rotation.
    #[serde(default)]
    pub previous_public_keys: Vec<PathBuf>,
    /// Peers whose tokens this service accepts (routes narrow this further).
    #[serde(default)]
    pub trusted: Vec<TrustedIssuerConfig>,
    /// Clock skew tolerated on `exp` and `iat`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// How often peers' JWKS are refreshed, in seconds.
    #[serde(default = "default_refresh")]
    pub jwks_refresh_secs: u64,
    /// The least time between two fetches of one peer's JWKS on unknown `kid`s, in seconds.
    #[serde(default = "default_refetch")]
    pub jwks_refetch_min_secs: u64,
    /// The most one-use tokens remembered at once (the replay set). Size it for writes per
    /// second × token lifetime (+ leeway); each entry costs about 60 bytes. When full of live
    /// entries, new tokens on state-changing routes are refused with 503.
    #[serde(default = "default_replay_max_entries")]
    pub replay_max_entries: usize,
}

fn default_leeway() -> u64 {
    30
}
fn default_refresh() -> u64 {
    300
}
fn default_refetch() -> u64 {
    30
}
fn default_replay_max_entries() -> usize {
    queue_svc_token::REPLAY_MAX_ENTRIES
}
/// Below this the set fills at a few writes a second and the service refuses writes with 503.
const REPLAY_MIN_ENTRIES: usize = 1_000;

impl Validate for TokensConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !valid_name(&self.issuer) {
            return Err(ConfigError::new("tokens.issuer", "must be 1-64 characters of a-z, 0-9, '-' or '_'"));
        }
        if !self.signing_key.is_file() {
            return Err(ConfigError::new(
                "tokens.signing_key",
                format!(
                    "{} does not exist (make run creates dev keys with `queuectl keys init`)",
                    self.signing_key.display()
                ),
            ));
        }
        read_key("tokens.signing_key", &self.signing_key, |t| queue_svc_token::SigningKey::from_pem(t).map(drop))?;
        if self.leeway_secs > 300 {
            return Err(ConfigError::new("tokens.leeway_secs", "must be at most 300"));
        }
        if self.jwks_refresh_secs == 0 {
            return Err(ConfigError::new("tokens.jwks_refresh_secs", "must be at least 1"));
        }
        if self.replay_max_entries < REPLAY_MIN_ENTRIES {
            return Err(ConfigError::new(
                "tokens.replay_max_entries",
                "must be at least 1000 (size it as writes per second × token lifetime)",
            ));
        }
        for (i, p) in self.previous_public_keys.iter().enumerate() {
            read_key(&format!("tokens.previous_public_keys[{i}]"), p, |t| {
                queue_svc_token::PublicKey::from_pem(t).map(drop)
            })?;
        }
        let mut seen = std::collections::HashSet::new();
        for (i, t) in self.trusted.iter().enumerate() {
            let key = |k: &str| format!("tokens.trusted[{i}].{k}");
            if !valid_name(&t.issuer) {
                return Err(ConfigError::new(key("issuer"), "must be 1-64 characters of a-z, 0-9, '-' or '_'"));
            }
            if !seen.insert(t.issuer.as_str()) {
                return Err(ConfigError::new(key("issuer"), format!("`{}` is listed twice", t.issuer)));
            }
            match (&t.jwks_url, &t.public_key) {
                (Some(u), None) if matches!(u.scheme(), "http" | "https") => {}
                (Some(_), None) => return Err(ConfigError::new(key("jwks_url"), "must be an http or https URL")),
                (None, Some(p)) => {
                    read_key(&key("public_key"), p, |t| queue_svc_token::PublicKey::from_pem(t).map(drop))?
                }
                _ => return Err(ConfigError::new(key("jwks_url"), "set exactly one of `jwks_url` and `public_key`")),
            }
        }
        Ok(())
    }
}

/// Reads a PEM key file and checks that `parse` accepts it; the error names the key.
fn read_key(
    key: &str,
    path: &Path,
    parse: impl Fn(&str) -> Result<(), queue_svc_token::KeyError>,
) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    parse(&text).map_err(|e| ConfigError::new(key, format!("{} is not a usable Ed25519 key: {e}", path.display())))
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The configuration shared by the services that own a database (auth, rbac, audit).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    pub tokens: TokensConfig,
}

impl Validate for ServiceConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.database.validate()?;
        self.telemetry.validate()?;
        self.tokens.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyfile(dir: &Path) -> String {
        let p = dir.join("k.pem");
        let (private_pem, _) = queue_svc_token::generate_ed25519_pem().expect("generate");
        std::fs::write(&p, private_pem.as_bytes()).expect("write");
        p.display().to_string()
    }

    fn base_env(dir: &Path) -> Vec<(String, String)> {
        vec![
            ("QUEUE_SERVER__LISTEN".into(), "127.0.0.1:0".into()),
            ("DATABASE_URL".into(), "postgres://app@127.0.0.1:5432/app".into()),
            ("QUEUE_TOKENS__ISSUER".into(), "audit".into()),
            ("QUEUE_TOKENS__SIGNING_KEY".into(), keyfile(dir)),
        ]
    }

    struct Env(Vec<(String, String)>);
    impl EnvSource for Env {
        fn vars(&self) -> Vec<(String, String)> {
            self.0.clone()
        }
    }

    #[test]
    fn environment_alone_is_enough() {
        let dir = tempfile::tempdir().expect("tmp");
        let c: ServiceConfig = load(None, &Env(base_env(dir.path()))).expect("valid");
        assert_eq!(c.server.listen.port(), 0);
        assert_eq!(c.database.pool_size, 16);
        assert_eq!(c.tokens.issuer, "audit");
    }

    #[test]
    fn environment_overrides_the_file_and_values_are_typed() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[server]\nlisten = \"127.0.0.1:1\"\n[database]\nurl = \"postgres://a@h/d\"\npool_size = 3\n",
        )
        .expect("write");
        let mut env = base_env(dir.path());
        env.retain(|(k, _)| k != "DATABASE_URL");
        env.push(("QUEUE_DATABASE__POOL_SIZE".into(), "7".into()));
        let c: ServiceConfig = load(Some(&file), &Env(env)).expect("valid");
        assert_eq!(c.database.pool_size, 7);
        assert_eq!(c.server.listen.port(), 0);
    }

    #[test]
    fn missing_database_url_names_the_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut env = base_env(dir.path());
        env.retain(|(k, _)| k != "DATABASE_URL");
        let e = load::<ServiceConfig>(None, &Env(env)).expect_err("must fail");
        assert_eq!(e.key, "database.url");
        assert!(e.to_string().contains("DATABASE_URL"));
    }

    #[test]
    fn an_unknown_key_is_refused_from_env_and_from_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut env = base_env(dir.path());
        env.push(("QUEUE_SERVER__LISTNE".into(), "127.0.0.1:1".into()));
        let e = load::<ServiceConfig>(None, &Env(env)).expect_err("must fail");
        assert_eq!(e.key, "server.listne");
        assert!(e.message.contains("unknown key"), "{e}");

        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[telemetry]\nformt = \"json\"\n").expect("write");
        let e = load::<ServiceConfig>(Some(&file), &Env(base_env(dir.path()))).expect_err("must fail");
        assert_eq!(e.key, "telemetry.formt");
    }

    #[test]
    fn malformed_values_name_the_key() {
        let dir = tempfile::tempdir().expect("tmp");
        for (var, value, key) in [
            ("QUEUE_SERVER__LISTEN", "not-an-address", "server.listen"),
            ("QUEUE_DATABASE__POOL_SIZE", "many", "database.pool_size"),
            ("DATABASE_URL", "mysql://x@y/z", "database.url"),
            ("QUEUE_TELEMETRY__FORMAT", "xml", "telemetry.format"),
            ("QUEUE_TOKENS__SIGNING_KEY", "/nonexistent/key.pem", "tokens.signing_key"),
            ("QUEUE_TOKENS__SIGNING_KEY", "/etc/hostname", "tokens.signing_key"),
        ] {
            let mut env = base_env(dir.path());
            env.retain(|(k, _)| k != var);
            env.push((var.into(), value.into()));
            let e = load::<ServiceConfig>(None, &Env(env)).expect_err(var);
            assert_eq!(e.key, key, "{var}={value}: {e}");
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn trusted_peers_take_cidrs_and_a_bad_one_names_the_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let c: ServiceConfig = load(None, &Env(base_env(dir.path()))).expect("valid");
        assert_eq!(c.telemetry.trusted_peers, crate::net::TrustedNetworks::loopback(), "loopback by default");
        let mut env = base_env(dir.path());
        env.push(("QUEUE_TELEMETRY__TRUSTED_PEERS".into(), r#"["10.0.0.0/8", "fd00::1"]"#.into()));
        let c: ServiceConfig = load(None, &Env(env)).expect("valid");
        assert!(c.telemetry.trusted_peers.contains("10.1.2.3".parse().expect("ip")));
        let mut env = base_env(dir.path());
        env.push(("QUEUE_TELEMETRY__TRUSTED_PEERS".into(), r#"["10.0.0.0/40"]"#.into()));
        let e = load::<ServiceConfig>(None, &Env(env)).expect_err("a bad CIDR");
        assert_eq!(e.key, "telemetry.trusted_peers", "{e}");
        assert!(e.message.contains("`10.0.0.0/40` is not a CIDR network"), "{e}");
    }

    #[test]
    fn tls_needs_both_halves_and_readable_pem() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut env = base_env(dir.path());
        env.push(("QUEUE_SERVER__TLS__CERT_FILE".into(), "/etc/hostname".into()));
        let e = load::<ServiceConfig>(None, &Env(env.clone())).expect_err("key missing");
        assert_eq!(e.key, "server.tls.key_file");
        env.push(("QUEUE_SERVER__TLS__KEY_FILE".into(), "/etc/hostname".into()));
        let e = load::<ServiceConfig>(None, &Env(env)).expect_err("not PEM");
        assert_eq!(e.key, "server.tls.cert_file");
        let mut env = base_env(dir.path());
        env.push(("QUEUE_SERVER__TLS__CA_FILE".into(), "/nonexistent/ca.pem".into()));
        let e = load::<ServiceConfig>(None, &Env(env)).expect_err("no CA");
        assert_eq!(e.key, "server.tls.ca_file");
    }

    #[test]
    fn replay_max_entries_defaults_and_a_too_small_one_names_the_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let c: ServiceConfig = load(None, &Env(base_env(dir.path()))).expect("valid");
        assert_eq!(c.tokens.replay_max_entries, 250_000);
        let mut env = base_env(dir.path());
        env.push(("QUEUE_TOKENS__REPLAY_MAX_ENTRIES".into(), "1000".into()));
        let c: ServiceConfig = load(None, &Env(env)).expect("the least allowed");
        assert_eq!(c.tokens.replay_max_entries, 1000);
        for value in ["999", "0"] {
            let mut env = base_env(dir.path());
            env.push(("QUEUE_TOKENS__REPLAY_MAX_ENTRIES".into(), value.into()));
            let e = load::<ServiceConfig>(None, &Env(env)).expect_err(value);
            assert_eq!(e.key, "tokens.replay_max_entries", "{value}: {e}");
            assert!(e.message.contains("at least 1000"), "{e}");
        }
        let mut env = base_env(dir.path());
        env.push(("QUEUE_TOKENS__REPLAY_MAX_ENTRIES".into(), "lots".into()));
        let e = load::<ServiceConfig>(None, &Env(env)).expect_err("not a number");
        assert_eq!(e.key, "tokens.replay_max_entries", "{e}");
    }

    #[test]
    fn the_password_never_prints() {
        let c = DatabaseConfig { url: "postgres://u:s3cret@h/d".into(), pool_size: 1, timeout_secs: 1 };
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
