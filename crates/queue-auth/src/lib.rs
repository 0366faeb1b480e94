//! queue-auth: users, passkeys, sessions v2, backup codes and email verification.
//!
//! The binary only loads config and calls [`run`]; tests call the same `run` on port 0 (or
//! [`run_with_clock`], to move time without sleeping).

pub mod config;
mod db;
pub mod domain;
mod extract;
mod handlers;
pub mod pages;
mod routes;
mod state;
mod validator;

use diesel_migrations::{EmbeddedMigrations, embed_migrations};
use queue_platform::bootstrap::DbService;
use queue_platform::db::SchemaMigrations;
use queue_platform::{Running, Signals};
use std::sync::Arc;
use std::time::Duration;
use utoipa::OpenApi;

pub use config::AuthConfig;
use domain::clock::{Clock, SystemClock};

pub const NAME: &str = "queue-auth";
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "auth";
/// The role the service works as after connecting (created by the migrations).
pub const APP_ROLE: &str = "queue_auth_app";
/// The session cookie.
pub const COOKIE: &str = "queue_session";

static EMBEDDED: EmbeddedMigrations = embed_migrations!("../../migrations/auth");

/// This service's schema and migrations (also run by `queuectl migrate`).
pub const MIGRATIONS: SchemaMigrations = SchemaMigrations { schema: SCHEMA, migrations: &EMBEDDED };

#[derive(OpenApi)]
#[openapi(
    info(
        title = "queue-auth",
        description = "Queue auth service: users, passkeys, sessions v2, backup codes and email verification. \
User routes take a session token (cookie `queue_session` or `Authorization: Bearer`)."
    ),
    paths(
        handlers::users::provision,
        handlers::import_passkeys::import,
        handlers::import::find_by_legacy_id,
        handlers::import::users,
        handlers::import::sessions,
        handlers::import::backup_codes,
        handlers::import::status,
        handlers::sessions::validate,
        handlers::sessions::whoami,
        handlers::sessions::logout,
        handlers::sessions::list,
        handlers::sessions::revoke_one,
        handlers::sessions::revoke_others,
        handlers::sessions::revoke_all,
        handlers::email::send,
        handlers::email::confirm,
        handlers::webauthn::register_start,
        handlers::webauthn::register_finish,
        handlers::webauthn::login_start,
        handlers::webauthn::login_finish,
        handlers::webauthn::reauth_start,
        handlers::webauthn::reauth_finish,
        handlers::webauthn::list,
        handlers::webauthn::rename,
        handlers::webauthn::remove,
        handlers::backup_codes::generate,
        handlers::backup_codes::remaining,
        handlers::backup_codes::redeem,
    )
)]
struct ApiDoc;

/// Migrates the schema and starts serving, with the system clock.
pub async fn run(config: AuthConfig, signals: Signals) -> anyhow::Result<Running> {
    run_with_clock(config, signals, Arc::new(SystemClock)).await
}

fn webauthn(config: &config::WebauthnConfig) -> anyhow::Result<webauthn_rs::prelude::Webauthn> {
    let first = config.origins.first().ok_or_else(|| anyhow::anyhow!("webauthn.origins is empty"))?;
    let mut builder = webauthn_rs::prelude::WebauthnBuilder::new(&config.rp_id, first)
        .map_err(|e| anyhow::anyhow!("webauthn configuration refused: {e}"))?
        .rp_name(&config.rp_name);
    for o in config.origins.iter().skip(1) {
        builder = builder.append_allowed_origin(o);
    }
    builder.build().map_err(|e| anyhow::anyhow!("webauthn configuration refused: {e}"))
}

/// A minter signing as this service (for the tokens its relays present).
fn minter(tokens: &queue_platform::config::TokensConfig) -> anyhow::Result<queue_svc_token::Minter> {
    let key = std::fs::read_to_string(&tokens.signing_key)?;
    Ok(queue_svc_token::Minter::new(tokens.issuer.clone(), Arc::new(queue_svc_token::SigningKey::from_pem(&key)?)))
}

/// Like [`run`], with the clock every expiry is computed from.
pub async fn run_with_clock(config: AuthConfig, signals: Signals, clock: Arc<dyn Clock>) -> anyhow::Result<Running> {
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
    let pepper = domain::crypto::Pepper::load(&config.auth.pepper_file).map_err(|e| anyhow::anyhow!(e))?;
    let webauthn = webauthn(&config.webauthn)?;
    let mail = domain::mailer::Composer::new(&pepper);
    let mut tasks = Vec::new();

    let audit_wake = match &config.audit.url {
        Some(url) => {
            let client = queue_audit_client::AuditClient::new(
                platform.http.clone(),
                url.clone(),
                Arc::new(minter(&config.tokens)?),
            );
            let a = &config.audit;
            let relay = queue_audit_client::OutboxRelay::new(
                db.clone(),
                domain::audit::OUTBOX_TABLE,
                client,
                queue_audit_client::RelaySettings {
                    batch: a.batch,
                    poll_interval: Duration::from_millis(a.poll_interval_ms),
                    backoff_initial: Duration::from_millis(a.backoff_initial_ms),
                    backoff_max: Duration::from_millis(a.backoff_max_ms),
                },
            );
            let wake = relay.waker();
            tasks.push(relay.spawn());
            wake
        }
        None => {
            tracing::warn!("audit.url is not set: security events wait in auth.audit_outbox");
            Arc::new(tokio::sync::Notify::new())
        }
    };
    let writeback_wake = match &config.legacy.writeback_url {
        Some(url) => {
            let relay = queue_platform::writeback::WritebackRelay::new(
                db.clone(),
                domain::writeback::TABLE,
                url,
                platform.http.clone(),
                Arc::new(minter(&config.tokens)?),
                domain::writeback::STATEMENTS,
                config.legacy.settings(),
                Some(platform.metrics.registry()),
            );
            let wake = relay.waker();
            tasks.push(relay.spawn());
            wake
        }
        None => Arc::new(tokio::sync::Notify::new()),
    };
    let mailer = domain::mailer::Mailer::from_config(&config.mailer, platform.http.clone())?;
    tasks.push(
        domain::mailer::MailRelay {
            db: db.clone(),
            mailer,
            composer: mail.clone(),
            max_attempts: config.mailer.max_attempts,
        }
        .spawn(),
    );

    let (validator, validators) = validator::Validator::spawn(db.clone(), clock.clone(), config.sessions.clone());
    tasks.extend(validators);
    let state = actix_web::web::Data::new(state::AuthState {
        db,
        validator,
        clock,
        cookie_secure: config.cookie_secure(),
        pepper,
        webauthn,
        mail,
        audit_wake,
        writeback_wake,
        config: config.clone(),
    });
    let table = routes::configure(config.auth.clone());
    let mut running = queue_platform::server::serve(platform, &config.server, signals, move |cfg| {
        cfg.app_data(state.clone());
        cfg.app_data(queue_platform::sessions::SessionSource::into_data(extract::LocalSessions(state.clone())));
        table(cfg);
    })?;
    running.tasks.extend(tasks);
    Ok(running)
}
