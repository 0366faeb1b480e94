//! What every Queue service shares: typed config, the database pool and migrations, telemetry,
//! health and metrics endpoints, the error policy, service-token authentication for routes, and
//! the bootstrap that turns a config into a running server, and who the client is behind
//! proxies (`net`).

pub mod bootstrap;
pub mod config;
pub mod db;
pub mod error;
pub mod http_client;
pub mod metrics;
pub mod net;
pub mod server;
pub mod service_auth;
pub mod sessions;
pub mod telemetry;
pub mod tls;

pub use config::{ConfigError, ServiceConfig, TlsConfig, Validate};
pub use error::ApiError;
pub use server::{Platform, Running, Signals};
pub use service_auth::{ServiceCaller, ServicePolicy};
