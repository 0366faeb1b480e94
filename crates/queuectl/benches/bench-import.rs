//! `make bench-import`: the real `queuectl legacy import` of a generated Raptor (issue 19, item
//! 5) into real auth, rbac and audit on a durable PostgreSQL, then the same import again with
//! nothing new. Raptor is `legacy/raptor/raptor-schema.sql` as it is, filled with SQL
//! (`generate_series`): 100,000 customers over 4 tenants, 150,000 passkeys (real ES256 COSE keys,
//! a handful reused, credential ids unique), 50,000 live sessions and 10,000 revoked or expired
//! ones (skipped by auth), 500,000 backup codes (werkzeug's `scrypt:` format with random hex: the
//! import does not verify them), 10 roles (built-in and tenants' own) and 1,000,000 grants
//! (global, tenant and ticket scope; some expired, some revoked). The whole time counts until the
//! audit events of every created or updated record are in the audit service (auth's outbox
//! relayed; rbac writes its events first). Prints the figures and writes them to
//! docs/benchmarks.md (section `bench-import`). Not a test: nothing here asserts a speed.
//!
//! BENCH_SCALE (default 1.0) multiplies every row count: 0.1 is the 10 % dataset. BENCH_NO_WRITE:
//! leave docs/benchmarks.md alone. BENCH_LOG: the services' log filter (default `warn`).

/// The allocator the service binaries use, so the services' figures are theirs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use queue_audit::AuditConfig;
use queue_audit::config::KeysConfig;
use queue_bench::{Cluster, machine, serve_on_own_runtime, write_section};
use queue_platform::Signals;
use serde_json::Value;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

const TENANTS: [&str; 4] = [
    "5a3c0e1e-0000-4000-8000-00000000a0c1",
    "5a3c0e1e-0000-4000-8000-00000000b0c2",
    "5a3c0e1e-0000-4000-8000-00000000c0c3",
    "5a3c0e1e-0000-4000-8000-00000000d0c4",
];

/// Four real P-256 public keys as COSE_Keys (ES256), made with `cryptography` and `cbor2`: what
/// py_webauthn keeps as `credential_public_key`.
const ES256_KEYS: [&str; 4] = [
    "a5010203262001215820a8423f1337dbcf5fcb97a49728a368e4e6f62f4321cd7e08b8b270268547cf562258203b8be30ca81e68e24746aeb6c688caa1dd9ba74648742a81da8ed4a3a49e7ee8",
    "a50102032620012158201f85ed9271e2b28cf6a08cda7555b7f84ef18202278c2110a9bdcd681526a6d722582020eb0ba3922a298eb722f894d53673eb8ee6a7a06dd6b5a293af108b88d2e88a",
    "a501020326200121582083dfcc6875b55746256d70b0c7ddf2d6beb4b75fd6ac1dbf7d6fc3e609e5b3022258205b7018041a5764b5876eda127de2e5a7cb3c0d3fa80cdde77192bfb7e7bd63ed",
    "a501020326200121582035fb482ae03f2bfac0d49125a4966bc0db8d6ea39bf285866e46318560e5c895225820eec4ce0ec7488caebf9d5ba0ae08452caa9245bc538823cf4419cdf3db0f47dd",
];

/// How many rows of each kind Raptor holds.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    customers: u64,
    passkeys: u64,
    live_sessions: u64,
    dead_sessions: u64,
    backup_codes: u64,
    grants: u64,
}

impl Sizes {
    fn scaled(scale: f64) -> Self {
        let n = |full: f64| ((full * scale).round() as u64).max(10);
        Self {
            customers: n(100_000.0),
            passkeys: n(150_000.0),
            live_sessions: n(50_000.0),
            dead_sessions: n(10_000.0),
            backup_codes: n(500_000.0),
            grants: n(1_000_000.0),
        }
    }

    fn total(&self) -> u64 {
        self.customers + self.passkeys + self.live_sessions + self.dead_sessions + self.backup_codes + self.grants + 10
    }
}

fn sql_array(items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("ARRAY[{}]", quoted.join(", "))
}

/// Raptor's rows, in SQL. Customer c is in tenant `c % 4`; passkeys, sessions, codes and grants
/// cycle over the customers. Sessions live now (seen within Queue's idle timeout, 14-day expiry)
/// come first, then the dead ones (odd: revoked, even: expired). Backup codes: ten per customer
/// (one set, one `created_at`), every 7th used. Grants: roles viewer, agent and the customer's
/// tenant's `triage` and `lead`; every 20th global (built-in roles only), every 4th tenant-wide,
/// the rest on ticket `T-<id>`; every 50th expired, every 40th revoked.
fn seed_sql(s: &Sizes) -> String {
    let tenants = sql_array(&TENANTS);
    let keys = sql_array(&ES256_KEYS);
    let Sizes { customers: n, passkeys, live_sessions: live, dead_sessions: dead, backup_codes, grants } = *s;
    let sessions = live + dead;
    format!(
        "
INSERT INTO tenants (id, name) SELECT t::uuid, 'Tenant ' || i FROM unnest({tenants}) WITH ORDINALITY AS x(t, i);
INSERT INTO customers (id, tenant_id, email, email_verified_at, display_name, password_hash, is_active, created_at, updated_at)
SELECT i, ({tenants})[1 + i % 4]::uuid,
       CASE WHEN i % 7 = 0 THEN ' User' || i || '@Tenant' || (i % 4) || '.TEST ' ELSE 'user' || i || '@tenant' || (i % 4) || '.test' END,
       CASE WHEN i % 3 <> 0 THEN timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute' END,
       CASE WHEN i % 5 <> 0 THEN 'User ' || i END,
       'pbkdf2:sha256:600000$' || substr(md5(i::text), 1, 16) || '$' || md5('p' || i) || md5('q' || i),
       i % 50 <> 0,
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute', now()
FROM generate_series(1, {n}) AS i;
INSERT INTO webauthn_credentials (id, customer_id, credential_id, public_key, sign_count, aaguid, device_type, backed_up,
                                  user_verified, transports, user_handle, name, created_at, last_used_at)
SELECT i, c, sha256(('credential ' || i)::bytea), decode(({keys})[1 + i % 4], 'hex'), i % 1000,
       CASE WHEN i % 2 = 0 THEN '08987058-cadc-4b81-b6e1-30de50dcbe96' END,
       CASE WHEN i % 3 = 0 THEN 'single_device' ELSE 'multi_device' END, i % 3 <> 0, true,
       CASE WHEN i % 4 = 0 THEN NULL ELSE ARRAY['internal', 'hybrid'] END,
       substring(sha256(('handle ' || c)::bytea) FROM 1 FOR 16),
       CASE WHEN i % 2 = 0 THEN 'Key ' || i END,
       timestamptz '2025-01-01 00:00:00+00' + i * interval '1 second',
       CASE WHEN i % 3 = 0 THEN now() - interval '1 day' END
FROM (SELECT i, 1 + (i - 1) % {n} AS c FROM generate_series(1, {passkeys}) AS i) AS x;
INSERT INTO customer_sessions (id, customer_id, token, created_at, expires_at, last_seen_at, revoked_at, ip, user_agent)
SELECT i, 1 + (i - 1) % {n},
       rtrim(translate(encode(sha256(('token ' || i)::bytea), 'base64'), '+/', '-_'), '='),
       created, created + interval '14 days',
       CASE WHEN i <= {live} THEN now() - (i % 5) * interval '1 minute' ELSE created + interval '1 hour' END,
       CASE WHEN i > {live} AND i % 2 = 1 THEN created + interval '2 hours' END,
       ('10.' || (i % 250) || '.' || (i / 250 % 250) || '.' || (i % 200 + 1))::inet, 'Mozilla/5.0 (bench ' || i % 10 || ')'
FROM (SELECT i, CASE WHEN i <= {live} OR i % 2 = 1 THEN now() - (1 + i % 10) * interval '1 day'
                     ELSE now() - interval '20 days' END AS created
      FROM generate_series(1, {sessions}) AS i) AS x;
INSERT INTO customer_backup_codes (id, customer_id, code_hash, used_at, created_at)
SELECT i, c, 'scrypt:32768:8:1$' || substr(md5('salt ' || i), 1, 16) || '$' || md5('a' || i) || md5('b' || i) || md5('c' || i) || md5('d' || i),
       CASE WHEN i % 7 = 0 THEN created + interval '3 days' END, created
FROM (SELECT i, 1 + (i - 1) / 10 % {n} AS c,
             timestamptz '2026-06-01 00:00:00+00' + ((i - 1) / 10) * interval '1 second' AS created
      FROM generate_series(1, {backup_codes}) AS i) AS x;
INSERT INTO rbac_permissions (name) VALUES ('ticket.read'), ('ticket.write');
INSERT INTO rbac_roles (id, tenant_id, name, description, created_at) VALUES
  (1, NULL, 'viewer', 'reads tickets', '2023-01-01 00:00:00+00'), (2, NULL, 'agent', 'works tickets', '2023-01-01 00:00:00+00');
INSERT INTO rbac_roles (id, tenant_id, name, description, created_at)
SELECT 2 + i, t::uuid, 'triage', 'sorts the queue', timestamptz '2024-06-01 00:00:00+00' FROM unnest({tenants}) WITH ORDINALITY AS x(t, i)
UNION ALL
SELECT 6 + i, t::uuid, 'lead', NULL, timestamptz '2024-06-02 00:00:00+00' FROM unnest({tenants}) WITH ORDINALITY AS x(t, i);
INSERT INTO rbac_role_permissions (role_id, permission)
SELECT 1, 'ticket.read' UNION ALL SELECT 2, 'ticket.read' UNION ALL SELECT 2, 'ticket.write'
UNION ALL SELECT r, 'ticket.read' FROM generate_series(3, 10) AS r
UNION ALL SELECT r, 'ticket.write' FROM generate_series(7, 10) AS r;
INSERT INTO rbac_grants (id, customer_id, role_id, scope_type, tenant_id, ticket_id, granted_by, granted_at, expires_at,
                         reason, revoked_at, revoked_by)
SELECT g, c, CASE g % 5 WHEN 1 THEN 2 WHEN 2 THEN 3 + c % 4 WHEN 3 THEN 7 + c % 4 ELSE 1 END,
       CASE WHEN g % 20 = 0 THEN 'global' WHEN g % 4 = 0 THEN 'tenant' ELSE 'ticket' END,
       CASE WHEN g % 20 <> 0 THEN ({tenants})[1 + c % 4]::uuid END,
       CASE WHEN g % 4 <> 0 THEN 'T-' || g END,
       by_whom, granted,
       CASE WHEN g % 50 = 0 THEN granted + interval '30 days' WHEN g % 50 = 25 THEN now() + interval '365 days' END,
       CASE WHEN g % 2 = 0 THEN 'bench grant ' || g END,
       CASE WHEN g % 40 = 1 THEN granted + interval '1 day' END,
       CASE WHEN g % 40 = 1 THEN by_whom END
FROM (SELECT g, 1 + (g - 1) % {n} AS c, CASE WHEN g % 3 <> 0 THEN 1 + (g * 13) % {n} END AS by_whom,
             timestamptz '2025-01-01 00:00:00+00' + g * interval '10 seconds' AS granted
      FROM generate_series(1, {grants}) AS g) AS x;
SELECT setval('customers_id_seq', {n}), setval('webauthn_credentials_id_seq', {passkeys}),
       setval('customer_sessions_id_seq', {sessions}), setval('customer_backup_codes_id_seq', {backup_codes}),
       setval('rbac_roles_id_seq', 10), setval('rbac_grants_id_seq', {grants});
ANALYZE;
"
    )
}

/// One run of `queuectl legacy import --json`: its report and how long it took.
struct Run {
    report: Value,
    seconds: f64,
    /// Until the audit events of every created or updated record were in the audit service.
    settled_seconds: f64,
}

impl Run {
    fn kinds(&self) -> Vec<&Value> {
        self.report["kinds"].as_array().map(|k| k.iter().collect()).unwrap_or_default()
    }

    /// Created plus updated records: one audit event each.
    fn written(&self) -> i64 {
        self.kinds().iter().map(|k| k["created"].as_i64().unwrap_or(0) + k["updated"].as_i64().unwrap_or(0)).sum()
    }

    fn rows(&self) -> i64 {
        self.kinds().iter().map(|k| k["rows"].as_i64().unwrap_or(0)).sum()
    }
}

/// The services and the way to run queuectl against them.
struct World {
    cluster: Cluster,
    keys: queue_testkit::TestKeys,
    auth_url: String,
    rbac_url: String,
}

impl World {
    /// `queuectl legacy import` as the operator; fails unless it completes with nothing refused.
    async fn import(&self, label: &str) -> anyhow::Result<Run> {
        let before = self.audit_events()?;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_queuectl"));
        command
            .args(["legacy", "import", "--json", "--source-url", &self.cluster.url("raptor")])
            .args(["--auth-url", &self.auth_url, "--rbac-url", &self.rbac_url])
            .env("QUEUE_OPERATOR_KEY", self.keys.private("operator"))
            .stderr(std::process::Stdio::null());
        let started = Instant::now();
        let out = tokio::task::spawn_blocking(move || command.output()).await??;
        let seconds = started.elapsed().as_secs_f64();
        let report: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| anyhow::anyhow!("{label}: no JSON report ({e}): {}", String::from_utf8_lossy(&out.stdout)))?;
        anyhow::ensure!(report["complete"] == true, "{label}: the import stopped: {}", report["error"]);
        let mut run = Run { report, seconds, settled_seconds: seconds };
        print_run(&format!("{label}, queuectl done"), &run);
        for k in run.kinds() {
            for r in k["reasons"].as_array().into_iter().flatten() {
                println!("    {} {} x{}: {}", k["kind"].as_str().unwrap_or("?"), r["outcome"], r["count"], r["reason"]);
            }
        }
        let want = before + run.written();
        loop {
            let (events, pending) = (self.audit_events()?, self.auth_outbox_pending()?);
            if events >= want && pending == 0 {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(3600),
                "{label}: audit events {events} of {want}, auth's outbox {pending} pending after an hour"
            );
            if started.elapsed().as_secs().is_multiple_of(30) {
                println!("    waiting: audit events {events} of {want}, auth's outbox {pending} pending");
            }
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        run.settled_seconds = started.elapsed().as_secs_f64();
        Ok(run)
    }

    /// Events in the audit log by the importer (auth's relayed, rbac's pre-written).
    fn audit_events(&self) -> anyhow::Result<i64> {
        let n = self.cluster.psql(
            "bench",
            "SELECT count(*) FROM audit.customer_audit_events WHERE actor_type = 'service' AND actor_id = 'operator'",
        )?;
        Ok(n.parse()?)
    }

    fn auth_outbox_pending(&self) -> anyhow::Result<i64> {
        let n = self
            .cluster
            .psql("bench", "SELECT count(*) FROM auth.audit_outbox WHERE delivered_at IS NULL AND failed_at IS NULL")?;
        Ok(n.parse()?)
    }
}

fn print_run(label: &str, run: &Run) {
    println!(
        "  {label}: {:.1} s for queuectl, {:.1} s until every audit event was in ({} records, {} written)",
        run.seconds,
        run.settled_seconds,
        run.rows(),
        run.written()
    );
    for k in run.kinds() {
        let (rows, secs) = (k["rows"].as_f64().unwrap_or(0.0), k["seconds"].as_f64().unwrap_or(0.0));
        println!(
            "    {:<13}{:>9} rows {:>8.1} s {:>9.0} records/s  created {} updated {} unchanged {} skipped {} refused {}",
            k["kind"].as_str().unwrap_or("?"),
            rows,
            secs,
            rows / secs.max(1e-9),
            k["created"],
            k["updated"],
            k["unchanged"],
            k["skipped"],
            k["refused"]
        );
    }
}

fn table(run: &Run) -> String {
    let mut s = String::from(
        "| kind | rows | created | updated | unchanged | skipped | refused | seconds | records/s |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for k in run.kinds() {
        let (rows, secs) = (k["rows"].as_f64().unwrap_or(0.0), k["seconds"].as_f64().unwrap_or(0.0));
        let _ = writeln!(
            s,
            "| {} | {rows} | {} | {} | {} | {} | {} | {secs:.1} | {:.0} |",
            k["kind"].as_str().unwrap_or("?"),
            k["created"],
            k["updated"],
            k["unchanged"],
            k["skipped"],
            k["refused"],
            rows / secs.max(1e-9)
        );
    }
    s
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    // The services' warnings and errors (a batch's 500 says why only there); BENCH_LOG to change.
    let filter = std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let scale: f64 = std::env::var("BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let sizes = Sizes::scaled(scale);
    let load_before = load_average();
    println!("bench-import: scale {scale} ({} Raptor rows), {}, load {load_before}", sizes.total(), machine());
    let cluster = Cluster::start("bench")?;
    let keys = queue_testkit::TestKeys::new();

    let started = Instant::now();
    cluster.psql("bench", "CREATE DATABASE raptor")?;
    cluster.psql("raptor", include_str!("../../../legacy/raptor/raptor-schema.sql"))?;
    cluster.psql("raptor", &seed_sql(&sizes))?;
    println!("  Raptor generated in {:.1} s: {sizes:?}", started.elapsed().as_secs_f64());

    for migrations in [queue_audit::MIGRATIONS, queue_auth::MIGRATIONS, queue_rbac::MIGRATIONS] {
        queue_platform::db::migrate(&cluster.url("bench"), migrations).await?;
    }
    let dir = tempfile::tempdir()?;
    let mut base = queue_testkit::service_config("audit", &cluster.url("bench"), &keys);
    base.server.workers = Some(1);
    let mut audit_config = AuditConfig::new(base, KeysConfig::local_in(dir.path(), true)?.0);
    audit_config.limits.per_caller_rps = 1_000_000;
    audit_config.limits.per_caller_burst = 1_000_000;
    let (audit_addr, audit_handle) = serve_on_own_runtime(move || queue_audit::run(audit_config, Signals::Ignore))?;
    let audit_url = url::Url::parse(&format!("http://{audit_addr}"))?;

    let pepper = dir.path().join("pepper.key");
    queue_auth::config::write_pepper(&pepper, true)?;
    let mut base = queue_testkit::service_config("auth", &cluster.url("bench"), &keys);
    base.server.workers = None;
    base.database.pool_size = 16;
    let mut auth_config = queue_auth::AuthConfig::new(base, pepper);
    auth_config.mailer.dev_dir = dir.path().join("mail");
    auth_config.flags.auth_backup_codes = true;
    auth_config.audit.url = Some(audit_url.clone());
    let (auth_addr, auth_handle) = serve_on_own_runtime(move || queue_auth::run(auth_config, Signals::Ignore))?;

    let mut base = queue_testkit::service_config("rbac", &cluster.url("bench"), &keys);
    base.server.workers = None;
    base.database.pool_size = 16;
    let rbac_config = queue_rbac::RbacConfig::new(base, audit_url);
    let (rbac_addr, rbac_handle) = serve_on_own_runtime(move || queue_rbac::run(rbac_config, Signals::Ignore))?;

    let world =
        World { cluster, keys, auth_url: format!("http://{auth_addr}"), rbac_url: format!("http://{rbac_addr}") };
    let first = world.import("first import").await?;
    print_run("first import", &first);
    let again = world.import("re-run").await?;
    print_run("re-run, nothing new", &again);
    let load_after = load_average();
    println!("  load average before {load_before}, after {load_after}");
    auth_handle.stop(true).await;
    rbac_handle.stop(true).await;
    audit_handle.stop(true).await;

    let body = format!(
        "## Legacy import (`make bench-import`)\n\n\
Run {date} on {machine}; load average {load_before} before, {load_after} after (the machine is shared).\n\
Raptor generated in SQL on `legacy/raptor/raptor-schema.sql` at scale {scale}: {} customers over 4 tenants,\n\
{} passkeys (ES256), {} live sessions and {} revoked or expired ones, {} backup codes, 10 roles,\n\
{} grants. The real `queuectl legacy import` (release build) against real auth, rbac and audit on one\n\
durable PostgreSQL (fsync and synchronous_commit on), all on the same 2 cores. \"Whole\" counts until the\n\
audit event of every created or updated record is in the audit service.\n\n\
First import: **{:.1} s** for queuectl, **{:.1} s whole** ({} records, {} audit events).\n\n{}\n\
Re-run with nothing new at Raptor: **{:.1} s** ({} records, {} written).\n\n{}\n\
Aims (issue 19, item 5): the whole first import ≤ 5 min on 2 cores; a re-run with nothing new ≤ 30 s.\n",
        sizes.customers,
        sizes.passkeys,
        sizes.live_sessions,
        sizes.dead_sessions,
        sizes.backup_codes,
        sizes.grants,
        first.seconds,
        first.settled_seconds,
        first.rows(),
        first.written(),
        table(&first),
        again.settled_seconds,
        again.rows(),
        again.written(),
        table(&again),
        date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine = machine(),
    );
    if std::env::var("BENCH_NO_WRITE").is_err() {
        let path = write_section("bench-import", &body)?;
        println!("bench-import: figures written to {}", path.display());
    }
    Ok(())
}
