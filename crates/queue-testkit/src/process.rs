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

/// A free loopback port (bind, read, release).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A service binary running in the background; killed on drop if still running.
pub struct ServiceProcess {
    child: Child,
    pub base_url: String,
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
        let mut all = env.to_vec();
        all.push(("QUEUE_SERVER__LISTEN", &listen));
        let child = command(binary, &all)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).expect("log file"))
            .spawn()
            .expect("spawn");
        let mut p = Self { child, base_url: format!("http://{listen}"), stderr_path, _dir: dir };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", p.base_url)).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Some(status) = p.child.try_wait().expect("wait") {
                panic!("{binary} exited with {status} before it was healthy: {}", p.stderr());
            }
            assert!(Instant::now() < deadline, "{binary} not healthy within 30 s: {}", p.stderr());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        p
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
