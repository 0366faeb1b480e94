//! An auth service under test: its own database, a pepper, a dev mailer directory, a manual
//! clock, and client helpers that drive the HTTP API (passkeys through a software
//! authenticator, as a browser would).

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use queue_auth::config::AuthConfig;
use queue_auth::domain::clock::ManualClock;
use queue_platform::Signals;
use queue_testkit::TestApp;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

pub const ORIGIN: &str = "http://localhost:8080";

pub struct Auth {
    pub app: TestApp,
    pub clock: Arc<ManualClock>,
    pub _dir: tempfile::TempDir,
    pub config: AuthConfig,
}

pub fn start_time() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z").expect("time").with_timezone(&chrono::Utc)
}

impl Auth {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut AuthConfig)) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let pepper = dir.path().join("pepper.key");
        queue_auth::config::write_pepper(&pepper, true).expect("pepper");
        let mail_dir = dir.path().join("mail");
        let clock = Arc::new(ManualClock::new(start_time()));
        let c2 = clock.clone();
        let captured = Arc::new(std::sync::Mutex::new(None));
        let cap2 = captured.clone();
        let app = TestApp::spawn("auth", queue_auth::MIGRATIONS, move |base| {
            let mut config = AuthConfig::new(base, pepper);
            config.mailer.dev_dir = mail_dir;
            config.flags.auth_backup_codes = true;
            adjust(&mut config);
            *cap2.lock().expect("lock") = Some(config.clone());
            queue_auth::run_with_clock(config, Signals::Ignore, c2)
        })
        .await;
        let config = captured.lock().expect("lock").take().expect("config");
        Self { app, clock, _dir: dir, config }
    }

    pub fn clock_now(&self) -> chrono::DateTime<chrono::Utc> {
        use queue_auth::domain::clock::Clock;
        self.clock.now()
    }

    pub fn advance(&self, secs: i64) {
        self.clock.advance(chrono::Duration::seconds(secs));
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut r = self.app.client.post(self.app.url(path)).json(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.expect("request");
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.app.get_json_as(path, token).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let r = self.app.client.delete(self.app.url(path)).bearer_auth(token).send().await.expect("request");
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// The dev-mailer messages to `email`, oldest first.
    pub fn mails_to(&self, email: &str) -> Vec<String> {
        let mut found = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&self.config.mailer.dev_dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "txt")
                    && let Ok(text) = std::fs::read_to_string(&p)
                    && text.contains(&format!("To: {email}\n"))
                {
                    let t = e.metadata().and_then(|m| m.modified()).expect("mtime");
                    found.push((t, text));
                }
            }
        }
        found.sort_by_key(|(t, _)| *t);
        found.into_iter().map(|(_, t)| t).collect()
    }

    /// The `n`th message (from 0) to `email`, waiting up to 10 s for the mail relay.
    pub async fn mail_to(&self, email: &str, n: usize) -> String {
        self.mail_about(email, "", n).await
    }

    /// The `n`th message (from 0) to `email` whose subject contains `subject`, waiting up to
    /// 10 s for the mail relay.
    pub async fn mail_about(&self, email: &str, subject: &str, n: usize) -> String {
        for _ in 0..200 {
            let mut all: Vec<String> = self
                .mails_to(email)
                .into_iter()
                .filter(|m| m.lines().any(|l| l.starts_with("Subject: ") && l.contains(subject)))
                .collect();
            if all.len() > n {
                return all.swap_remove(n);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no mail {n} to {email} about {subject:?} within 10 s");
    }

    /// Sends a verification and reads the code from the message.
    pub async fn request_code(&self, email: &str) -> String {
        self.request_code_n(email, 0).await
    }

    /// Sends the `n`th verification to `email` (from 0) and reads its code.
    pub async fn request_code_n(&self, email: &str, n: usize) -> String {
        let (s, v) = self.post("/api/v1/auth/email/verification", None, &json!({"email": email})).await;
        assert_eq!(s, 202, "{v}");
        let text = self.mail_about(email, "verification code", n).await;
        code_in(&text)
    }

    /// Verifies `email` and returns the enrollment session token.
    pub async fn enroll(&self, email: &str) -> String {
        let code = self.request_code(email).await;
        let (s, v) =
            self.post("/api/v1/auth/email/verification/confirm", None, &json!({"email": email, "code": code})).await;
        assert_eq!(s, 200, "{v}");
        v["session"]["token"].as_str().expect("token").to_string()
    }

    /// Registers a passkey with `token`'s session; returns the credential id.
    pub async fn add_passkey(&self, token: &str, key: &mut SoftPasskey, name: &str) -> String {
        let (s, v) = self.post("/api/v1/auth/webauthn/register/start", Some(token), &json!({})).await;
        assert_eq!(s, 200, "{v}");
        let ccr: CreationChallengeResponse = serde_json::from_value(v["options"].clone()).expect("options");
        let cred = key.do_registration(origin(), ccr).expect("authenticator registers");
        let (s, v) = self
            .post(
                "/api/v1/auth/webauthn/register/finish",
                Some(token),
                &json!({"ceremony_id": v["ceremony_id"], "credential": cred, "name": name}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v["id"].as_str().expect("id").to_string()
    }

    /// Starts a login by email and has the authenticator answer; returns (ceremony_id, assertion).
    pub async fn assertion(&self, email: Option<&str>, key: &mut SoftPasskey) -> (Value, Value) {
        let (s, v) = self.post("/api/v1/auth/webauthn/login/start", None, &json!({"email": email})).await;
        assert_eq!(s, 200, "{v}");
        let rcr: RequestChallengeResponse = serde_json::from_value(v["options"].clone()).expect("options");
        let cred = key.do_authentication(origin(), rcr).expect("authenticator answers");
        (v["ceremony_id"].clone(), serde_json::to_value(cred).expect("json"))
    }

    /// Logs in with the passkey; returns the full session token.
    pub async fn login(&self, email: &str, key: &mut SoftPasskey) -> String {
        let (ceremony, cred) = self.assertion(Some(email), key).await;
        let (s, v) = self
            .post("/api/v1/auth/webauthn/login/finish", None, &json!({"ceremony_id": ceremony, "credential": cred}))
            .await;
        assert_eq!(s, 200, "{v}");
        v["session"]["token"].as_str().expect("token").to_string()
    }

    /// A user with one passkey and a full session.
    pub async fn signed_in(&self, email: &str) -> (String, SoftPasskey) {
        let enrollment = self.enroll(email).await;
        let mut key = SoftPasskey::new(true);
        self.add_passkey(&enrollment, &mut key, "laptop").await;
        let token = self.login(email, &mut key).await;
        (token, key)
    }

    /// The superuser connection to this test's database.
    pub async fn sql(&self) -> AsyncPgConnection {
        self.app.db.conn().await
    }

    pub async fn exec(&self, sql: &str) {
        self.sql().await.batch_execute(sql).await.expect("sql");
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut c = self.sql().await;
        diesel::sql_query(sql).get_result::<N>(&mut c).await.expect("scalar").n
    }

    pub async fn validate(&self, token: &str) -> Value {
        let svc = self.app.token("proxy", &["sessions:validate"]);
        let (s, v) = self.post("/internal/v1/sessions/validate", Some(&svc), &json!({"token": token})).await;
        assert_eq!(s, 200, "{v}");
        v
    }
}

pub fn origin() -> Url {
    Url::parse(ORIGIN).expect("origin")
}

pub fn code_in(mail: &str) -> String {
    let at = mail.find("code is ").expect("code in mail") + "code is ".len();
    mail[at..at + 8].to_string()
}

pub fn link_token_in(mail: &str) -> String {
    let at = mail.find("token=").expect("link in mail") + "token=".len();
    mail[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect()
}

#[allow(dead_code)]
pub async fn connect(url: &str) -> AsyncPgConnection {
    AsyncPgConnection::establish(url).await.expect("connect")
}
