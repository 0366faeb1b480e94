//! Shared pieces of the benchmarks (each service's `benches/`, `make bench-*`): a durable
//! PostgreSQL cluster of their own, a service on a runtime of its own, load loops with latency
//! percentiles (in process, or wrk), pgbench as the reference, and writing figures into
//! docs/benchmarks.md. It knows no service: it depends on queue-platform and queue-testkit only,
//! so a service's benchmark pulls in no other service.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A PostgreSQL cluster with production durability (fsync and synchronous_commit on), stopped
/// and removed on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    pub fn start(db: &str) -> anyhow::Result<Self> {
        Self::start_with(db, "")
    }

    /// Like [`Cluster::start`], with extra server settings (`-c name=value ...`).
    pub fn start_with(db: &str, extra_opts: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("queue-bench-pg-").tempdir()?;
        if std::env::var("BENCH_KEEP_PG").is_ok() {
            eprintln!("cluster dir {}", dir.path().display());
        }
        let port = queue_testkit::process::free_port();
        let out = Command::new(repo_root().join("scripts/pg-cluster.sh"))
            .args(["start", &dir.path().display().to_string(), &port.to_string(), db])
            .env(
                "PG_EXTRA_OPTS",
                format!(
                    "-c shared_buffers=512MB -c max_wal_size=4GB {extra_opts} {}",
                    std::env::var("BENCH_PG_OPTS").unwrap_or_default()
                ),
            )
            .output()?;
        anyhow::ensure!(out.status.success(), "cluster: {}", String::from_utf8_lossy(&out.stderr));
        Ok(Self { dir, port })
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://queue@127.0.0.1:{}/{db}", self.port)
    }

    pub fn psql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let out = Command::new("psql")
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", &self.url(db), "-c", sql])
            .output()?;
        anyhow::ensure!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// pgbench with a custom script; returns transactions per second (excluding connections).
    pub fn pgbench(&self, db: &str, script: &str, clients: u32, seconds: u32) -> anyhow::Result<f64> {
        let f = self.dir.path().join("bench.sql");
        std::fs::write(&f, script)?;
        let out = Command::new("pgbench")
            .args(["-n", "-c", &clients.to_string(), "-j", "2", "-T", &seconds.to_string(), "-f"])
            .arg(&f)
            .arg(self.url(db))
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(out.status.success(), "pgbench: {}{}", text, String::from_utf8_lossy(&out.stderr));
        text.lines()
            .find_map(|l| l.strip_prefix("tps = ").and_then(|r| r.split_whitespace().next()?.parse().ok()))
            .ok_or_else(|| anyhow::anyhow!("no tps in pgbench output: {text}"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/pg-cluster.sh"))
            .args(["stop", &self.dir.path().display().to_string()])
            .output();
    }
}

/// Starts a service on a runtime of its own (2 worker threads), as in a deployment: the load
/// generator's tasks must not sit in the same run queue as the service's. Returns its address
/// and a handle that stops it.
pub fn serve_on_own_runtime<F, Fut>(start: F) -> anyhow::Result<(std::net::SocketAddr, actix_web::dev::ServerHandle)>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<queue_platform::Running>>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                let _ = tx.send(Err(e.into()));
                return;
            }
        };
        rt.block_on(async move {
            match start().await {
                Ok(running) => {
                    let _ = tx.send(Ok((running.addr, running.handle())));
                    let _ = running.wait().await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
    });
    rx.recv()?
}

/// Throughput and latency of a load run.
#[derive(Debug, Clone)]
pub struct Figures {
    pub ops: u64,
    pub seconds: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Figures {
    pub fn per_sec(&self) -> f64 {
        self.ops as f64 / self.seconds
    }

    fn from(latencies_us: &mut [u32], ops: u64, elapsed: Duration) -> Self {
        latencies_us.sort_unstable();
        let pct = |p: f64| {
            if latencies_us.is_empty() {
                0.0
            } else {
                latencies_us[((latencies_us.len() - 1) as f64 * p) as usize] as f64 / 1000.0
            }
        };
        Self { ops, seconds: elapsed.as_secs_f64(), p50_ms: pct(0.50), p99_ms: pct(0.99) }
    }
}

/// Runs `clients` concurrent loops of `op` for `duration`; `op(client, i)` returns how many
/// operations (e.g. events) it completed. Returns the figures over all clients.
pub async fn load<F, Fut>(clients: usize, duration: Duration, op: F) -> Figures
where
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<u64>> + Send,
{
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut ops = 0u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match op(c, i).await {
                    Ok(n) => {
                        ops += n;
                        lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    Err(e) => panic!("benchmark operation failed: {e:#}"),
                }
                i += 1;
            }
            (ops, lat)
        }));
    }
    let mut all = Vec::new();
    let mut ops = 0;
    for t in tasks {
        let (n, lat) = t.await.expect("load task");
        ops += n;
        all.extend(lat);
    }
    Figures::from(&mut all, ops, started.elapsed())
}

/// Replaces the text between `<!-- NAME:start -->` and `<!-- NAME:end -->` in
/// docs/benchmarks.md (appending the section if it is not there yet).
pub fn write_section(name: &str, body: &str) -> anyhow::Result<PathBuf> {
    let path = repo_root().join("docs/benchmarks.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        "# Benchmarks\n\nFigures written by `make bench-*`; each run rewrites its own section.\n".into()
    });
    let (start, end) = (format!("<!-- {name}:start -->"), format!("<!-- {name}:end -->"));
    let section = format!("{start}\n{}\n{end}", body.trim_end());
    let new = match (old.find(&start), old.find(&end)) {
        (Some(a), Some(b)) if b > a => format!("{}{}{}", &old[..a], section, &old[b + end.len()..]),
        _ => format!("{}\n{}\n", old.trim_end(), section),
    };
    std::fs::write(&path, new)?;
    Ok(path)
}

/// One line about the machine: cores, memory, CPU model, kernel, PostgreSQL version.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let pg = Command::new("psql")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem}, {pg}")
}

/// CPU seconds used so far by this process and by every `postgres` process (utime + stime).
pub fn cpu_seconds() -> (f64, f64) {
    let tick = 100.0; // USER_HZ on Linux
    let read = |path: String| -> Option<f64> {
        let stat = std::fs::read_to_string(path).ok()?;
        let rest = stat.rsplit_once(") ")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / tick)
    };
    let me = read("/proc/self/stat".into()).unwrap_or(0.0);
    let mut pg = 0.0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "postgres" {
                pg += read(format!("/proc/{pid}/stat")).unwrap_or(0.0);
            }
        }
    }
    (me, pg)
}

/// Sum and count of a Prometheus histogram in a text exposition.
pub fn histogram(text: &str, name: &str) -> (f64, f64) {
    let find = |suffix: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}_{suffix}")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (find("sum"), find("count"))
}

/// Runs wrk (`-t1`, keep-alive, `--latency`) against `url` with the Lua `script` for
/// `duration`: a load generator in C, so it leaves more of the shared cores to the service
/// than a client in this process would. Fails on any socket error or non-2xx answer.
pub fn wrk(url: &str, script: &str, connections: usize, duration: Duration) -> anyhow::Result<Figures> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("load.lua");
    std::fs::write(&path, script)?;
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{}s", duration.as_secs().max(1)), "--timeout", "10s"])
        .args(["--latency", "-s"])
        .arg(&path)
        .arg(url)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run wrk (apt-get install wrk): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    anyhow::ensure!(out.status.success(), "wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    parse_wrk(&text)
}

/// The figures in wrk's report (requests, elapsed time, the 50 % and 99 % latencies).
fn parse_wrk(text: &str) -> anyhow::Result<Figures> {
    anyhow::ensure!(!text.contains("Non-2xx"), "non-2xx answers under load:\n{text}");
    anyhow::ensure!(!text.contains("Socket errors"), "socket errors under load:\n{text}");
    let ms = |v: &str| -> Option<f64> {
        let split = v.find(|c: char| c.is_ascii_alphabetic())?;
        let (n, unit) = v.split_at(split);
        let n: f64 = n.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => return None,
        })
    };
    let pct = |p: &str| {
        text.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some(p)).then(|| f.next().and_then(ms)).flatten()
            })
            .ok_or_else(|| anyhow::anyhow!("no {p} latency in wrk's report:\n{text}"))
    };
    // "  123456 requests in 10.00s, 12.34MB read"
    let (ops, seconds) = text
        .lines()
        .find_map(|l| {
            let l = l.trim();
            let (n, rest) = l.split_once(" requests in ")?;
            let secs = ms(rest.split(',').next()?)? / 1000.0;
            Some((n.parse::<u64>().ok()?, secs))
        })
        .ok_or_else(|| anyhow::anyhow!("no request count in wrk's report:\n{text}"))?;
    Ok(Figures { ops, seconds, p50_ms: pct("50%")?, p99_ms: pct("99%")? })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_wrk_report_is_read() {
        let report = "Running 10s test @ http://127.0.0.1:1/x\n  1 threads and 64 connections\n  Latency Distribution\n     50%    2.10ms\n     75%    3.00ms\n     90%    4.00ms\n     99%  850.00us\n  215432 requests in 10.00s, 40.1MB read\nRequests/sec:  21543.20\n";
        let f = parse_wrk(report).unwrap();
        assert_eq!(f.ops, 215_432);
        assert!((f.seconds - 10.0).abs() < 1e-9);
        assert!((f.p50_ms - 2.1).abs() < 1e-9 && (f.p99_ms - 0.85).abs() < 1e-9);
        assert!(parse_wrk(&format!("{report}  Non-2xx or 3xx responses: 3\n")).is_err());
    }
}
