//! A test world: the real audit service and one or two rbac replicas, on a throwaway
//! PostgreSQL, trusting each other's service tokens.

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use queue_audit::AuditConfig;
use queue_audit::config::KeysConfig;
use queue_platform::Signals;
use queue_rbac::RbacConfig;
use queue_testkit::{TestApp, TestDb, TestKeys};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub struct World {
    pub keys: TestKeys,
    pub audit: TestApp,
    pub rbac: TestApp,
    pub rbac_db: TestDb,
    /// With [`World::start_with_users`]: the real auth service, whose sessions rbac and audit accept.
    pub auth: Option<(TestApp, queue_auth::AuthConfig)>,
    _audit_keys: tempfile::TempDir,
}

pub async fn spawn_audit(keys: &TestKeys, dir: &std::path::Path) -> TestApp {
    spawn_audit_with(keys, dir, |_| {}).await
}

pub async fn spawn_audit_with(
    keys: &TestKeys,
    dir: &std::path::Path,
    adjust: impl FnOnce(&mut AuditConfig),
) -> TestApp {
    let (local, _) = KeysConfig::local_in(dir, false).expect("audit keys");
    let db = TestDb::new(&[queue_audit::MIGRATIONS]).await;
    TestApp::spawn_in(
        "audit",
        db,
        keys.clone(),
        move |base| {
            let mut config = AuditConfig::new(base, local);
            adjust(&mut config);
            queue_audit::run(config, Signals::Ignore)
        },
        |_| {},
    )
    .await
}

pub async fn spawn_rbac(
    keys: &TestKeys,
    db: &TestDb,
    audit: &TestApp,
    adjust: impl FnOnce(&mut RbacConfig),
) -> TestApp {
    let audit_url = url::Url::parse(&audit.url("/")).expect("url");
    TestApp::spawn_in(
        "rbac",
        db.clone(),
        keys.clone(),
        move |base| {
            let mut config = RbacConfig::new(base, audit_url);
            config.audit.timeout_ms = 1_000;
            config.expiry.interval_secs = 1;
            adjust(&mut config);
            queue_rbac::run(config, Signals::Ignore)
        },
        |_| {},
    )
    .await
}

impl World {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut RbacConfig)) -> Self {
        let keys = TestKeys::new();
        let audit_keys = tempfile::tempdir().expect("tmp");
        let audit = spawn_audit(&keys, audit_keys.path()).await;
        let rbac_db = TestDb::new(&[queue_rbac::MIGRATIONS]).await;
        let rbac = spawn_rbac(&keys, &rbac_db, &audit, adjust).await;
        Self { keys, audit, rbac, rbac_db, auth: None, _audit_keys: audit_keys }
    }

    /// The whole cast: auth (sessions), audit reading as users through rbac, rbac accepting
    /// sessions. rbac listens on a port chosen first, so audit can be told where it is.
    pub async fn start_with_users() -> Self {
        let keys = TestKeys::new();
        let dir = tempfile::tempdir().expect("tmp");
        let pepper = dir.path().join("pepper.key");
        queue_auth::config::write_pepper(&pepper, true).expect("pepper");
        let mail = dir.path().join("mail");
        let captured = std::sync::Arc::new(std::sync::Mutex::new(None));
        let cap = captured.clone();
        let auth = TestApp::spawn_in(
            "auth",
            TestDb::new(&[queue_auth::MIGRATIONS]).await,
            keys.clone(),
            move |base| {
                let mut config = queue_auth::AuthConfig::new(base, pepper);
                config.mailer.dev_dir = mail;
                *cap.lock().expect("lock") = Some(config.clone());
                queue_auth::run(config, Signals::Ignore)
            },
            |_| {},
        )
        .await;
        let auth_config = captured.lock().expect("lock").take().expect("config");
        let rbac_port = queue_testkit::process::free_port();
        let auth_url = url::Url::parse(&auth.url("/")).expect("url");
        let rbac_url = url::Url::parse(&format!("http://127.0.0.1:{rbac_port}/")).expect("url");
        let au = auth_url.clone();
        let audit = spawn_audit_with(&keys, dir.path(), move |c| {
            c.users = Some(queue_audit::config::UsersConfig { auth_url: au, rbac_url, session_cache_secs: 0 });
        })
        .await;
        let rbac_db = TestDb::new(&[queue_rbac::MIGRATIONS]).await;
        let rbac = spawn_rbac(&keys, &rbac_db, &audit, move |c| {
            c.server.listen = format!("127.0.0.1:{rbac_port}").parse().expect("addr");
            c.auth = Some(queue_rbac::config::AuthLink { url: auth_url, session_cache_secs: 0 });
        })
        .await;
        Self { keys, audit, rbac, rbac_db, auth: Some((auth, auth_config)), _audit_keys: dir }
    }

    /// A signed-in user of `tenant` (a full session made by the auth service's own code in its
    /// database; auth validates it over HTTP like any other): (user id, session token).
    pub async fn user(&self, tenant: &str, email: &str) -> (String, String) {
        use queue_auth::domain::{RequestInfo, sessions, users};
        let (auth, config) = self.auth.as_ref().expect("started with users");
        let mut conn = auth.db.conn().await;
        let now = chrono::Utc::now();
        let info = RequestInfo { ip: None, user_agent: None, trace_id: None };
        let email = users::EmailAddress::parse(email).expect("email");
        let new = users::NewUser { tenant_id: tenant, email: &email, display_name: None, verified_at: Some(now) };
        let (user, _) =
            users::create_or_get(&mut conn, now, &info, queue_audit_client::Party::new("service", "test"), new)
                .await
                .expect("user");
        let minted = sessions::create(&mut conn, &config.sessions, now, &info, user.id, tenant, sessions::Kind::Full)
            .await
            .expect("session");
        (user.id.to_string(), minted.token.to_string())
    }

    /// A second replica of rbac on the same database.
    pub async fn replica(&self) -> TestApp {
        spawn_rbac(&self.keys, &self.rbac_db, &self.audit, |_| {}).await
    }

    /// Raptor's token: grants anything, checks anyone, reads everything.
    pub fn admin(&self) -> String {
        self.keys.token("raptor", "rbac", &["rbac:grant", "rbac:check", "rbac:read"])
    }

    pub async fn grant(&self, principal: &str, role: &str, scope: Value, expires_at: Option<&str>) -> Value {
        let mut body = json!({"principal_id": principal, "role": role, "scope": scope, "reason": "test"});
        if let Some(e) = expires_at {
            body["expires_at"] = json!(e);
        }
        let (s, v) = self.rbac.post_json_as("/api/v1/rbac/grants", &self.admin(), &body).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    pub async fn revoke_on(&self, app: &TestApp, id: &str) -> (StatusCode, Value) {
        let r = app
            .client
            .delete(app.url(&format!("/api/v1/rbac/grants/{id}")))
            .bearer_auth(self.admin())
            .json(&json!({"reason": "test revoke"}))
            .send()
            .await
            .expect("request");
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn check_on(
        &self,
        app: &TestApp,
        principal: &str,
        permission: &str,
        tenant: &str,
        ticket: Option<&str>,
    ) -> Value {
        let mut resource = json!({"tenant_id": tenant});
        if let Some(t) = ticket {
            resource["ticket_id"] = json!(t);
        }
        let body = json!({"principal_id": principal, "permission": permission, "resource": resource});
        let (s, v) = app.post_json_as("/api/v1/rbac/check", &self.admin(), &body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    pub async fn allowed(&self, principal: &str, permission: &str, tenant: &str, ticket: Option<&str>) -> bool {
        self.check_on(&self.rbac, principal, permission, tenant, ticket).await["allowed"].as_bool().expect("allowed")
    }

    /// The audit events of a tenant (as the audit service lists them).
    pub async fn audit_events(&self, tenant: &str) -> Vec<Value> {
        let token = self.keys.token("raptor", "audit", &["audit:read"]);
        let (s, v) =
            self.audit.get_json_as(&format!("/api/v1/audit/events?tenant_id={tenant}&limit=1000"), &token).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["events"].as_array().cloned().unwrap_or_default()
    }

    pub async fn sql(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.rbac_db.url).await.expect("connect")
    }

    pub async fn exec(&self, sql: &str) {
        self.sql().await.batch_execute(sql).await.expect("sql");
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let n: N = diesel::sql_query(sql).get_result(&mut self.sql().await).await.expect("scalar");
        n.n
    }
}

pub fn tenant(t: &str) -> Value {
    json!({"type": "tenant", "tenant_id": t})
}

pub fn ticket(t: &str, k: &str) -> Value {
    json!({"type": "ticket", "tenant_id": t, "ticket_id": k})
}

pub fn global() -> Value {
    json!({"type": "global"})
}
