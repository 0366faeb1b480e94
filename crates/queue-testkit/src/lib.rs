//! Test support for Queue's services: a real PostgreSQL per test process (or the one named by
//! `DATABASE_URL`), a fresh database per test cloned from a template migrated once, `TestApp`s
//! that boot a service's real `run` on port 0, and service-token helpers.

mod app;
pub mod checks;
mod cluster;
mod db;
mod keys;
pub mod moto;
pub mod otlp;
pub mod process;
pub mod tls;

pub use app::{TestApp, service_config};
pub use cluster::{admin_url, server_log};
pub use db::TestDb;
pub use keys::{IDENTITIES, TestKeys};
