//! queuectl: the operator's CLI for Queue.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use queue_platform::db::SchemaMigrations;
use queue_svc_token::{DEFAULT_TTL_SECS, MAX_TTL_SECS, Minter, SigningKey, generate_ed25519_pem};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Identities that `keys init` creates: the four services, the legacy app, and the operator
/// (whose key `queuectl proxy …` mints admin tokens with).
const DEV_IDENTITIES: [&str; 6] = ["auth", "rbac", "audit", "proxy", "raptor", "operator"];

#[derive(Parser)]
#[command(name = "queuectl", version, about = "Operate Queue: migrate schemas, manage keys, mint service tokens.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending migrations to each service's schema.
    Migrate(MigrateArgs),
    /// Manage service signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Service tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The audit log: verify, export, bundle and verify-bundle, rotate the data key.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// RBAC: reconcile the shadow tables with the audit log.
    #[command(subcommand)]
    Rbac(RbacCommand),
    /// Service-to-service TLS.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Raptor, the legacy app Queue takes over from: import its identity data, and see how Queue compares with it.
    #[command(subcommand)]
    Legacy(LegacyCommand),
    /// The proxy's route table, through its admin API: status, phase N, rollback, reload, shadow,
    /// metrics. Each call carries a service token (scope proxy:admin) minted from the operator's key.
    Proxy {
        /// The proxy's admin listener.
        #[arg(long, env = "QUEUE_PROXY_ADMIN_URL", default_value = "http://127.0.0.1:9080", global = true)]
        admin_url: String,
        #[command(flatten)]
        auth: ProxyAuth,
        #[command(subcommand)]
        command: ProxyCommand,
    },
}

/// How `queuectl proxy …` authenticates: a token minted per call from the operator's key, or
/// one given ready-made.
#[derive(Args)]
pub(crate) struct ProxyAuth {
    /// The operator identity the token is issued as (one of the proxy's `admin.issuers`); its
    /// key is `<keys-dir>/<iss>.pem` unless --key is given.
    #[arg(long, env = "QUEUE_OPERATOR", default_value = "operator", global = true)]
    pub(crate) iss: String,
    /// The operator's signing key (PKCS#8 PEM).
    #[arg(long, env = "QUEUE_OPERATOR_KEY", global = true)]
    key: Option<PathBuf>,
    /// Where `<iss>.pem` is looked for when --key is not given.
    #[arg(long, default_value = "var/keys", global = true)]
    keys_dir: PathBuf,
    /// The proxy's identity (its `tokens.issuer`): the token's audience.
    #[arg(long, env = "QUEUE_PROXY_AUDIENCE", default_value = "proxy", global = true)]
    aud: String,
    /// A ready token (scope proxy:admin, audience the proxy) instead of minting one.
    #[arg(long, env = "QUEUE_PROXY_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

impl ProxyAuth {
    /// The operator's key: `--key`, else `<keys-dir>/<iss>.pem`.
    pub(crate) fn key_path(&self) -> PathBuf {
        self.key.clone().unwrap_or_else(|| self.keys_dir.join(format!("{}.pem", self.iss)))
    }

    /// The bearer token for one admin call (60 s, scope `proxy:admin`).
    pub(crate) fn bearer(&self) -> anyhow::Result<String> {
        if let Some(t) = &self.token {
            return Ok(t.trim().to_string());
        }
        let key = self.key_path();
        let minter = minter(&self.iss, &key)?;
        Ok(minter.mint(&self.aud, &["proxy:admin"], DEFAULT_TTL_SECS)?)
    }
}

#[derive(Subcommand)]
enum LegacyCommand {
    /// Import Raptor's users, sessions, backup codes, passkeys, roles and grants through the
    /// services' import endpoints (idempotent: a second run reports everything unchanged).
    /// Prints a report per kind; exits 1 when something was refused, 2 when it could not run.
    Import(legacy::ImportArgs),
    /// The cutover report: per kind, the rows at Raptor and at Queue (and live), the difference,
    /// the sync lag, the sessions carried over, where refusals are seen, the write-back backlog.
    /// Only reads; exits 2 when Raptor or a service cannot be read.
    Status(legacy::StatusArgs),
}

#[derive(Subcommand)]
enum RbacCommand {
    /// List every change to roles, role permissions and grants that the shadow tables recorded
    /// without an audit event (made around the service, e.g. by hand in psql). Prints one JSON
    /// report; exits 2 when there are such changes, so it can run from cron.
    Reconcile {
        /// The database holding the rbac schema.
        #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
        database_url: String,
    },
}

#[derive(Subcommand)]
enum ProxyCommand {
    /// The table in force: version, phase, routes and where each goes now, what a rollback returns to.
    Status,
    /// Set the migration phase (validated first; written back to the table file). A phase lower
    /// than the one in force moves routes back to Raptor: first, auth's and rbac's write-back to
    /// Raptor must be empty (waits up to --wait; refuses, exit 1, naming what is pending or
    /// failed, unless --force).
    Phase {
        #[arg(value_parser = clap::value_parser!(u8).range(1..=4))]
        phase: u8,
        #[command(flatten)]
        gate: legacy::backlog::GateArgs,
    },
    /// Return to the previous table in one step. First, auth's and rbac's write-back to Raptor
    /// (what users did at Queue) must be empty: waits up to --wait seconds printing what is left,
    /// then refuses (exit 1) naming per service and kind what is pending or failed and the last
    /// error, unless --force. An unreachable auth or rbac refuses too (unless --force).
    Rollback {
        #[command(flatten)]
        gate: legacy::backlog::GateArgs,
    },
    /// Re-read the table file (as on SIGHUP); a bad file is refused and the old table stays.
    Reload,
    /// The shadow comparison report: match rates and samples of differences per route.
    Shadow,
    /// The proxy's own Prometheus metrics (served on the admin listener only).
    Metrics,
}

#[derive(Args)]
struct AuditConfigArg {
    /// The audit service's config file (database, keys); QUEUE_* variables apply as for the service.
    #[arg(long, env = "QUEUE_CONFIG", default_value = "deploy/local/audit.toml")]
    config: PathBuf,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify a tenant's chain in the database, or an export file offline; prints the report
    /// and exits 1 if the chain does not verify.
    Verify {
        /// The tenant whose chain to verify in the database.
        #[arg(long, required_unless_present = "file", conflicts_with = "file")]
        tenant: Option<String>,
        /// An NDJSON export to verify offline (the database is not used; the keys are unwrapped
        /// with the configured provider).
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        config: AuditConfigArg,
    },
    /// Write a tenant's chain as NDJSON (header, events, checkpoints), verifiable offline.
    Export {
        #[arg(long)]
        tenant: String,
        /// Output file; standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        config: AuditConfigArg,
    },
    /// Write one event with its inclusion proof and the tenant's newest signed checkpoint: a
    /// bundle anyone checks offline with the checkpoint's public key (`verify-bundle`).
    Bundle {
        #[arg(long)]
        tenant: String,
        /// The event's seq; the newest checkpoint must cover it.
        #[arg(long)]
        seq: i64,
        /// Output file; standard output when absent.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        config: AuditConfigArg,
    },
    /// Check a bundle offline, with no secret: the checkpoint's signature under KEY, and the
    /// event's inclusion in the tree it signs. Exit 0 when it verifies, 1 when not.
    VerifyBundle {
        /// The bundle (`queuectl audit bundle`).
        file: PathBuf,
        /// The checkpoint key in the signed-note verifier key format (as
        /// `GET /api/v1/audit/checkpoint-keys` lists it), or `@FILE` holding it.
        #[arg(long)]
        key: String,
    },
    /// Start a new data-key epoch: new events use it, old events keep verifying.
    RotateKey {
        #[command(flatten)]
        config: AuditConfigArg,
    },
}

#[derive(Args)]
struct MigrateArgs {
    /// Only this service (repeatable). Default: auth, rbac and audit.
    #[arg(long = "service", value_name = "S", value_parser = ["auth", "rbac", "audit"])]
    services: Vec<String>,
    /// The database to migrate.
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    database_url: String,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an Ed25519 signing key (and its public key) for every service and for the legacy
    /// app "raptor". Existing keys are kept unless --force. For development: in production
    /// keys come from your secret store.
    Init {
        /// Where to write `<name>.pem` (private, mode 0600) and `<name>.pub.pem`.
        #[arg(long, default_value = "var/keys")]
        dir: PathBuf,
        /// Replace keys that already exist.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum TlsCommand {
    /// Create a development CA and a server certificate per service (`ca.pem`, `ca.key`,
    /// `<name>.pem`, `<name>.key`), for `server.tls` in docker compose and local runs. An
    /// existing CA is reused unless --force. Production certificates come from your issuer.
    DevCerts {
        /// Where to write the files (keys mode 0600).
        #[arg(long, default_value = "var/tls")]
        out: PathBuf,
        /// The services to make certificates for (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "auth,rbac,audit,proxy")]
        names: Vec<String>,
        /// More DNS names or IP addresses every certificate also covers (repeatable).
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// Make a new CA even if one exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a signed service token, e.g. to call an internal endpoint with curl:
    /// `curl -H "Authorization: Bearer $(queuectl token mint --iss raptor --aud audit --scope audit:write)" ...`
    Mint {
        /// The calling identity; its key is `<keys-dir>/<iss>.pem` unless --key is given.
        #[arg(long)]
        iss: String,
        /// The service the token is for (exactly one).
        #[arg(long)]
        aud: String,
        /// A scope to grant (repeatable, or space-separated).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Lifetime in seconds (at most 300).
        #[arg(long, default_value_t = DEFAULT_TTL_SECS)]
        ttl: u64,
        /// The signing key (PKCS#8 PEM).
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(long, default_value = "var/keys")]
        keys_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Migrate(args) => migrate(args),
        Command::Keys(KeysCommand::Init { dir, force }) => keys_init(&dir, force),
        Command::Token(TokenCommand::Mint { iss, aud, scopes, ttl, key, keys_dir }) => {
            mint(&iss, &aud, &scopes, ttl, key.unwrap_or_else(|| keys_dir.join(format!("{iss}.pem"))))
        }
        Command::Tls(TlsCommand::DevCerts { out, names, hosts, force }) => tls_dev_certs(&out, &names, &hosts, force),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Rbac(RbacCommand::Reconcile { database_url }) => rbac_reconcile(&database_url),
        Command::Proxy { admin_url, auth, command } => proxy::run(&admin_url, &auth, command),
        // Its own exit statuses: 1 means records were refused, 2 that it could not run.
        Command::Legacy(LegacyCommand::Import(args)) => return legacy::run(args),
        Command::Legacy(LegacyCommand::Status(args)) => return legacy::status(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("queuectl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

mod audit;
mod legacy;
mod proxy;
mod tls;

fn tls_dev_certs(out: &Path, names: &[String], hosts: &[String], force: bool) -> anyhow::Result<()> {
    let written = tls::dev_certs(out, names, hosts, force)?;
    let verb = if written.ca_created { "wrote" } else { "kept" };
    println!("CA: {verb} {}", out.join("ca.pem").display());
    for name in &written.services {
        println!(
            "{name}: wrote {} and {}",
            out.join(format!("{name}.pem")).display(),
            out.join(format!("{name}.key")).display()
        );
    }
    Ok(())
}

fn rbac_reconcile(database_url: &str) -> anyhow::Result<()> {
    use diesel_async::AsyncConnection;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let report = runtime.block_on(async {
        let mut conn = diesel_async::AsyncPgConnection::establish(database_url).await.map_err(|e| {
            anyhow::anyhow!("cannot connect to {}: {e}", queue_platform::config::redact_url(database_url))
        })?;
        queue_rbac::reconcile::reconcile(&mut conn).await.context("reconcile")
    })?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !report.unaudited.is_empty() {
        eprintln!("queuectl: {} change(s) without an audit event", report.unaudited.len());
        std::process::exit(2);
    }
    Ok(())
}

fn schema_of(service: &str) -> Option<SchemaMigrations> {
    match service {
        "auth" => Some(queue_auth::MIGRATIONS),
        "rbac" => Some(queue_rbac::MIGRATIONS),
        "audit" => Some(queue_audit::MIGRATIONS),
        _ => None,
    }
}

fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let services =
        if args.services.is_empty() { vec!["auth".into(), "rbac".into(), "audit".into()] } else { args.services };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        for s in &services {
            let target = schema_of(s).with_context(|| format!("unknown service `{s}`"))?;
            let applied = queue_platform::db::migrate(&args.database_url, target).await?;
            println!(
                "{s}: {} migration(s) applied{}",
                applied.len(),
                if applied.is_empty() { " (up to date)" } else { "" }
            );
        }
        Ok(())
    })
}

fn keys_init(dir: &Path, force: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for name in DEV_IDENTITIES {
        let private = dir.join(format!("{name}.pem"));
        let public = dir.join(format!("{name}.pub.pem"));
        if private.exists() && !force {
            // Keys written before PKCS#8 v1 became the format are rewritten in it: the same key
            // (and kid), readable by every library (queue_svc_token::generate_ed25519_pem).
            let pem =
                std::fs::read_to_string(&private).with_context(|| format!("cannot read {}", private.display()))?;
            let key =
                SigningKey::from_pem(&pem).with_context(|| format!("{} is not an Ed25519 key", private.display()))?;
            if let Some(v1) = key.as_pkcs8_v1_pem()? {
                write_private(&private, v1.as_bytes())?;
                println!("{name}: kept {} (the same key, rewritten as PKCS#8 v1)", private.display());
            } else {
                println!("{name}: kept {}", private.display());
            }
            continue;
        }
        let (private_pem, public_pem) = generate_ed25519_pem()?;
        write_private(&private, private_pem.as_bytes())?;
        std::fs::write(&public, public_pem).with_context(|| format!("cannot write {}", public.display()))?;
        println!("{name}: wrote {} and {}", private.display(), public.display());
    }
    // The audit service's local key provider: a master key that wraps data keys, and the
    // checkpoint signing key (with the aws-kms provider, both live in KMS instead).
    let (audit, written) = queue_audit::config::KeysConfig::local_in(dir, force)?;
    let verb = if written { "wrote" } else { "kept" };
    println!("audit keys: {verb} {} and {}", audit.local_master_key.display(), audit.local_checkpoint_key.display());
    // The auth service's pepper: keys the HMACs of verification and backup codes.
    let pepper = dir.join("auth-pepper.key");
    let written = queue_auth::config::write_pepper(&pepper, force)?;
    println!("auth pepper: {} {}", if written { "wrote" } else { "kept" }, pepper.display());
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

fn mint(iss: &str, aud: &str, scopes: &[String], ttl: u64, key: PathBuf) -> anyhow::Result<()> {
    if ttl == 0 || ttl > MAX_TTL_SECS {
        anyhow::bail!("--ttl must be between 1 and {MAX_TTL_SECS} seconds");
    }
    let scopes: Vec<&str> = scopes.iter().flat_map(|s| s.split_whitespace()).collect();
    let token = minter(iss, &key)?.mint(aud, &scopes, ttl)?;
    println!("{token}");
    Ok(())
}

/// A minter for `iss` with the key at `key`.
fn minter(iss: &str, key: &Path) -> anyhow::Result<Minter> {
    let pem = std::fs::read_to_string(key)
        .with_context(|| format!("cannot read the signing key {} (run `queuectl keys init`?)", key.display()))?;
    let signing = SigningKey::from_pem(&pem).with_context(|| format!("{} is not an Ed25519 key", key.display()))?;
    Ok(Minter::new(iss, Arc::new(signing)))
}
