//! The `main` of every service binary: parse flags, load and validate config (exit 64 with one
//! line naming the key on failure), install telemetry, run, and stop cleanly on SIGTERM/SIGINT.
//! And the first steps of `run` that the services owning a database schema share ([`DbService`]).

use clap::Parser;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::{
    self, DatabaseConfig, EXIT_CONFIG, ProcessEnv, ServerConfig, TelemetryConfig, TokensConfig, Validate,
};
use crate::db::{Db, SchemaMigrations};
use crate::http_client::HttpClient;
use crate::server::Running;
use crate::telemetry;

/// A service's config type, as the bootstrap needs it.
pub trait ServiceSettings: DeserializeOwned + Validate + Send + 'static {
    fn telemetry(&self) -> &TelemetryConfig;
}

#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Configuration: a TOML file (--config or QUEUE_CONFIG) overlaid by environment variables \
QUEUE_<TABLE>__<KEY> (e.g. QUEUE_SERVER__LISTEN=127.0.0.1:8081); DATABASE_URL sets database.url. \
Unknown keys are refused. Bad configuration exits with status 64 and one line naming the key. \
See docs/configuration.md."
)]
struct Flags {
    /// Config file (TOML); QUEUE_CONFIG is used when absent.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Load and validate the configuration, print `ok`, and exit.
    #[arg(long)]
    check_config: bool,
}

/// Runs a service binary. `about` is the first line of `--help`.
pub fn service_main<C, F, Fut>(name: &'static str, about: &'static str, run: F) -> ExitCode
where
    C: ServiceSettings,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = anyhow::Result<Running>>,
{
    let command = <Flags as clap::CommandFactory>::command().name(name).about(about);
    let flags = match command.try_get_matches().and_then(|m| <Flags as clap::FromArgMatches>::from_arg_matches(&m)) {
        Ok(f) => f,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(EXIT_CONFIG) } else { ExitCode::SUCCESS };
        }
    };
    let config: C = match config::load(flags.config.as_deref(), &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{name}: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if flags.check_config {
        println!("{name}: configuration ok");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let _telemetry = telemetry::init(name, config.telemetry())?;
        let running = run(config).await?;
        running.wait().await?;
        tracing::info!(service = name, "stopped");
        Ok::<_, anyhow::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {}", e.to_string().replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// What the start-up shared by the services that own a database schema needs: the service's
/// name, schema and role, and its config's platform tables.
pub struct DbService<'a> {
    pub name: &'static str,
    pub migrations: SchemaMigrations,
    /// The role the service works as after connecting (created by its migrations).
    pub role: &'static str,
    pub server: &'a ServerConfig,
    pub database: &'a DatabaseConfig,
    pub telemetry: &'a TelemetryConfig,
    pub tokens: &'a TokensConfig,
}

impl DbService<'_> {
    /// The first steps of every such service, in the same order: migrate its schema (as the
    /// login user, the schema's owner), open the pool working as its role, and build the
    /// [`Platform`](crate::Platform) with a peer client that trusts `server.tls`'s CA. The
    /// service adds its own state and tasks, then serves.
    pub async fn open(self, openapi: utoipa::openapi::OpenApi) -> anyhow::Result<(Db, Arc<crate::Platform>)> {
        let applied = crate::db::migrate(&self.database.url, self.migrations).await?;
        if !applied.is_empty() {
            tracing::info!(schema = self.migrations.schema, ?applied, "migrations applied");
        }
        let db = Db::with_role(self.database, Some(self.role))?;
        let peers = HttpClient::from_config(&self.server.tls)?;
        let platform =
            crate::Platform::with_client(self.name, Some(db.clone()), self.tokens, self.telemetry, peers, openapi)?;
        Ok((db, platform))
    }
}
