//! The state every service shares with its handlers (`web::Data<Platform>`): its name, database,
//! metrics, token material and HTTP client. Apart from `server.rs` so that the extractors
//! (`service_auth`, `sessions`, `caller`) can reach it without depending on the server that
//! mounts them.

use queue_svc_token::{
    IssuerSource, JwkSet, Minter, PublicKey, SigningKey, SystemClock, TrustedIssuer, Verifier, VerifierSettings,
};
use std::sync::Arc;
use std::time::Duration;

use crate::config::TokensConfig;
use crate::db::Db;
use crate::error::ApiError;
use crate::http_client::HttpClient;
use crate::metrics::Metrics;
use crate::net::TrustedNetworks;

/// This service's token material: what it signs with, what it accepts, what it publishes.
pub struct Tokens {
    pub minter: Minter,
    pub verifier: Verifier,
    pub jwks: JwkSet,
}

impl Tokens {
    pub fn from_config(config: &TokensConfig, http: &HttpClient) -> anyhow::Result<Self> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
        };
        let signing = Arc::new(SigningKey::from_pem(&read(&config.signing_key)?)?);
        let mut jwks = JwkSet { keys: vec![signing.public().to_jwk()] };
        for p in &config.previous_public_keys {
            jwks.keys.push(PublicKey::from_pem(&read(p)?)?.to_jwk());
        }
        let mut trusted = Vec::new();
        for t in &config.trusted {
            let source = match (&t.jwks_url, &t.public_key) {
                (Some(url), _) => IssuerSource::Jwks(url.to_string()),
                (None, Some(p)) => IssuerSource::Static(vec![PublicKey::from_pem(&read(p)?)?]),
                (None, None) => anyhow::bail!("tokens.trusted `{}` has no key source", t.issuer),
            };
            trusted.push(TrustedIssuer { name: t.issuer.clone(), source });
        }
        let mut settings = VerifierSettings::new(config.issuer.clone());
        settings.leeway_secs = config.leeway_secs;
        settings.refresh_interval = Duration::from_secs(config.jwks_refresh_secs);
        settings.refetch_min_interval = Duration::from_secs(config.jwks_refetch_min_secs);
        settings.replay_max_entries = config.replay_max_entries;
        let verifier = Verifier::new(settings, trusted, http.reqwest().clone(), Arc::new(SystemClock));
        Ok(Self { minter: Minter::new(config.issuer.clone(), signing), verifier, jwks })
    }
}

/// What every handler can reach through `web::Data<Platform>`.
pub struct Platform {
    pub name: &'static str,
    pub db: Option<Db>,
    pub metrics: Metrics,
    pub tokens: Tokens,
    pub http: HttpClient,
    /// Peers whose incoming `traceparent` is continued (`telemetry.trusted_peers`).
    pub trace_peers: TrustedNetworks,
    /// This service's document merged with the platform endpoints' (built by
    /// `Platform::new` in `server.rs`, which owns those endpoints).
    pub(crate) openapi: String,
    /// The document's paths and methods: what a 405 names in `Allow`.
    pub contract: crate::contract::Contract,
}

impl Platform {
    /// This service's OpenAPI document (JSON), for a listener that serves it elsewhere than
    /// the platform endpoints (queue-proxy's admin listener).
    pub fn openapi(&self) -> &str {
        &self.openapi
    }

    /// The database; services that have one call this.
    pub fn db(&self) -> Result<&Db, ApiError> {
        self.db.as_ref().ok_or_else(|| ApiError::internal(anyhow::anyhow!("{} has no database", self.name)))
    }
}
