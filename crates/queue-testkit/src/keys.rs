//! Signing keys for every identity a test needs, in a temporary directory.

use queue_svc_token::{Minter, SigningKey, generate_ed25519_pem};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The identities a test world knows: the four services, the legacy app, and the operator
/// (whose tokens drive the proxy's admin API, as `queuectl proxy …` mints them).
pub const IDENTITIES: [&str; 6] = ["auth", "rbac", "audit", "proxy", "raptor", "operator"];

/// Clones share the directory (services of one test world trust each other's keys).
#[derive(Clone)]
pub struct TestKeys {
    dir: Arc<tempfile::TempDir>,
}

impl TestKeys {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in IDENTITIES {
            let (private_pem, public_pem) = generate_ed25519_pem().expect("generate");
            std::fs::write(dir.path().join(format!("{name}.pem")), private_pem.as_bytes()).expect("write key");
            std::fs::write(dir.path().join(format!("{name}.pub.pem")), public_pem).expect("write key");
        }
        Self { dir: Arc::new(dir) }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn private(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.pem"))
    }

    pub fn public(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.pub.pem"))
    }

    pub fn minter(&self, issuer: &str) -> Minter {
        let pem = std::fs::read_to_string(self.private(issuer)).expect("key exists");
        Minter::new(issuer, Arc::new(SigningKey::from_pem(&pem).expect("valid key")))
    }

    /// A token from `issuer` to `audience` with `scopes`, valid for a minute.
    pub fn token(&self, issuer: &str, audience: &str, scopes: &[&str]) -> String {
        self.minter(issuer).mint(audience, scopes, 60).expect("mint")
    }
}

impl Default for TestKeys {
    fn default() -> Self {
        Self::new()
    }
}
