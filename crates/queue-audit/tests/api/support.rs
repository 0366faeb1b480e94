//! An audit service under test: its own database, local key files, helpers to write events and
//! to reach the database as the attacker (the superuser) or as the service's role.

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use queue_audit::config::{AuditConfig, ChainConfig, KeysConfig};
use queue_platform::{ServiceConfig, Signals};
use queue_testkit::TestApp;
use serde_json::{Value, json};

pub struct Audit {
    pub app: TestApp,
    /// Kept so the key files outlive the test (offline verification reads them again).
    _key_dir: tempfile::TempDir,
    pub config: AuditConfig,
}

pub fn local_keys(dir: &std::path::Path) -> KeysConfig {
    KeysConfig::local_in(dir, true).expect("write key files").0
}

pub fn audit_config(base: ServiceConfig, keys: KeysConfig, chain: ChainConfig) -> AuditConfig {
    AuditConfig { chain, ..AuditConfig::new(base, keys) }
}

impl Audit {
    pub async fn start() -> Self {
        Self::start_with(ChainConfig::default(), |_| {}).await
    }

    pub async fn start_with(chain: ChainConfig, adjust: impl FnOnce(&mut AuditConfig)) -> Self {
        let key_dir = tempfile::tempdir().expect("tmp");
        let keys = local_keys(key_dir.path());
        let captured = std::sync::Arc::new(std::sync::Mutex::new(None));
        let c2 = captured.clone();
        let app = TestApp::spawn("audit", queue_audit::MIGRATIONS, move |base| {
            let mut config = audit_config(base, keys, chain);
            adjust(&mut config);
            *c2.lock().expect("lock") = Some(config.clone());
            queue_audit::run(config, Signals::Ignore)
        })
        .await;
        let config = captured.lock().expect("lock").take().expect("config");
        Self { app, _key_dir: key_dir, config }
    }

    pub fn writer(&self) -> String {
        self.app.token("auth", &["audit:write"])
    }

    pub fn reader(&self) -> String {
        self.app.token("raptor", &["audit:read"])
    }

    pub async fn write(&self, event: &Value) -> (u16, Value) {
        let (s, v) = self.app.post_json_as("/api/v1/audit/events", &self.writer(), event).await;
        (s.as_u16(), v)
    }

    pub async fn write_n(&self, tenant: &str, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        for i in 0..n {
            let (s, v) = self.write(&event(tenant, i)).await;
            assert_eq!(s, 201, "{v}");
            out.push(v);
        }
        out
    }

    pub async fn verify(&self, tenant: &str) -> Value {
        let (s, v) = self.app.get_json_as(&format!("/api/v1/audit/verify?tenant_id={tenant}"), &self.reader()).await;
        assert_eq!(s.as_u16(), 200, "{v}");
        v
    }

    /// The NDJSON export of a tenant (checking it is served as NDJSON).
    pub async fn export(&self, tenant: &str) -> String {
        let r = self
            .app
            .client
            .get(self.app.url(&format!("/api/v1/audit/export?tenant_id={tenant}")))
            .bearer_auth(self.reader())
            .send()
            .await
            .expect("export");
        assert_eq!(r.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/x-ndjson"));
        r.text().await.expect("body")
    }

    /// Waits (up to 10 s) until a checkpoint covers `seq`; returns the newest checkpoint.
    pub async fn wait_for_checkpoint(&self, tenant: &str, seq: i64) -> Value {
        for _ in 0..200 {
            let (_, cps) =
                self.app.get_json_as(&format!("/api/v1/audit/checkpoints?tenant_id={tenant}"), &self.reader()).await;
            if cps["checkpoints"][0]["seq"].as_i64() >= Some(seq) {
                return cps["checkpoints"][0].clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no checkpoint of {tenant} reached seq {seq} within 10 s");
    }

    /// The superuser: someone holding the database.
    pub async fn attacker(&self) -> AsyncPgConnection {
        self.app.db.conn().await
    }

    /// The service's own role, as the service works.
    pub async fn as_service_role(&self) -> AsyncPgConnection {
        let mut c = AsyncPgConnection::establish(&self.app.db.url).await.expect("connect");
        c.batch_execute(&format!("SET ROLE {}", queue_audit::APP_ROLE)).await.expect("set role");
        c
    }
}

pub fn event(tenant: &str, i: usize) -> Value {
    json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "tenant_id": tenant,
        "actor": {"type": "user", "id": format!("u{i}")},
        "action": "auth.login.ok",
        "target": {"type": "session", "id": format!("s{i}")},
        "occurred_at": "2026-11-22T10:00:00.123456Z",
        "ip": "127.0.0.1",
        "payload": {"n": i, "note": "héllo \"quoted\"\n"}
    })
}

pub async fn exec(conn: &mut AsyncPgConnection, sql: &str) -> Result<(), diesel::result::Error> {
    conn.batch_execute(sql).await
}
