//! queue-audit: the tamper-evident audit log: per-tenant HMAC chains, KMS keys, signed
//! checkpoints, verification and reads.
//!
//! The binary only loads config and calls [`run`]; tests call the same `run` on port 0.

pub mod config;
mod db;
pub mod domain;
mod handlers;
mod metrics;
mod ratelimit;
mod reader;
mod routes;
mod state;
mod wire;

use diesel_async::AsyncConnection;
use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use queue_platform::bootstrap::DbService;
use queue_platform::db::SchemaMigrations;
use queue_platform::{Running, Signals};
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;

pub use config::AuditConfig;

pub const NAME: &str = "queue-audit";
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "audit";
/// The role the service works as after connecting (created by the migrations).
pub const APP_ROLE: &str = "queue_audit_app";

static EMBEDDED: EmbeddedMigrations = embed_migrations!("../../migrations/audit");

/// This service's schema and migrations (also run by `queuectl migrate`).
pub const MIGRATIONS: SchemaMigrations = SchemaMigrations { schema: SCHEMA, migrations: &EMBEDDED };

#[derive(OpenApi)]
#[openapi(
    info(title = "queue-audit", description = "Queue audit service: the tamper-evident log."),
    paths(
        handlers::events::append,
        handlers::events::append_batch,
        handlers::events::list,
        handlers::chain::verify,
        handlers::chain::checkpoints,
        handlers::chain::export,
        handlers::proofs::inclusion,
        handlers::proofs::consistency,
        handlers::proofs::latest_checkpoint,
        handlers::proofs::checkpoint_keys,
    )
)]
struct ApiDoc;

/// This service's document, with the configured limits in it.
fn document(config: &AuditConfig) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    wire::configured_batch(&mut doc, config.chain.max_batch);
    require_tenant_id(&mut doc);
    doc
}

/// Every read takes `tenant_id`; utoipa 5 leaves a parameter with `schema_with` optional.
fn require_tenant_id(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{Required, path::ParameterIn};
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.post].into_iter().flatten() {
            for p in op.parameters.iter_mut().flatten() {
                if p.name == "tenant_id" && p.parameter_in == ParameterIn::Query {
                    p.required = Required::True;
                }
            }
        }
    }
}

/// Opens the key provider and the key ring, creating epoch 1 on first start.
pub async fn key_ring(config: &AuditConfig) -> anyhow::Result<domain::keyring::KeyRing> {
    let provider = domain::keys::KeyProvider::from_config(&config.keys).await?;
    let ring = domain::keyring::KeyRing::new(Arc::new(provider));
    let mut owner = diesel_async::AsyncPgConnection::establish(&config.database.url).await?;
    ring.ensure_initial(&mut owner).await.map_err(|e| anyhow::anyhow!("cannot create the first data key: {e}"))?;
    Ok(ring)
}

/// Migrates the schema, makes sure a data key exists, starts the writer, the checkpointer and
/// the server.
pub async fn run(config: AuditConfig, signals: Signals) -> anyhow::Result<Running> {
    let (db, platform) = DbService {
        name: NAME,
        migrations: MIGRATIONS,
        role: APP_ROLE,
        server: &config.server,
        database: &config.database,
        telemetry: &config.telemetry,
        tokens: &config.tokens,
    }
    .open(document(&config))
    .await?;
    let keys = key_ring(&config).await?;
    // Check now that the current key decrypts, so a wrong KMS key or master key stops start-up.
    {
        let mut conn = db.conn().await?;
        keys.current(&mut conn).await.map_err(|e| anyhow::anyhow!("audit data key unusable: {e}"))?;
    }
    keys.provider().checkpoint_public_key().await.map_err(|e| anyhow::anyhow!("checkpoint key unusable: {e}"))?;

    let metrics = metrics::AuditMetrics::new(platform.metrics.registry());
    let (committed_tx, committed_rx) = tokio::sync::mpsc::unbounded_channel();
    let appender = domain::append::Appender::new(
        db.clone(),
        keys.clone(),
        config.chain.max_batch,
        config.chain.writers,
        committed_tx,
        metrics.clone(),
    );
    let checkpointer = domain::checkpoint::spawn_checkpointer(
        db.clone(),
        keys.shared_provider(),
        config.chain.checkpoint_origin.clone(),
        committed_rx,
        config.chain.checkpoint_every,
        Duration::from_secs(config.chain.checkpoint_interval_secs),
    );
    let state = actix_web::web::Data::new(state::AuditState {
        db,
        appender,
        keys,
        limiter: ratelimit::RateLimiter::new(config.limits.per_caller_rps, config.limits.per_caller_burst),
        metrics,
        chain: config.chain.clone(),
        writers: domain::writers::WriterPolicy::from_config(&config.limits.writers)
            .map_err(|(issuer, e)| anyhow::anyhow!("limits.writers.{issuer}: {e}"))?,
        users: config.users.as_ref().map(|u| reader::UserReads::new(u, &platform)),
    });
    let sessions = config.users.as_ref().map(reader::sessions);
    let table = routes::configure(config.limits.clone());
    let mut running = queue_platform::server::serve(platform, &config.server, signals, move |cfg| {
        cfg.app_data(state.clone());
        if let Some(s) = &sessions {
            cfg.app_data(s.clone());
        }
        table(cfg);
    })?;
    running.tasks.push(checkpointer);
    Ok(running)
}
