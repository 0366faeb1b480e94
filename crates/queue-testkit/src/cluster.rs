//! The PostgreSQL cluster tests run against: `DATABASE_URL` when set (e.g. `make test` starts
//! one for the whole run), else a throwaway cluster started once per test process with
//! scripts/pg-cluster.sh and stopped by a watchdog when the process exits.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

static ADMIN_URL: OnceLock<String> = OnceLock::new();
static SERVER_LOG: OnceLock<PathBuf> = OnceLock::new();

/// The server log of the throwaway cluster (`None` when tests use `DATABASE_URL`).
pub fn server_log() -> Option<&'static std::path::Path> {
    admin_url();
    SERVER_LOG.get().map(PathBuf::as_path)
}

/// A URL to a database on the test cluster with the right to create databases.
pub fn admin_url() -> &'static str {
    ADMIN_URL.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => start_throwaway().unwrap_or_else(|e| panic!("cannot start a throwaway PostgreSQL: {e}")),
    })
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn start_throwaway() -> Result<String, String> {
    let script = repo_root().join("scripts/pg-cluster.sh");
    let dir = tempfile::Builder::new().prefix("queue-pg-").tempdir().map_err(|e| e.to_string())?.keep();
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port()?;
        let out = Command::new(&script)
            .args(["start", &dir.display().to_string(), &port.to_string(), "queue"])
            .env("PG_EXTRA_OPTS", "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            spawn_watchdog(&script, &dir);
            let _ = SERVER_LOG.set(dir.join("server.log"));
            return Ok(format!("postgres://queue@127.0.0.1:{port}/queue"));
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
    }
    Err(last)
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Stops the cluster and removes its directory once this process is gone, however it ends.
fn spawn_watchdog(script: &std::path::Path, dir: &std::path::Path) {
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; '{script}' stop '{dir}' >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        script = script.display(),
        dir = dir.display()
    );
    let _ = Command::new("sh")
        .args(["-c", &watchdog])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}
