//! queue-proxy: the strangler-fig front door. It sends each legacy path to Raptor or to a
//! Queue service according to the migration phase. It owns no database.
//!
//! The binary only loads config and calls [`run`]; tests call the same `run` on port 0.

mod routes;

use queue_platform::bootstrap::ServiceSettings;
use queue_platform::config::{ConfigError, ServerConfig, TelemetryConfig, TokensConfig, Validate};
use queue_platform::{Platform, Running, Signals};
use serde::Deserialize;
use utoipa::OpenApi;

pub const NAME: &str = "queue-proxy";

/// The proxy's configuration: like the other services', without a database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    pub server: ServerConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    pub tokens: TokensConfig,
}

impl Validate for ProxyConfig {
    const USES_DATABASE_URL: bool = false;

    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.telemetry.validate()?;
        self.tokens.validate()
    }
}

impl ServiceSettings for ProxyConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
}

#[derive(OpenApi)]
#[openapi(info(title = "queue-proxy", description = "Queue proxy: phased strangler-fig routing."))]
struct ApiDoc;

pub async fn run(config: ProxyConfig, signals: Signals) -> anyhow::Result<Running> {
    let platform = Platform::new(NAME, None, &config.tokens, ApiDoc::openapi())?;
    queue_platform::server::serve(platform, &config.server, signals, routes::configure)
}
