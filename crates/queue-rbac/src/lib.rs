//! queue-rbac: roles, permissions, grants at global, tenant and ticket scope, checks, grant
//! history, pre-write audit and reconcile.
//!
//! The binary only loads config and calls [`run`]; tests call the same `run` on port 0.
//! Layers: `routes` -> `handlers` (HTTP: extract, authorise, map to the wire) -> `domain` (the
//! rules, no HTTP) -> `db` (the generated schema and the queries).

pub mod config;
mod db;
mod domain;
mod handlers;
mod metrics;
mod routes;
mod state;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use queue_audit_client::{AuditClient, OutboxRelay, RelaySettings};
use queue_platform::bootstrap::DbService;
use queue_platform::db::SchemaMigrations;
use queue_platform::sessions::{SessionSource, SessionValidator};
use queue_platform::writeback::WritebackRelay;
use queue_platform::{Running, Signals};
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;

pub use config::RbacConfig;
/// What `queuectl rbac-reconcile` runs: the changes without an audit event.
pub use domain::reconcile;

pub const NAME: &str = "queue-rbac";
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "rbac";
/// The role the service works as after connecting (created by the migrations).
pub const APP_ROLE: &str = "queue_rbac_app";

static EMBEDDED: EmbeddedMigrations = embed_migrations!("../../migrations/rbac");

/// This service's schema and migrations (also run by `queuectl migrate`).
pub const MIGRATIONS: SchemaMigrations = SchemaMigrations { schema: SCHEMA, migrations: &EMBEDDED };

#[derive(OpenApi)]
#[openapi(
    info(
        title = "queue-rbac",
        description = "Queue rbac service: roles, permissions, grants at global, tenant and ticket scope, checks, \
grant history, pre-write audit and reconcile."
    ),
    paths(
        handlers::check::check,
        handlers::check::check_batch,
        handlers::roles::roles,
        handlers::roles::create_role,
        handlers::grants::create_grant,
        handlers::grants::revoke_grant,
        handlers::history::list_grants,
        handlers::history::ticket_principals,
        handlers::reconcile::reconcile,
        handlers::import::import_roles,
        handlers::import::import_grants,
        handlers::import::import_principals,
        handlers::import::import_status,
    )
)]
struct ApiDoc;

/// Migrates the schema, starts the cache listener, the lease, the expiry job and the outbox
/// relay, and serves.
pub async fn run(config: RbacConfig, signals: Signals) -> anyhow::Result<Running> {
    let (db, platform) = DbService {
        name: NAME,
        migrations: MIGRATIONS,
        role: APP_ROLE,
        server: &config.server,
        database: &config.database,
        telemetry: &config.telemetry,
        tokens: &config.tokens,
    }
    .open(ApiDoc::openapi())
    .await?;
    let metrics = metrics::RbacMetrics::new(platform.metrics.registry());
    let checker =
        domain::checker::Checker::new(db.clone(), config.cache.max_principals, config.cache.lease_ms, metrics.clone());
    let listener = domain::checker::spawn_listener(config.database.url.clone(), checker.clone());
    let lease = checker.spawn_lease();
    let minter = Arc::new(platform.tokens.minter.clone());
    let audit = AuditClient::new(platform.http.clone(), config.audit.url.clone(), minter.clone())
        .with_timeout(Duration::from_millis(config.audit.timeout_ms));
    // Compensating events go through the outbox, delivered by the relay auth uses too.
    let relay = OutboxRelay::new(db.clone(), db::outbox::TABLE, audit.clone(), RelaySettings::default());
    let failpoint = domain::prewrite::Failpoint::from_env();
    if let Some(f) = failpoint {
        tracing::warn!(?f, "RBAC_TEST_FAILPOINT is set: this process will die on purpose (tests only)");
    }
    let expiry = domain::expiry::spawn(
        db.clone(),
        audit.clone(),
        metrics.clone(),
        Duration::from_secs(config.expiry.interval_secs),
    );
    let write_back = config.legacy.writeback_url.as_ref().map(|url| {
        WritebackRelay::new(
            db.clone(),
            db::writeback::TABLE,
            url,
            platform.http.clone(),
            minter.clone(),
            &domain::writeback::STATEMENTS,
            config.legacy.settings(),
            Some(platform.metrics.registry()),
        )
    });
    let writes = domain::prewrite::Prewriter {
        write_back: write_back.as_ref().map_or_else(|| Arc::new(tokio::sync::Notify::new()), WritebackRelay::waker),
        db: db.clone(),
        audit,
        checker: checker.clone(),
        metrics,
        outbox: relay.waker(),
        compensate_after_secs: config.audit.compensate_after_secs,
        failpoint,
    };
    let state = Arc::new(state::RbacState {
        db,
        checker,
        writes,
        callers: config.callers.clone(),
        write_back_enabled: config.legacy.writeback_url.is_some(),
    });
    // Issue 19, item 3: grants made at Queue for Raptor's users go back to Raptor; the grants
    // whose create was delivered are linked to Raptor's id (audited first).
    let write_back = write_back.map(|relay| {
        let linker = domain::writeback::spawn_linker(
            state.clone(),
            |s: &state::RbacState| &s.writes,
            Duration::from_secs(1),
            Arc::new(tokio::sync::Notify::new()),
        );
        (relay.spawn(), linker)
    });
    let data = actix_web::web::Data::from(state);
    // User sessions are validated by the auth service; without `[auth]`, service tokens only.
    let sessions = config.auth.as_ref().map(|a| SessionValidator::new(a.url.clone(), a.session_cache_secs).into_data());
    let mut running = queue_platform::server::serve(platform, &config.server, signals, move |cfg| {
        cfg.app_data(data.clone());
        if let Some(s) = &sessions {
            cfg.app_data(s.clone());
        }
        routes::configure(cfg);
    })?;
    running.tasks.push(listener);
    running.tasks.extend(lease);
    running.tasks.push(expiry);
    running.tasks.push(relay.spawn());
    if let Some((relay, linker)) = write_back {
        running.tasks.push(relay);
        running.tasks.push(linker);
    }
    Ok(running)
}
