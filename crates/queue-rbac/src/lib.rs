//! queue-rbac: roles, permissions, grants at global, tenant and ticket scope, checks and grant history.
//!
//! The binary only loads config and calls [`run`]; tests call the same `run` on port 0.

mod routes;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use queue_platform::db::SchemaMigrations;
use queue_platform::{Running, ServiceConfig, Signals};
use utoipa::OpenApi;

pub const NAME: &str = "queue-rbac";
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "rbac";

static EMBEDDED: EmbeddedMigrations = embed_migrations!("../../migrations/rbac");

/// This service's schema and migrations (also run by `queuectl migrate`).
pub const MIGRATIONS: SchemaMigrations = SchemaMigrations { schema: SCHEMA, migrations: &EMBEDDED };

#[derive(OpenApi)]
#[openapi(info(
    title = "queue-rbac",
    description = "Queue rbac service: roles, permissions, grants at global, tenant and ticket scope, checks and grant history."
))]
struct ApiDoc;

/// Migrates the schema and starts serving.
pub async fn run(config: ServiceConfig, signals: Signals) -> anyhow::Result<Running> {
    queue_platform::bootstrap::start_db_service(NAME, config, MIGRATIONS, ApiDoc::openapi(), signals, routes::configure)
        .await
}
