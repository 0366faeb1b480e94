//! `TestApp`: one service, booted through its real `run` on 127.0.0.1:0 against its own
//! database, with typed helpers for calling it.

use queue_platform::config::{DatabaseConfig, ServerConfig, TelemetryConfig, TokensConfig, TrustedIssuerConfig};
use queue_platform::db::SchemaMigrations;
use queue_platform::{Running, ServiceConfig};
use reqwest::StatusCode;
use serde_json::Value;
use std::future::Future;
use std::net::SocketAddr;

use crate::db::TestDb;
use crate::keys::{IDENTITIES, TestKeys};

/// A config for `issuer` (e.g. "audit") listening on port 0, trusting every other test
/// identity through its static public key.
pub fn service_config(issuer: &str, database_url: &str, keys: &TestKeys) -> ServiceConfig {
    ServiceConfig {
        server: ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            public_url: None,
            workers: Some(2),
            shutdown_timeout_secs: 5,
            max_body_bytes: 256 * 1024,
            tls: Default::default(),
        },
        database: DatabaseConfig { url: database_url.to_string(), pool_size: 8, timeout_secs: 5 },
        telemetry: TelemetryConfig::default(),
        tokens: TokensConfig {
            issuer: issuer.to_string(),
            signing_key: keys.private(issuer),
            previous_public_keys: Vec::new(),
            trusted: IDENTITIES
                .iter()
                .filter(|i| **i != issuer)
                .map(|i| TrustedIssuerConfig {
                    issuer: i.to_string(),
                    jwks_url: None,
                    public_key: Some(keys.public(i)),
                })
                .collect(),
            leeway_secs: 30,
            jwks_refresh_secs: 300,
            jwks_refetch_min_secs: 30,
            replay_max_entries: queue_svc_token::REPLAY_MAX_ENTRIES,
        },
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub db: TestDb,
    pub keys: TestKeys,
    /// The audience this service accepts ("audit", "rbac", …).
    pub identity: String,
    pub client: reqwest::Client,
    handle: actix_web::dev::ServerHandle,
}

impl TestApp {
    /// Boots a service: a fresh database with `schema` migrated, fresh keys, `run` on port 0.
    pub async fn spawn<F, Fut>(identity: &str, schema: SchemaMigrations, run: F) -> Self
    where
        F: FnOnce(ServiceConfig) -> Fut,
        Fut: Future<Output = anyhow::Result<Running>>,
    {
        Self::spawn_with(identity, schema, run, |_| {}).await
    }

    /// Like `spawn`, letting the test adjust the config first.
    pub async fn spawn_with<F, Fut>(
        identity: &str,
        schema: SchemaMigrations,
        run: F,
        adjust: impl FnOnce(&mut ServiceConfig),
    ) -> Self
    where
        F: FnOnce(ServiceConfig) -> Fut,
        Fut: Future<Output = anyhow::Result<Running>>,
    {
        Self::spawn_in(identity, TestDb::new(&[schema]).await, TestKeys::new(), run, adjust).await
    }

    /// Boots a service on a given database with given keys: several services of one test world
    /// (sharing `keys`, so they trust each other's tokens), or two replicas of one service
    /// (sharing `db` too).
    pub async fn spawn_in<F, Fut>(
        identity: &str,
        db: TestDb,
        keys: TestKeys,
        run: F,
        adjust: impl FnOnce(&mut ServiceConfig),
    ) -> Self
    where
        F: FnOnce(ServiceConfig) -> Fut,
        Fut: Future<Output = anyhow::Result<Running>>,
    {
        let mut config = service_config(identity, &db.url, &keys);
        adjust(&mut config);
        let running = run(config).await.expect("service starts");
        let addr = running.addr;
        let handle = running.handle();
        tokio::spawn(running.wait());
        Self { addr, db, keys, identity: identity.to_string(), client: reqwest::Client::new(), handle }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("request")
    }

    /// GET and parse the JSON body.
    pub async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let r = self.get(path).await;
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// GET with a bearer token, parse the JSON body.
    pub async fn get_json_as(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let r = self.client.get(self.url(path)).bearer_auth(token).send().await.expect("request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// POST JSON with a bearer token, parse the JSON body.
    pub async fn post_json_as(&self, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        let r = self.client.post(self.url(path)).bearer_auth(token).json(body).send().await.expect("request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A token from `issuer` for this service, signed with the test keys it trusts.
    pub fn token(&self, issuer: &str, scopes: &[&str]) -> String {
        self.keys.token(issuer, &self.identity, scopes)
    }

    /// Stops the server, letting in-flight requests finish.
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Not awaited: the runtime may be shutting down. Stopping is idempotent.
        drop(self.handle.stop(false));
    }
}
