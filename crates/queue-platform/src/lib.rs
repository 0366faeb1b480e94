//! What every Queue service shares: typed config, the database pool and migrations, telemetry,
//! health and metrics endpoints, the error policy, service-token authentication for routes, who
//! is calling (`caller`: a service or a user session), the bootstrap that turns a config into a
//! running server, who the client is behind proxies (`net`), and the write-back relay to Raptor
//! after a cutover (`writeback`).

pub mod bootstrap;
pub mod caller;
pub mod config;
pub mod contract;
pub mod db;
pub mod error;
pub mod http_client;
pub mod metrics;
pub mod net;
pub mod server;
pub mod service_auth;
pub mod sessions;
mod state;
pub mod telemetry;
pub mod tls;
pub mod writeback;

pub use caller::{Caller, SignedIn};
pub use config::{ConfigError, ServiceConfig, TlsConfig, Validate};
pub use error::ApiError;
pub use server::{Running, Signals};
pub use service_auth::{ServiceCaller, ServicePolicy};
pub use state::{Platform, Tokens};
