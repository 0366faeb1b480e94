//! What the legacy tests share: a Raptor database made from `legacy/raptor/raptor-schema.sql`
//! with the rows a test gives, real auth and rbac (with a real audit behind rbac) in-process on
//! one set of test keys, and queuectl run as the operator off the async runtime.

use diesel_async::SimpleAsyncConnection;
use queue_platform::Signals;
use queue_testkit::{TestApp, TestDb, TestKeys};
use std::path::Path;

use crate::api_conformance::rbac_and_audit;

pub const SCHEMA: &str = include_str!("../../../../legacy/raptor/raptor-schema.sql");

/// A Raptor database: its schema, then `rows`.
pub async fn raptor(rows: &str) -> TestDb {
    let db = TestDb::empty().await;
    let mut conn = db.conn().await;
    conn.batch_execute(SCHEMA).await.expect("raptor-schema.sql");
    conn.batch_execute(rows).await.expect("rows");
    db
}

/// auth, rbac and audit of one test world: the operator is an importer of both (the default).
pub struct Queue {
    pub keys: TestKeys,
    pub auth: TestApp,
    pub rbac: TestApp,
    pub audit: TestApp,
    _dir: tempfile::TempDir,
}

impl Queue {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let keys = TestKeys::new();
        let auth = auth(&keys, dir.path()).await;
        let (rbac, audit) = rbac_and_audit(&keys, dir.path()).await;
        Self { keys, auth, rbac, audit, _dir: dir }
    }

    /// `queuectl legacy COMMAND --source-url SOURCE ARGS…` against these services, as `iss`.
    pub async fn legacy(&self, command: &str, source: &str, iss: &str, args: &[&str]) -> (i32, String, String) {
        let (auth, rbac) = (self.auth.url(""), self.rbac.url(""));
        let mut all = vec!["legacy", command, "--source-url", source, "--auth-url", &auth, "--rbac-url", &rbac];
        all.extend(["--iss", iss]);
        all.extend(args);
        let key = self.keys.private(iss).display().to_string();
        crate::queuectl_async(&all, &[("QUEUE_OPERATOR_KEY", &key)]).await
    }

    pub async fn stop(&self) {
        self.auth.stop().await;
        self.rbac.stop().await;
        self.audit.stop().await;
    }
}

/// auth on its own test database (backup codes on), trusting the test identities of `keys`.
pub(crate) async fn auth(keys: &TestKeys, dir: &Path) -> TestApp {
    let pepper = dir.join("pepper.key");
    queue_auth::config::write_pepper(&pepper, true).expect("pepper");
    let mail = dir.join("mail");
    TestApp::spawn_in(
        "auth",
        TestDb::new(&[queue_auth::MIGRATIONS]).await,
        keys.clone(),
        move |base| {
            let mut config = queue_auth::config::AuthConfig::new(base, pepper);
            config.mailer.dev_dir = mail;
            config.flags.auth_backup_codes = true;
            queue_auth::run(config, Signals::Ignore)
        },
        |_| {},
    )
    .await
}
