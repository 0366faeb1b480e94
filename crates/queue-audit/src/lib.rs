//! queue-audit: the tamper-evident audit log: per-tenant HMAC chains, KMS keys, checkpoints, verification and reads.
//!
//! The binary only loads config and calls [`run`]; tests call the same `run` on port 0.

mod routes;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use queue_platform::db::SchemaMigrations;
use queue_platform::{Running, ServiceConfig, Signals};
use utoipa::OpenApi;

pub const NAME: &str = "queue-audit";
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "audit";

static EMBEDDED: EmbeddedMigrations = embed_migrations!("../../migrations/audit");

/// This service's schema and migrations (also run by `queuectl migrate`).
pub const MIGRATIONS: SchemaMigrations = SchemaMigrations { schema: SCHEMA, migrations: &EMBEDDED };

#[derive(OpenApi)]
#[openapi(info(
    title = "queue-audit",
    description = "Queue audit service: the tamper-evident audit log: per-tenant HMAC chains, KMS keys, checkpoints, verification and reads."
))]
struct ApiDoc;

/// Migrates the schema and starts serving.
pub async fn run(config: ServiceConfig, signals: Signals) -> anyhow::Result<Running> {
    queue_platform::bootstrap::start_db_service(NAME, config, MIGRATIONS, ApiDoc::openapi(), signals, routes::configure)
        .await
}
