//! queue-proxy: the strangler-fig front door. It sends each legacy path to Raptor or to a
//! Queue service according to the migration phase in its route table (docs/proxy.md), with
//! sticky canaries, shadow comparison, safe reloads and one-step rollback. It owns no database.
//!
//! Two listeners: the public one (forwarding, plus the platform endpoints a peer needs: health,
//! readiness, JWKS) and the admin one (loopback, service token, no browsers; also the proxy's
//! own metrics and OpenAPI document). The binary only loads config and calls [`run`]; tests
//! call [`start`] on port 0.

mod admin;
mod canonical;
mod carry;
mod clients;
mod config;
mod conn;
mod deadline;
mod error;
mod forward;
mod framing;
mod headers;
mod identity;
mod listener;
mod metrics;
mod pool;
mod shadow;
pub mod standin;
mod store;
mod table;
mod upstream;

use actix_web::{App, HttpServer, web};
use queue_platform::net::TrustedNetworks;
use queue_platform::{Platform, Running, Signals};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;

pub use crate::config::{
    AdminConfig, AuditLink, ForwardingConfig, IdentityConfig, ProxyConfig, RoutingConfig, ShadowConfig,
};
use crate::identity::IdentityClient;
use crate::metrics::ProxyMetrics;
use crate::shadow::Shadow;
use crate::store::TableStore;

pub const NAME: &str = "queue-proxy";

/// What every request handler reaches.
pub(crate) struct ProxyState {
    tables: TableStore,
    /// For each worker's pool of keep-alive connections (plain-http upstreams).
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
    /// https upstreams (rustls with the platform verifier) and shadow copies.
    http: reqwest::Client,
    /// Longest pause while reading an upstream's body.
    read_timeout: Duration,
    shadow: Arc<Shadow>,
    identity: Option<IdentityClient>,
    metrics: ProxyMetrics,
    platform: Arc<Platform>,
    trusted_proxies: TrustedNetworks,
    max_header_bytes: usize,
    /// Paths never forwarded (`forwarding.blocked_prefixes`).
    blocked_prefixes: Vec<String>,
    /// Per-client cap on requests in flight (clients.rs).
    clients: Arc<clients::ClientSlots>,
    max_body_bytes: usize,
    /// How long a client has to send a request's body, from its head.
    client_body_timeout: Duration,
    /// Longest pause while writing to a client (listener.rs).
    client_write_timeout: Duration,
    cookie: String,
    /// Raptor's session cookie, carried over to Queue (carry.rs); empty: off.
    legacy_cookie: String,
    /// Whether the proxy's public scheme is https: a carried-over session's cookie is `Secure`.
    cookie_secure: bool,
    tenant_header: String,
    /// Where admin changes are recorded before they apply; `None` when `[audit]` is absent.
    audit: Option<queue_audit_client::AuditClient>,
    /// One admin change at a time, from its plan through its audit write to its swap.
    admin_changes: tokio::sync::Mutex<()>,
}

impl ProxyState {
    /// A pool of keep-alive connections to plain-http upstreams (one per worker thread: a
    /// pooled connection is driven by the thread that opened it).
    fn upstream_pool(&self) -> pool::Pool {
        pool::Pool::new(self.connect_timeout, self.pool_idle_timeout, self.pool_max_idle_per_host)
    }
}

/// A started proxy: the public server (in `running`) and the admin listener's address.
pub struct Started {
    pub running: Running,
    pub admin_addr: SocketAddr,
}

pub async fn run(config: ProxyConfig, signals: Signals) -> anyhow::Result<Running> {
    Ok(start(config, signals).await?.running)
}

/// Starts both listeners and the background tasks (table watch, SIGHUP, shadow dispatcher).
pub async fn start(config: ProxyConfig, signals: Signals) -> anyhow::Result<Started> {
    let peers = queue_platform::http_client::HttpClient::from_config(&config.server.tls)?;
    // The document describes the admin listener, where it is served: not the platform
    // endpoints of the public one.
    let platform =
        Platform::with_own_document(NAME, None, &config.tokens, &config.telemetry, peers, admin::AdminApi::openapi())?;
    // With `server.tls.ca_file`, https upstreams (the services in a TLS deployment) may also
    // chain to the deployment's CA; the platform roots stay for a legacy side on a public CA.
    let internal_roots = match &config.server.tls.ca_file {
        Some(ca) => queue_platform::tls::read_ca(ca).map_err(|e| anyhow::anyhow!("server.tls.ca_file: {e}"))?,
        None => Vec::new(),
    };
    let metrics = ProxyMetrics::new(platform.metrics.registry());
    let tables = TableStore::open(config.routing.table.clone(), config.routing.history, metrics.clone())
        .map_err(|e| anyhow::anyhow!("routing.table: {e}"))?;
    let f = &config.forwarding;
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_millis(f.connect_timeout_ms))
        .read_timeout(Duration::from_millis(f.read_timeout_ms))
        .pool_idle_timeout(Duration::from_secs(f.pool_idle_timeout_secs))
        .pool_max_idle_per_host(f.pool_max_idle_per_host)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tcp_nodelay(true)
        .tls_certs_merge(internal_roots.clone())
        .build()?;
    let (shadow, shadow_task) =
        Shadow::start(config.shadow.queue, config.shadow.concurrency, http.clone(), metrics.clone());
    let identity = match &config.identity.auth_url {
        Some(u) => Some(IdentityClient::new(
            u,
            Duration::from_millis(config.identity.timeout_ms),
            Duration::from_secs(config.identity.cache_secs),
            config.identity.cache_entries,
            internal_roots,
        )?),
        None => None,
    };
    let clients = clients::ClientSlots::new(f.max_in_flight_per_client, metrics.client_in_flight.clone());
    let state = web::Data::new(ProxyState {
        tables,
        connect_timeout: Duration::from_millis(f.connect_timeout_ms),
        pool_idle_timeout: Duration::from_secs(f.pool_idle_timeout_secs),
        pool_max_idle_per_host: f.pool_max_idle_per_host,
        http,
        read_timeout: Duration::from_millis(f.read_timeout_ms),
        shadow,
        identity,
        metrics,
        platform: platform.clone(),
        trusted_proxies: config.forwarding.trusted_proxies.clone(),
        max_header_bytes: config.forwarding.max_header_bytes,
        blocked_prefixes: config.forwarding.blocked_prefixes.clone(),
        clients,
        max_body_bytes: f.max_body_bytes,
        client_body_timeout: Duration::from_millis(f.client_body_timeout_ms),
        client_write_timeout: Duration::from_millis(f.client_write_timeout_ms),
        cookie: config.identity.cookie.clone(),
        legacy_cookie: config.identity.legacy_session_cookie.clone(),
        cookie_secure: config.server.public_url.as_ref().is_some_and(|u| u.scheme() == "https"),
        tenant_header: config.identity.tenant_header.to_ascii_lowercase(),
        audit: config.audit.as_ref().map(|a| {
            queue_audit_client::AuditClient::new(
                platform.http.clone(),
                a.url.clone(),
                Arc::new(platform.tokens.minter.clone()),
            )
            .with_timeout(Duration::from_millis(a.timeout_ms))
        }),
        admin_changes: tokio::sync::Mutex::new(()),
    });
    // Not a config error: a proxy nobody may administer still forwards (and its admin API
    // refuses every token, failing closed).
    for i in config.admin.issuers.iter().filter(|i| !config.tokens.trusted.iter().any(|t| &t.issuer == *i)) {
        tracing::warn!(issuer = %i, "admin.issuers names an issuer not in tokens.trusted: its tokens cannot verify");
    }
    if config.identity.auth_url.is_none() && !config.identity.legacy_session_cookie.is_empty() {
        tracing::info!("no identity.auth_url: Raptor sessions are not carried over to Queue's routes");
    }
    if config.audit.is_none() {
        tracing::warn!("no [audit] configured: admin phase changes, reloads and rollbacks are not audited");
    }

    let admin_state = state.clone();
    let admin_platform = web::Data::from(platform.clone());
    let admin_issuers = config.admin.issuers.clone();
    // Bound first: the admin guard's allowed hosts include the address actually bound.
    let admin_listener = std::net::TcpListener::bind(config.admin.listen)
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (admin.listen): {e}", config.admin.listen))?;
    admin_listener.set_nonblocking(true)?;
    let admin_addr = admin_listener.local_addr()?;
    let guard = web::Data::new(admin::AdminGuard::new(admin_addr, &config.admin.hosts));
    let admin = HttpServer::new(move || {
        App::new()
            .app_data(admin_state.clone())
            .app_data(admin_platform.clone())
            .app_data(guard.clone())
            .app_data(web::JsonConfig::default().limit(4096).error_handler(queue_platform::error::json_error_handler))
            .configure(admin::configure(admin_issuers.clone()))
            .default_service(web::to(queue_platform::error::not_found))
            // A method the document does not declare: 405 with `Allow` (inside the browser
            // check, so a browser is refused before it learns the methods).
            .wrap(actix_web::middleware::from_fn(queue_platform::error::method_not_allowed))
            .wrap(actix_web::middleware::from_fn(admin::refuse_browsers))
    })
    .workers(1)
    .disable_signals()
    .listen(admin_listener)
    .map_err(|e| anyhow::anyhow!("cannot listen on {} (admin.listen): {e}", config.admin.listen))?;
    let admin = admin.run();

    let mut running = listener::serve(platform, &config.server, signals, state.clone().into_inner())?;
    tracing::info!(%admin_addr, "admin listening on http://{admin_addr}");
    // Dropping a started actix server stops it: aborting this task (when the public server
    // stops) stops the admin listener.
    running.tasks.push(tokio::spawn(async move {
        let _ = admin.await;
    }));
    running.tasks.push(shadow_task);
    if config.routing.table.is_some() && config.routing.watch_interval_ms > 0 {
        let s = state.clone();
        let every = Duration::from_millis(config.routing.watch_interval_ms);
        running.tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let _ = s.tables.reload_if_changed();
            }
        }));
    }
    if signals == Signals::Handle {
        // Always handled: SIGHUP's default action would end the process.
        let s = state.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        running.tasks.push(tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = s.tables.reload("sighup");
            }
        }));
    }
    Ok(Started { running, admin_addr })
}
