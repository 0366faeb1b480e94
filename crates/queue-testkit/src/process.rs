//! Running a service binary as a real process: what `make run` and production do. Used to
//! test config failures (exit code 64), signal handling and span export end to end.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A command for `binary` with a clean environment (PATH only) plus `env`.
pub fn command(binary: &str, env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(binary);
    c.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        c.env("PATH", path);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(Stdio::null());
    c
}

/// Runs `binary` to completion (it must stop by itself within 30 s).
pub fn run_to_exit(binary: &str, env: &[(&str, &str)]) -> Output {
    let mut child = command(binary, env).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("{binary} did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// A free loopback port for a process to listen on later, chosen **below** the kernel's ephemeral
/// range: a port from that range (what binding port 0 gives) can be taken as the local end of any
/// outgoing connection before the process binds it, which with many tests in parallel happens.
/// Ports are handed out in turn from a per-process starting point, each checked free by binding.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let below = ephemeral_start().max(FIRST + 1000);
    let span = below - FIRST;
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let port = FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = u16::try_from(port).expect("a port");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The first port of the kernel's ephemeral range (Linux: /proc/sys/net/ipv4/ip_local_port_range;
/// elsewhere the IANA range's 49152).
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(49_152)
}

/// A service binary running in the background; killed on drop if still running.
pub struct ServiceProcess {
    child: Child,
    pub base_url: String,
    binary: String,
    /// The environment it was started with, `QUEUE_SERVER__LISTEN` included (for a restart).
    env: Vec<(String, String)>,
    stderr_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl ServiceProcess {
    /// Starts `binary` listening on a free port and waits until `/healthz` answers.
    pub async fn start(binary: &str, env: &[(&str, &str)]) -> Self {
        Self::start_on(binary, env, free_port()).await
    }

    /// Like [`Self::start`], on a port chosen beforehand (when another process's config must
    /// name the address first, e.g. a WebAuthn origin).
    pub async fn start_on(binary: &str, env: &[(&str, &str)], port: u16) -> Self {
        let listen = format!("127.0.0.1:{port}");
        let dir = tempfile::tempdir().expect("tmp");
        let stderr_path = dir.path().join("stderr.log");
        let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        env.push(("QUEUE_SERVER__LISTEN".into(), listen.clone()));
        let child = Self::spawn_logging(binary, &env, &stderr_path);
        let mut p =
            Self { child, base_url: format!("http://{listen}"), binary: binary.into(), env, stderr_path, _dir: dir };
        p.wait_healthy().await;
        p
    }

    fn spawn_logging(binary: &str, env: &[(String, String)], log: &std::path::Path) -> Child {
        let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // Appended: a restarted process's log follows the one before it.
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
        command(binary, &refs).stdout(Stdio::null()).stderr(log).spawn().expect("spawn")
    }

    async fn wait_healthy(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", self.base_url)).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!("{} exited with {status} before it was healthy: {}", self.binary, self.stderr());
            }
            assert!(Instant::now() < deadline, "{} not healthy within 30 s: {}", self.binary, self.stderr());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process (SIGKILL: nothing is flushed or drained, as in a crash) and waits for
    /// it. [`Self::restart`] brings it back on the same port with the same config.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the binary again (stopping it first if it still runs) on the same address with
    /// the same environment and config, its log appended to the same file, and waits until
    /// `/healthz` answers.
    pub async fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn_logging(&self.binary, &self.env, &self.stderr_path);
        self.wait_healthy().await;
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "TERM") and waits up to 30 s for the exit code.
    pub async fn signal_and_wait(&mut self, signal: &str) -> Option<i32> {
        let sent = Command::new("kill").args([&format!("-{signal}"), &self.pid().to_string()]).status().expect("kill");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            assert!(Instant::now() < deadline, "no exit within 30 s of SIG{signal}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
