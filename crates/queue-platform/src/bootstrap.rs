//! The `main` of every service binary: parse flags, load and validate config (exit 64 with one
//! line naming the key on failure), install telemetry, run, and stop cleanly on SIGTERM/SIGINT.

use clap::Parser;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{self, EXIT_CONFIG, ProcessEnv, TelemetryConfig, Validate};
use crate::server::Running;
use crate::telemetry;

/// A service's config type, as the bootstrap needs it.
pub trait ServiceSettings: DeserializeOwned + Validate + Send + 'static {
    fn telemetry(&self) -> &TelemetryConfig;
}

impl ServiceSettings for crate::ServiceConfig {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
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

/// Starts a service that owns a database schema: migrate it, open the pool, serve.
pub async fn start_db_service<F>(
    name: &'static str,
    config: crate::ServiceConfig,
    schema: crate::db::SchemaMigrations,
    openapi: utoipa::openapi::OpenApi,
    signals: crate::Signals,
    routes: F,
) -> anyhow::Result<Running>
where
    F: Fn(&mut actix_web::web::ServiceConfig) + Send + Clone + 'static,
{
    let applied = crate::db::migrate(&config.database.url, schema).await?;
    if !applied.is_empty() {
        tracing::info!(schema = schema.schema, ?applied, "migrations applied");
    }
    let db = crate::db::Db::new(&config.database)?;
    let platform = crate::Platform::new(name, Some(db), &config.tokens, &config.telemetry, openapi)?;
    crate::server::serve(platform, &config.server, signals, routes)
}
