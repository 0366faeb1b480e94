//! `make bench-audit`: the audit writer and verifier on a durable PostgreSQL (fsync and
//! synchronous_commit on), through loopback HTTP, with pgbench single-row INSERTs on the same
//! cluster at the same concurrency as the reference. Prints the figures and writes them to
//! docs/benchmarks.md (section `bench-audit`). Not a test: nothing here asserts a speed.

/// The allocator the service binaries use, so the figures are theirs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use futures_util::{StreamExt, TryStreamExt};
use queue_audit::AuditConfig;
use queue_audit::config::KeysConfig;
use queue_bench::{Cluster, Figures, load, machine, write_section};
use queue_platform::Signals;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

fn writers() -> usize {
    std::env::var("BENCH_WRITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(32)
}

fn event(tenant: &str, n: u64) -> Value {
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "tenant_id": tenant,
        "actor": {"type": "user", "id": format!("user-{n}")},
        "action": "auth.session.validated",
        "target": {"type": "session", "id": format!("s-{n}")},
        "occurred_at": chrono::Utc::now().to_rfc3339(),
        "ip": "127.0.0.1",
        "user_agent": "queue-bench",
        "payload": {"n": n, "reason": "benchmark", "ok": true}
    })
}

/// Tokens minted per second of a wrk run: above the fastest run here (~15,000 events/s at 32
/// clients, ~25,000 at 128), so a run does not run out. `BENCH_TOKENS_PER_SEC` overrides it.
fn tokens_per_sec() -> u64 {
    std::env::var("BENCH_TOKENS_PER_SEC").ok().and_then(|s| s.parse().ok()).unwrap_or(40_000)
}

/// How much longer than its run a token lives: minting the run's tokens happens first and
/// must fit in this.
const TOKEN_MARGIN_SECS: u64 = 60;

/// Headroom in the replay set for the phases that mint per request (batches, the verify chain).
const REPLAY_HEADROOM: usize = 100_000;

/// A write spends its service token (one use on state-changing routes), so each wrk request
/// needs its own: `count` tokens from auth for audit, valid for the run plus the margin, minted
/// on every core into `path`, one a line.
fn mint_tokens(keys: &queue_testkit::TestKeys, count: u64, run_secs: u64, path: &Path) -> anyhow::Result<()> {
    let ttl = run_secs + TOKEN_MARGIN_SECS;
    anyhow::ensure!(
        ttl <= queue_svc_token::MAX_TTL_SECS,
        "BENCH_SECONDS is at most {}: each run's tokens must outlive it",
        queue_svc_token::MAX_TTL_SECS - TOKEN_MARGIN_SECS
    );
    let started = Instant::now();
    let minter = keys.minter("auth");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let chunks: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let minter = &minter;
                let mine = count / threads + u64::from(t < count % threads);
                s.spawn(move || -> anyhow::Result<String> {
                    let mut out = String::with_capacity(mine as usize * 420);
                    for _ in 0..mine {
                        out.push_str(&minter.mint("audit", &["audit:write"], ttl)?);
                        out.push('\n');
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("minting thread panicked"))))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    std::fs::write(path, chunks.concat())?;
    let took = started.elapsed();
    anyhow::ensure!(
        took < Duration::from_secs(TOKEN_MARGIN_SECS / 2),
        "minting {count} tokens took {took:.1?}: too slow for their {ttl} s lifetime (lower BENCH_TOKENS_PER_SEC)"
    );
    Ok(())
}

/// Single events for wrk's Lua: tenants `bench-{tenants}-0 … -{tenants-1}` in turn, each event
/// with a fresh id (a random prefix per run, a counter per request) and the same shape as
/// [`event`], each request with the next token of `tokens` (read lazily, one line per request;
/// wrk runs `-t1`, so one Lua state reads the file). Out of tokens, requests go without one,
/// are refused, and wrk's non-2xx count fails the run, after a line saying why.
fn wrk_script(tokens: &Path, tenants: usize) -> String {
    format!(
        r#"local TENANTS = {tenants}
local next_token = io.lines([==[{tokens}]==])
local spent, exhausted = 0, false
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(os.time())
local prefix = string.format("%08x-%04x", math.random(0, 2147483647), math.random(0, 65535))
local n = 0
request = function()
  n = n + 1
  local token = nil
  if not exhausted then
    token = next_token()
    exhausted = token == nil
    if exhausted then
      io.write(string.format("queue-bench: out of tokens after %d requests (raise BENCH_TOKENS_PER_SEC)\n", spent))
    end
  end
  if token then
    spent = spent + 1
    wrk.headers["Authorization"] = "Bearer " .. token
  else
    wrk.headers["Authorization"] = nil
  end
  local id = string.format("%s-4%03x-8%03x-%04x%08x", prefix, math.random(0, 4095), math.random(0, 4095),
    math.floor(n / 4294967296) % 65536, n % 4294967296)
  local body = string.format('{{"id":"%s","tenant_id":"bench-%d-%d","actor":{{"type":"user","id":"user-%d"}},' ..
    '"action":"auth.session.validated","target":{{"type":"session","id":"s-%d"}},"occurred_at":"%s",' ..
    '"ip":"127.0.0.1","user_agent":"queue-bench","payload":{{"n":%d,"reason":"benchmark","ok":true}}}}',
    id, TENANTS, n % TENANTS, n, n, os.date("!%Y-%m-%dT%H:%M:%SZ"), n)
  return wrk.format(nil, nil, nil, body)
end
"#,
        tokens = tokens.display()
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let duration = Duration::from_secs(seconds);
    // BENCH_PG_STATS: also print which statements PostgreSQL spends its time on (diagnosis).
    let stats = std::env::var("BENCH_PG_STATS").is_ok();
    let cluster = Cluster::start_with(
        "bench",
        if stats {
            "-c shared_preload_libraries=pgaudit,pg_stat_statements -c pg_stat_statements.track=all"
        } else {
            ""
        },
    )?;
    let keys = queue_testkit::TestKeys::new();
    let key_dir = tempfile::tempdir()?;
    let mut base = queue_testkit::service_config("audit", &cluster.url("bench"), &keys);
    base.server.workers = None;
    base.database.pool_size = 40;
    let mut config = AuditConfig::new(base, KeysConfig::local_in(key_dir.path(), true)?.0);
    config.chain.max_batch = 1000;
    // BENCH_AUDIT_WRITERS: writer tasks (chain.writers); the service's default otherwise.
    if let Some(w) = std::env::var("BENCH_AUDIT_WRITERS").ok().and_then(|s| s.parse().ok()) {
        config.chain.writers = w;
    }
    config.limits.per_caller_rps = 10_000_000;
    config.limits.per_caller_burst = 10_000_000;
    // BENCH_QUICK: only the 16-tenant run (after a 2 s warm-up), with CPU per event; for
    // comparing two builds back to back on a noisy machine. Writes nothing.
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let warm_up = Duration::from_secs(2);
    // Every write spends its token, remembered until the token expires. The wrk runs follow
    // each other within a token lifetime, so the replay set must hold all the tokens they are
    // given, plus the ones the batch phases mint per request; the default would refuse writes
    // with 503 part-way.
    let wrk_secs = if quick { warm_up.as_secs() + seconds } else { 3 * seconds };
    let replay_entries = (tokens_per_sec() * wrk_secs) as usize + REPLAY_HEADROOM;
    config.tokens.replay_max_entries = replay_entries.max(queue_svc_token::REPLAY_MAX_ENTRIES);
    let service_config = config.clone();
    let (addr, handle) = queue_bench::serve_on_own_runtime(move || queue_audit::run(service_config, Signals::Ignore))?;
    let url = format!("http://{addr}");
    let client = reqwest::Client::builder().pool_max_idle_per_host(writers()).build()?;

    let n = writers();
    println!(
        "bench-audit: {} s per run, {n} concurrent writers, {} writer tasks, a fresh service token per write \
         (wrk: {} minted per run-second), replay set {} entries (tokens.replay_max_entries), {}",
        seconds,
        config.chain.writers,
        tokens_per_sec(),
        config.tokens.replay_max_entries,
        machine()
    );

    let events_url = format!("{url}/api/v1/audit/events");
    // Tokens are minted before a run (outside its timing and CPU figures) into a file wrk reads.
    let tokens_for = |run: Duration| -> anyhow::Result<tempfile::NamedTempFile> {
        let file = tempfile::NamedTempFile::new()?;
        mint_tokens(&keys, tokens_per_sec() * run.as_secs(), run.as_secs(), file.path())?;
        Ok(file)
    };
    let wrk_run = |tenants: usize, conns: usize, tokens: &tempfile::NamedTempFile, run: Duration| {
        queue_bench::wrk(&events_url, &wrk_script(tokens.path(), tenants), conns, run)
    };
    let single = |tenants: usize, conns: usize| wrk_run(tenants, conns, &tokens_for(duration)?, duration);
    let diag = |label: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let text = client.get(format!("{url}/metrics")).send().await.ok()?.text().await.ok()?;
            let (events, batches) = queue_bench::histogram(&text, "queue_audit_append_batch_events");
            let (secs, commits) = queue_bench::histogram(&text, "queue_audit_append_commit_seconds");
            let (me, pg) = queue_bench::cpu_seconds();
            println!(
                "    [{label}] so far: {batches:.0} commits, {:.1} events/commit, {:.2} ms/commit; cpu: bench process {me:.1} s, postgres {pg:.1} s",
                events / batches.max(1.0),
                1000.0 * secs / commits.max(1.0)
            );
            Some(())
        }
    };
    if stats {
        cluster.psql("bench", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")?;
    }
    let top_statements = |label: &str| -> anyhow::Result<()> {
        if !stats {
            return Ok(());
        }
        println!("    [{label}] PostgreSQL time by statement (pg_stat_statements):");
        let rows = cluster.psql(
            "bench",
            "SELECT calls, round(total_exec_time::numeric, 0), round((total_exec_time / greatest(calls, 1))::numeric, 3), \
             left(regexp_replace(query, '\\s+', ' ', 'g'), 90) \
             FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 8",
        )?;
        for r in rows.lines() {
            println!("      {r}");
        }
        cluster.psql("bench", "SELECT pg_stat_statements_reset()")?;
        Ok(())
    };
    if quick {
        wrk_run(16, n, &tokens_for(warm_up)?, warm_up)?;
        let tokens = tokens_for(duration)?;
        let (me0, pg0) = queue_bench::cpu_seconds();
        let f = wrk_run(16, n, &tokens, duration)?;
        let (me1, pg1) = queue_bench::cpu_seconds();
        diag("quick").await;
        let events = f.per_sec() * seconds as f64;
        println!(
            "  quick: 16 tenants {:.0} events/s p50 {:.2} ms p99 {:.2} ms; CPU per event: service {:.1} µs, postgres {:.1} µs",
            f.per_sec(),
            f.p50_ms,
            f.p99_ms,
            (me1 - me0) / events * 1e6,
            (pg1 - pg0) / events * 1e6
        );
        handle.stop(true).await;
        return Ok(());
    }
    let one = single(1, n)?;
    diag("1 tenant").await;
    top_statements("1 tenant")?;
    println!(
        "  single events, 1 tenant:   {:>9.0} events/s  p50 {:.2} ms  p99 {:.2} ms",
        one.per_sec(),
        one.p50_ms,
        one.p99_ms
    );
    let sixteen = single(16, n)?;
    diag("16 tenants").await;
    top_statements("16 tenants")?;
    println!(
        "  single events, 16 tenants: {:>9.0} events/s  p50 {:.2} ms  p99 {:.2} ms",
        sixteen.per_sec(),
        sixteen.p50_ms,
        sixteen.p99_ms
    );

    // Durable commits take milliseconds and a writer can only batch what is waiting, so
    // events/s is bounded by concurrent appends ÷ commit time: the same with 4× the clients.
    let many = 4 * n;
    let sixteen_many = single(16, many)?;
    diag("16 tenants, more clients").await;
    println!(
        "  single events, 16 tenants, {many} clients: {:>9.0} events/s  p50 {:.2} ms  p99 {:.2} ms",
        sixteen_many.per_sec(),
        sixteen_many.p50_ms,
        sixteen_many.p99_ms
    );

    let batch_size = 100u64;
    // A write spends its service token (one use on state-changing routes): a fresh one per
    // request, minted inside the timed loop as the audit client does.
    let batch = {
        let (client, url, keys) = (client.clone(), url.clone(), keys.clone());
        move |c: usize, i: u64| {
            let (client, url) = (client.clone(), url.clone());
            let token = keys.token("auth", "audit", &["audit:write"]);
            async move {
                let tenant = format!("batch-{}", c % 16);
                let events: Vec<Value> = (0..batch_size).map(|k| event(&tenant, i * batch_size + k)).collect();
                let r = client
                    .post(format!("{url}/api/v1/audit/events/batch"))
                    .bearer_auth(&token)
                    .json(&json!({"events": events}))
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 201, "status {}", r.status());
                Ok(batch_size)
            }
        }
    };
    let batched = load(writers(), duration, batch).await;
    diag("batch").await;
    println!(
        "  batch endpoint ({batch_size}/req, 16 tenants): {:>9.0} events/s  p50 {:.2} ms  p99 {:.2} ms",
        batched.per_sec(),
        batched.p50_ms,
        batched.p99_ms
    );

    // Verify a long chain: BENCH_VERIFY_EVENTS (default 100,000) events of one tenant, written
    // through the batch endpoint, then read back and recomputed.
    let verify_events: u64 = std::env::var("BENCH_VERIFY_EVENTS").ok().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let per_request = 500u64;
    let requests = verify_events.div_ceil(per_request);
    futures_util::stream::iter(0..requests)
        .map(|r| {
            let (client, url) = (client.clone(), url.clone());
            let token = keys.token("auth", "audit", &["audit:write"]);
            async move {
                let events: Vec<Value> = (0..per_request).map(|k| event("verify-long", r * per_request + k)).collect();
                let resp = client
                    .post(format!("{url}/api/v1/audit/events/batch"))
                    .bearer_auth(&token)
                    .json(&json!({"events": events}))
                    .send()
                    .await?;
                anyhow::ensure!(resp.status() == 201, "status {}", resp.status());
                anyhow::Ok(())
            }
        })
        .buffer_unordered(4)
        .try_collect::<Vec<()>>()
        .await?;
    let db = queue_platform::db::Db::with_role(&config.database, Some(queue_audit::APP_ROLE))?;
    let ring = queue_audit::key_ring(&config).await?;
    let mut best = f64::MAX;
    let mut report = None;
    // Three runs, the best one counts (the first also warms PostgreSQL's buffers).
    for _ in 0..3 {
        let started = Instant::now();
        let r = queue_audit::domain::verify::verify_tenant(&db, &ring, "verify-long")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        best = best.min(started.elapsed().as_secs_f64());
        anyhow::ensure!(r.ok, "the benchmark chain does not verify: {r:?}");
        report = Some(r);
    }
    let report = report.ok_or_else(|| anyhow::anyhow!("no verify run"))?;
    // Diagnosis: reading the rows alone (no MACs), page by page as the verifier reads them.
    let started = Instant::now();
    let (mut after, mut rows) = (0i64, 0usize);
    loop {
        let page = queue_audit::domain::verify::page(&db, "verify-long", after, 10_000)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        rows += page.len();
    }
    let read_secs = started.elapsed().as_secs_f64();
    println!("    [verify] reading the rows alone: {rows} in {read_secs:.3} s = {:.0} rows/s", rows as f64 / read_secs);
    let verify_secs = best;
    let verify_rate = report.events as f64 / verify_secs;
    println!("  verify: {} events in {:.3} s = {:>9.0} events/s (best of 3)", report.events, verify_secs, verify_rate);
    handle.stop(true).await;

    cluster.psql(
        "bench",
        "CREATE TABLE bench_ref (id bigserial PRIMARY KEY, tenant_id text NOT NULL, payload jsonb NOT NULL)",
    )?;
    let reference = cluster.pgbench(
        "bench",
        "INSERT INTO bench_ref (tenant_id, payload) VALUES ('t', '{\"n\": 1, \"reason\": \"benchmark\"}');\n",
        writers() as u32,
        seconds as u32,
    )?;
    println!("  reference: pgbench single-row INSERT, {n} clients: {reference:>9.0} TPS");

    let row = |name: &str, f: &Figures| format!("| {name} | {:.0} | {:.2} | {:.2} |", f.per_sec(), f.p50_ms, f.p99_ms);
    let body = format!(
        "## Audit writer and verifier (`make bench-audit`)\n\n\
Run {date} on {machine}. PostgreSQL with fsync and synchronous_commit **on**; {n} concurrent\n\
writers over loopback HTTP (single events: wrk `-t1 -c{n}` with a Lua script; batches: clients in the bench\n\
process), {writer_tasks} writer tasks in the service (`chain.writers`), a fresh service token per request,\n\
verified and spent (one use on writes; wrk reads tokens minted before each run, {rate} per second of\n\
run, from a file; `tokens.replay_max_entries` = {replay} so the replay set holds every token the runs\n\
spend within a token lifetime); {seconds} s per run; the load generator, the service and PostgreSQL\n\
share the same 2 cores.\n\n\
| workload | events/s | p50 ms | p99 ms |\n|---|---|---|---|\n{}\n{}\n{}\n{}\n\n\
| verify (one chain of {} events) | {:.0} events/s |\n|---|---|\n\
| **reference**: pgbench single-row INSERT, {n} clients, same cluster, same run | {:.0} TPS |\n\n\
Aims (issue 3): ≥ 10,000 events/s across tenants, ≥ 3,000/s for one tenant, verify ≥ 200,000 events/s.\n",
        row("single events, 1 tenant", &one),
        row("single events, 16 tenants", &sixteen),
        row(&format!("single events, 16 tenants, {many} concurrent writers"), &sixteen_many),
        row(&format!("batch endpoint, {batch_size} events per request, 16 tenants"), &batched),
        report.events,
        verify_rate,
        reference,
        date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine = machine(),
        writer_tasks = config.chain.writers,
        rate = tokens_per_sec(),
        replay = config.tokens.replay_max_entries,
    );
    let path = write_section("bench-audit", &body)?;
    println!("bench-audit: figures written to {}", path.display());
    Ok(())
}
