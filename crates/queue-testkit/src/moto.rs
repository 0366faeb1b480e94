//! A KMS-compatible server (moto) on loopback for the aws-kms key provider's tests.
//! `scripts/install-test-deps.sh` installs it into var/venv-moto (`make test` runs that first);
//! `QUEUE_TEST_MOTO_SERVER` may name another `moto_server` binary.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::free_port;

pub struct Moto {
    pub endpoint: String,
    child: Child,
}

fn binary() -> PathBuf {
    std::env::var_os("QUEUE_TEST_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../var/venv-moto/bin/moto_server"))
}

impl Moto {
    pub async fn start() -> Self {
        let bin = binary();
        assert!(bin.exists(), "{} is missing: run scripts/install-test-deps.sh (make test does)", bin.display());
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.get(format!("{endpoint}/moto-api/")).send().await.is_err() {
            assert!(Instant::now() < deadline, "moto_server did not answer within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { endpoint, child }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
