//! The test world: the proxy (its real `start`, both listeners on port 0), the legacy stand-in
//! playing Raptor, stand-ins playing Queue services and auth's session validation, and a
//! route table file in a temporary directory.

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};
use queue_proxy::{ForwardingConfig, IdentityConfig, ProxyConfig, RoutingConfig, ShadowConfig};
use queue_testkit::TestKeys;
use reqwest::StatusCode;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A server this test started; stopped on drop.
pub struct Upstream {
    pub addr: SocketAddr,
    handle: ServerHandle,
}

impl Upstream {
    pub fn new(addr: SocketAddr, handle: ServerHandle) -> Self {
        Self { addr, handle }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Sends the stop command now; the returned future only waits for completion.
        drop(self.handle.stop(false));
    }
}

/// The echoing stand-in, as Raptor (`every_path` false) or as a Queue service.
pub fn standin(name: &str, every_path: bool) -> Upstream {
    let (addr, server) =
        queue_proxy::standin::serve("127.0.0.1:0".parse().expect("addr"), name, 2, every_path).expect("bind");
    let handle = server.handle();
    tokio::spawn(server);
    Upstream { addr, handle }
}

/// A stand-in of auth's `POST /internal/v1/sessions/validate`: a session token `sess-<user>`
/// is valid for user `<user>` (up to a `_`, after which a token may be padded to the length of a
/// real one), until 2030-01-01; it counts the calls and refuses calls without a bearer token.
/// With `down` set it answers 503 to everything (auth overwhelmed or down), uncounted.
pub struct AuthStandin {
    pub upstream: Upstream,
    pub calls: Arc<AtomicU64>,
    pub down: Arc<std::sync::atomic::AtomicBool>,
}

pub fn auth_standin() -> AuthStandin {
    let calls = Arc::new(AtomicU64::new(0));
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let c = calls.clone();
    let d = down.clone();
    let server = HttpServer::new(move || {
        let c = c.clone();
        let d = d.clone();
        App::new().route(
            "/internal/v1/sessions/validate",
            web::post().to(move |req: actix_web::HttpRequest, body: web::Json<Value>| {
                let c = c.clone();
                let d = d.clone();
                async move {
                    if d.load(Ordering::SeqCst) {
                        return HttpResponse::ServiceUnavailable().finish();
                    }
                    c.fetch_add(1, Ordering::SeqCst);
                    let bearer = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
                    if bearer.strip_prefix("Bearer ").is_none_or(|t| t.split('.').count() != 3) {
                        return HttpResponse::Unauthorized().finish();
                    }
                    let token = body["token"].as_str().unwrap_or("");
                    match token.strip_prefix("sess-").map(|u| u.split('_').next().unwrap_or(u)) {
                        Some(user) => HttpResponse::Ok().json(serde_json::json!({
                            "valid": true, "session_id": format!("s-{user}"), "user_id": user,
                            "tenant_id": "tenant-1", "idle_expires_at": "2030-01-01T00:00:00Z",
                            "absolute_expires_at": "2030-01-01T00:00:00Z"})),
                        None => HttpResponse::Ok().json(serde_json::json!({"valid": false})),
                    }
                }
            }),
        )
    })
    .workers(2)
    .disable_signals()
    .bind("127.0.0.1:0")
    .expect("bind");
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    AuthStandin { upstream: Upstream { addr, handle }, calls, down }
}

/// An upstream that holds every request until released: a shadow side that never answers.
pub struct Gate {
    pub upstream: Upstream,
    pub received: Arc<AtomicU64>,
    open: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Gate {
    pub fn release(&self) {
        let _ = self.open.send(true);
    }
}

pub fn gated_upstream() -> Gate {
    let received = Arc::new(AtomicU64::new(0));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let r = received.clone();
    let server = HttpServer::new(move || {
        let r = r.clone();
        let rx = rx.clone();
        App::new().default_service(web::to(move || {
            let r = r.clone();
            let mut rx = rx.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                let _ = rx.wait_for(|open| *open).await;
                HttpResponse::Ok().json(serde_json::json!({"server": "gated"}))
            }
        }))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .bind("127.0.0.1:0")
    .expect("bind");
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    Gate { upstream: Upstream { addr, handle }, received, open: Arc::new(tx) }
}

/// A loopback port with nothing listening on it.
pub fn closed_port_url() -> String {
    format!("http://127.0.0.1:{}", queue_testkit::process::free_port())
}

/// The running proxy and its table file.
pub struct Proxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub table: PathBuf,
    pub client: reqwest::Client,
    pub keys: TestKeys,
    _dir: tempfile::TempDir,
    handle: ServerHandle,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

pub struct Options {
    pub watch_interval_ms: u64,
    pub auth_url: Option<String>,
    pub shadow_queue: usize,
    pub shadow_concurrency: usize,
    pub trusted_proxies: queue_platform::net::TrustedNetworks,
    /// `forwarding.read_timeout_ms`.
    pub read_timeout_ms: u64,
    /// `audit.url`: where admin changes are recorded first (absent: not audited).
    pub audit_url: Option<String>,
    /// `admin.hosts`.
    pub admin_hosts: Vec<String>,
    /// `forwarding.client_body_timeout_ms`.
    pub client_body_timeout_ms: u64,
    /// `forwarding.client_write_timeout_ms`.
    pub client_write_timeout_ms: u64,
    /// `forwarding.max_in_flight_per_client`.
    pub max_in_flight_per_client: u32,
    /// `identity.cache_entries`.
    pub identity_cache_entries: usize,
    /// `server.tls.ca_file`: the CA https upstreams may chain to.
    pub ca_file: Option<PathBuf>,
    /// `identity.legacy_session_cookie` (`None`: the default, `raptor_session`).
    pub legacy_session_cookie: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            watch_interval_ms: 0,
            auth_url: None,
            shadow_queue: 64,
            shadow_concurrency: 4,
            trusted_proxies: queue_platform::net::TrustedNetworks::none(),
            read_timeout_ms: ForwardingConfig::default().read_timeout_ms,
            audit_url: None,
            admin_hosts: Vec::new(),
            client_body_timeout_ms: ForwardingConfig::default().client_body_timeout_ms,
            client_write_timeout_ms: ForwardingConfig::default().client_write_timeout_ms,
            max_in_flight_per_client: ForwardingConfig::default().max_in_flight_per_client,
            identity_cache_entries: IdentityConfig::default().cache_entries,
            ca_file: None,
            legacy_session_cookie: None,
        }
    }
}

impl Proxy {
    pub async fn start(table: &str) -> Proxy {
        Self::start_with(table, Options::default()).await
    }

    pub async fn start_with(table: &str, o: Options) -> Proxy {
        let keys = TestKeys::new();
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("routes.toml");
        std::fs::write(&path, table).expect("write table");
        let base = queue_testkit::service_config("proxy", "postgres://unused@127.0.0.1/none", &keys);
        let mut server = base.server;
        server.tls.ca_file = o.ca_file;
        let config = ProxyConfig {
            server,
            telemetry: base.telemetry,
            tokens: base.tokens,
            admin: queue_proxy::AdminConfig {
                listen: "127.0.0.1:0".parse().expect("addr"),
                hosts: o.admin_hosts,
                ..queue_proxy::AdminConfig::default()
            },
            routing: RoutingConfig { table: Some(path.clone()), watch_interval_ms: o.watch_interval_ms, history: 10 },
            forwarding: ForwardingConfig {
                trusted_proxies: o.trusted_proxies,
                read_timeout_ms: o.read_timeout_ms,
                client_body_timeout_ms: o.client_body_timeout_ms,
                client_write_timeout_ms: o.client_write_timeout_ms,
                max_in_flight_per_client: o.max_in_flight_per_client,
                ..ForwardingConfig::default()
            },
            identity: IdentityConfig {
                auth_url: o.auth_url.map(|u| u.parse().expect("url")),
                timeout_ms: 2000,
                cache_secs: 600,
                cache_entries: o.identity_cache_entries,
                legacy_session_cookie: o
                    .legacy_session_cookie
                    .unwrap_or_else(|| IdentityConfig::default().legacy_session_cookie),
                ..IdentityConfig::default()
            },
            shadow: ShadowConfig { queue: o.shadow_queue, concurrency: o.shadow_concurrency },
            audit: o.audit_url.map(|u| queue_proxy::AuditLink { url: u.parse().expect("url"), timeout_ms: 2000 }),
        };
        let started = queue_proxy::start(config, queue_platform::Signals::Ignore).await.expect("proxy starts");
        let addr = started.running.addr;
        let handle = started.running.handle();
        tokio::spawn(started.running.wait());
        Proxy { addr, admin: started.admin_addr, table: path, client: reqwest::Client::new(), keys, _dir: dir, handle }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.client.get(self.url(path)).send().await.expect("request");
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// An operator's admin token, as `queuectl proxy …` mints it.
    pub fn admin_token(&self) -> String {
        self.keys.token("operator", "proxy", &["proxy:admin"])
    }

    pub async fn admin_get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.client.get(self.admin_url(path)).bearer_auth(self.admin_token()).send().await.expect("request");
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// The admin listener's answer as text (the metrics).
    pub async fn admin_text(&self, path: &str) -> String {
        let r = self.client.get(self.admin_url(path)).bearer_auth(self.admin_token()).send().await.expect("request");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.text().await.expect("text")
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .client
            .post(self.admin_url(path))
            .bearer_auth(self.admin_token())
            .json(&body)
            .send()
            .await
            .expect("request");
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// A value of the proxy's own metrics (the admin listener's `/metrics`), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.admin_text("/metrics").await;
        // `name{labels} value` (the registry adds the service's labels) or `name value`.
        text.lines()
            .filter(|l| l.strip_prefix(series).is_some_and(|rest| rest.starts_with([' ', '{'])))
            .find_map(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.trim().parse().expect("a number"))
    }

    pub async fn version(&self) -> String {
        let (_, v) = self.admin_get("/admin/routes").await;
        v["version"].as_str().expect("version").to_string()
    }
}

/// A table: Raptor at `legacy`, auth at `auth`, backup codes cut over in phase 2 with a
/// rewrite, and `extra` appended to the backup-codes route.
pub fn table(phase: u8, legacy: &str, auth: &str, extra: &str) -> String {
    format!(
        r#"label = "test table"
phase = {phase}
default_legacy = "raptor"

[legacy.raptor]
url = "{legacy}"
response_timeout_ms = 2000

[services.auth]
url = "{auth}"
response_timeout_ms = 2000

[[routes]]
name = "backup-codes"
prefix = "/api/v1/auth/backup-codes"
queue = {{ service = "auth", path = "/queue/v1/backup-codes" }}
cutover_phase = 2
{extra}

[[routes]]
name = "sessions"
prefix = "/api/v1/auth/session"
queue = {{ service = "auth", path = "/api/v2/session" }}
cutover_phase = 3
"#
    )
}
