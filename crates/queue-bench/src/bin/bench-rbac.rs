//! `make bench-rbac`: checks, batch checks and grants on a durable PostgreSQL holding
//! 1,000,000 grants over 10,000 tenants and 100,000 tickets (100,000 principals), through
//! loopback HTTP with service tokens, at 64 concurrent clients. Grants go through the real
//! audit service (pre-write audit). Prints the figures and writes them to docs/benchmarks.md
//! (section `bench-rbac`). Not a test: nothing here asserts a speed.
//!
//! BENCH_SECONDS (default 10) per run, BENCH_CLIENTS (64), BENCH_GRANTS (1,000,000).

use queue_audit::AuditConfig;
use queue_audit::config::KeysConfig;
use queue_bench::{Cluster, Figures, load, machine, serve_on_own_runtime, write_section};
use queue_platform::Signals;
use queue_rbac::RbacConfig;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TENANTS: u64 = 10_000;
const TICKETS: u64 = 100_000;
const PRINCIPALS: u64 = 100_000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// splitmix64: a fixed, dependency-free sequence of pseudo-random numbers.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A check as the load asks it: a random principal, permission and resource. Half of the
/// resources are where the principal has grants (its tickets' tenants), half anywhere.
fn random_check(seed: u64) -> Value {
    let r = mix(seed);
    let principal = r % PRINCIPALS;
    let permission = ["ticket.read", "ticket.write", "audit.read", "rbac.grant"][(r >> 20) as usize % 4];
    // Grant g (g = principal + k * PRINCIPALS) is for ticket g % TICKETS of tenant ticket % TENANTS.
    let ticket = if (r >> 30).is_multiple_of(2) {
        (principal + ((r >> 32) % 10) * PRINCIPALS) % TICKETS
    } else {
        (r >> 34) % TICKETS
    };
    let tenant = ticket % TENANTS;
    json!({"principal_id": format!("u{principal}"), "permission": permission,
           "resource": {"tenant_id": format!("t{tenant}"), "ticket_id": format!("k{ticket}")}})
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let seconds = env_or("BENCH_SECONDS", 10);
    let clients = env_or("BENCH_CLIENTS", 64) as usize;
    let grants = env_or("BENCH_GRANTS", 1_000_000);
    let duration = Duration::from_secs(seconds);
    let cluster = Cluster::start("bench")?;
    let keys = queue_testkit::TestKeys::new();
    println!("bench-rbac: {seconds} s per run, {clients} concurrent clients, {}", machine());

    // Schemas first (the services would do it; the seed needs the tables).
    queue_platform::db::migrate(&cluster.url("bench"), queue_rbac::MIGRATIONS).await?;
    queue_platform::db::migrate(&cluster.url("bench"), queue_audit::MIGRATIONS).await?;
    let started = Instant::now();
    // The seed writes straight in SQL with triggers off (session_replication_role = replica):
    // 1,000,000 rows through the change log and the shadow table would only measure the seed.
    // Grant g: principal u(g % 100k); ticket k(g % 100k) of tenant t(ticket % 10k); every 10th
    // grant is at the ticket's tenant instead of the ticket; roles cycle viewer, agent, auditor,
    // customer_admin; every 50th grant expires (in the past), every 40th is revoked.
    cluster.psql(
        "bench",
        &format!(
            "SET session_replication_role = replica;
             INSERT INTO rbac.rbac_grants (id, principal_id, role_id, scope_type, tenant_id, ticket_id, expires_at,
                                           granted_by, reason, granted_at, audit_event_id, revoked_at, revoked_by)
             SELECT gen_random_uuid(), 'u' || (g % {PRINCIPALS}),
                    ('00000000-0000-4000-8000-00000000000' || (ARRAY['1','2','4','3'])[1 + g % 4])::uuid,
                    CASE WHEN g % 10 = 0 THEN 'tenant' ELSE 'ticket' END,
                    't' || ((g % {TICKETS}) % {TENANTS}),
                    CASE WHEN g % 10 = 0 THEN NULL ELSE 'k' || (g % {TICKETS}) END,
                    CASE WHEN g % 50 = 0 THEN now() - interval '1 day' END,
                    'service:bench', 'seed', now() - interval '2 days', gen_random_uuid(),
                    CASE WHEN g % 40 = 0 THEN now() - interval '1 hour' END,
                    CASE WHEN g % 40 = 0 THEN 'service:bench' END
             FROM generate_series(0, {grants} - 1) AS g;
             UPDATE rbac.rbac_revision SET revision = revision + 1;
             ANALYZE rbac.rbac_grants;"
        ),
    )?;
    println!("  seeded {grants} grants in {:.1} s", started.elapsed().as_secs_f64());

    let key_dir = tempfile::tempdir()?;
    let mut base = queue_testkit::service_config("audit", &cluster.url("bench"), &keys);
    base.server.workers = Some(1);
    let audit_config = AuditConfig::new(base, KeysConfig::local_in(key_dir.path(), true)?.0);
    let (audit_addr, audit_handle) = serve_on_own_runtime(move || queue_audit::run(audit_config, Signals::Ignore))?;

    let mut base = queue_testkit::service_config("rbac", &cluster.url("bench"), &keys);
    base.server.workers = None;
    base.database.pool_size = 32;
    let rbac_config = RbacConfig::new(base, url::Url::parse(&format!("http://{audit_addr}"))?);
    let mut uncached_config = rbac_config.clone();
    uncached_config.cache.max_principals = 0;
    let (addr, handle) = serve_on_own_runtime(move || queue_rbac::run(rbac_config, Signals::Ignore))?;
    let url = Arc::new(format!("http://{addr}"));
    let token = Arc::new(keys.token("raptor", "rbac", &["rbac:check", "rbac:grant"]));
    let client = reqwest::Client::builder().pool_max_idle_per_host(clients).build()?;

    let check_on = |url: Arc<String>| {
        let (client, token) = (client.clone(), token.clone());
        move |c: usize, i: u64| {
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            async move {
                let body = random_check(((c as u64) << 40) ^ i);
                let r = client.post(format!("{url}/api/v1/rbac/check")).bearer_auth(&*token).json(&body).send().await?;
                anyhow::ensure!(r.status() == 200, "status {}", r.status());
                Ok(1)
            }
        }
    };
    let check = check_on(url.clone());
    // Warm the cache as a running service's would be: every principal once, 1,000 per batch.
    let started = Instant::now();
    for chunk in 0..PRINCIPALS.div_ceil(1000) {
        let checks: Vec<Value> = (chunk * 1000..((chunk + 1) * 1000).min(PRINCIPALS))
            .map(|p| json!({"principal_id": format!("u{p}"), "permission": "ticket.read", "resource": {"tenant_id": "t0"}}))
            .collect();
        let r = client
            .post(format!("{url}/api/v1/rbac/check/batch"))
            .bearer_auth(&*token)
            .json(&json!({"checks": checks}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "warm-up: status {}", r.status());
    }
    println!("  warm-up: {PRINCIPALS} principals loaded in {:.1} s", started.elapsed().as_secs_f64());
    let hits0 = metric(&client, &url, "queue_rbac_cache_lookups_total{outcome=\"hit\"}").await;
    let misses0 = metric(&client, &url, "queue_rbac_cache_lookups_total{outcome=\"miss\"}").await;
    let checks = load(clients, duration, check.clone()).await;
    let hits = metric(&client, &url, "queue_rbac_cache_lookups_total{outcome=\"hit\"}").await - hits0;
    let misses = metric(&client, &url, "queue_rbac_cache_lookups_total{outcome=\"miss\"}").await - misses0;
    println!(
        "  checks:        {:>9.0} checks/s  p50 {:.2} ms  p99 {:.2} ms  (cache hits {:.1} %)",
        checks.per_sec(),
        checks.p50_ms,
        checks.p99_ms,
        100.0 * hits / (hits + misses).max(1.0)
    );

    // The same load on a replica without a cache: every check reads PostgreSQL.
    let (uncached_addr, uncached_handle) =
        serve_on_own_runtime(move || queue_rbac::run(uncached_config, Signals::Ignore))?;
    let uncached = load(clients, duration, check_on(Arc::new(format!("http://{uncached_addr}")))).await;
    uncached_handle.stop(true).await;
    println!(
        "  checks, no cache: {:>6.0} checks/s  p50 {:.2} ms  p99 {:.2} ms  (every check reads PostgreSQL)",
        uncached.per_sec(),
        uncached.p50_ms,
        uncached.p99_ms
    );

    let per_batch = 100u64;
    let batch = {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        move |c: usize, i: u64| {
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            async move {
                let checks: Vec<Value> = (0..per_batch)
                    .map(|k| random_check(((c as u64) << 40) ^ (i * per_batch + k) ^ (1 << 60)))
                    .collect();
                let r = client
                    .post(format!("{url}/api/v1/rbac/check/batch"))
                    .bearer_auth(&*token)
                    .json(&json!({"checks": checks}))
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 200, "status {}", r.status());
                Ok(per_batch)
            }
        }
    };
    let batched = load(clients, duration, batch).await;
    println!(
        "  batch checks ({per_batch}/req): {:>9.0} checks/s  p50 {:.2} ms  p99 {:.2} ms",
        batched.per_sec(),
        batched.p50_ms,
        batched.p99_ms
    );

    let grant = {
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        move |c: usize, i: u64| {
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            async move {
                let r = mix(((c as u64) << 40) ^ i ^ (1 << 61));
                let body = json!({"principal_id": format!("new{c}-{i}"), "role": "agent",
                    "scope": {"type": "ticket", "tenant_id": format!("t{}", r % TENANTS), "ticket_id": format!("k{}", r % TICKETS)},
                    "reason": "benchmark"});
                let resp =
                    client.post(format!("{url}/api/v1/rbac/grants")).bearer_auth(&*token).json(&body).send().await?;
                anyhow::ensure!(resp.status() == 201, "status {}", resp.status());
                Ok(1)
            }
        }
    };
    let granted = load(16, duration, grant).await;
    println!(
        "  grants (16 clients, pre-write audit): {:>6.0} grants/s  p50 {:.2} ms  p99 {:.2} ms",
        granted.per_sec(),
        granted.p50_ms,
        granted.p99_ms
    );
    // Checks while grants change the revision all the time: every check's fence reads changes.
    handle.stop(true).await;
    audit_handle.stop(true).await;

    let reference = cluster.pgbench(
        "bench",
        "\\set p random(0, 99999)\nSELECT count(*) FROM rbac.rbac_grants WHERE principal_id = 'u' || :p AND revoked_at IS NULL;\n",
        clients as u32,
        seconds as u32,
    )?;
    println!(
        "  reference: pgbench, one indexed lookup of a principal's grants, {clients} clients: {reference:>9.0} TPS"
    );

    let row = |name: &str, unit: &str, f: &Figures| {
        format!("| {name} | {:.0} {unit} | {:.2} | {:.2} |", f.per_sec(), f.p50_ms, f.p99_ms)
    };
    let body = format!(
        "## RBAC checks and grants (`make bench-rbac`)\n\n\
Run {date} on {machine}. {grants} grants over {TENANTS} tenants and {TICKETS} tickets ({PRINCIPALS}\n\
principals); PostgreSQL with fsync and synchronous_commit on; {clients} concurrent clients over loopback\n\
HTTP with service tokens; {seconds} s per run; load generator, rbac, audit and PostgreSQL share the same\n\
2 cores. Every check passes the revision fence (consistency across replicas).\n\n\
| workload | rate | p50 ms | p99 ms |\n|---|---|---|---|\n{}\n{}\n{}\n{}\n\n\
Cache hits during the check run: {:.1} %.\n\n\
| **reference**: pgbench, one indexed lookup of a principal's grants, {clients} clients, same cluster | {:.0} TPS |\n|---|---|\n\n\
Aim (issue 5): ≥ 20,000 checks/s with p99 ≤ 2 ms on 2 cores.\n",
        row("check (cache warm: every principal loaded once)", "checks/s", &checks),
        row("check, a replica without cache (every check reads PostgreSQL)", "checks/s", &uncached),
        row(&format!("batch check, {per_batch} per request"), "checks/s", &batched),
        row("grant (16 clients; audit event written first)", "grants/s", &granted),
        100.0 * hits / (hits + misses).max(1.0),
        reference,
        date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine = machine(),
    );
    let path = write_section("bench-rbac", &body)?;
    println!("bench-rbac: figures written to {}", path.display());
    Ok(())
}

/// One counter's value from the service's /metrics.
async fn metric(client: &reqwest::Client, url: &str, series: &str) -> f64 {
    let Ok(r) = client.get(format!("{url}/metrics")).send().await else { return 0.0 };
    let text = r.text().await.unwrap_or_default();
    // `series` is `name{label="value"}`; the service adds its own labels, so match by parts.
    let (name, label) = series.split_once('{').unwrap_or((series, "}"));
    let label = label.trim_end_matches('}');
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}
