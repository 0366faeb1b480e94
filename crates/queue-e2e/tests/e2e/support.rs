//! The stack under test: the real binaries of audit, rbac, auth, proxy and the legacy stand-in as
//! processes, on one database of the test cluster (each service owns its schema in it),
//! with keys made as `queuectl keys init` makes them and config files in a temp dir.
//!
//! **Where the binaries come from.** `env!("CARGO_BIN_EXE_…")` only names a crate's own
//! binaries, so the tests take the service binaries from the directory cargo built this test
//! into: `current_exe()` is `<target>/<profile>/deps/e2e-<hash>`, the binaries are in
//! `<target>/<profile>/` (`QUEUE_E2E_BIN_DIR` overrides). `cargo test --workspace` (`make test`)
//! builds every binary before any test runs; `cargo test -p queue-e2e` alone does not, so a
//! binary that is missing, or older than one of the source files cargo's dep-info lists for it
//! (`<binary>.d`), fails the test with the command that builds it instead of testing stale code.

use queue_testkit::otlp::OtlpSink;
use queue_testkit::process::{ServiceProcess, command, free_port};
use queue_testkit::{IDENTITIES, TestDb, TestKeys};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime};
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse, Url};

/// The WebAuthn origin the auth config allows (the proxy's public address under `make run`).
pub const ORIGIN: &str = "http://localhost:8080";

/// The binaries the tests run.
const BINARIES: [&str; 5] = ["queue-audit", "queue-rbac", "queue-auth", "queue-proxy", "legacy-standin"];

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("QUEUE_E2E_BIN_DIR")
        && !dir.is_empty()
    {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent().and_then(Path::parent).expect("<target>/<profile>/deps/<test>").to_path_buf()
}

/// Whether a source file cargo lists for `binary` (its dep-info, `<binary>.d`, holds the very files
/// cargo's own freshness check looks at) is newer than the binary: then the binary is stale.
fn stale_because(dir: &Path, binary: &str, built: SystemTime) -> Option<String> {
    let deps = std::fs::read_to_string(dir.join(format!("{binary}.d"))).ok()?;
    let (_, files) = deps.split_once(": ")?;
    files
        .replace("\\ ", "\u{0}")
        .split_whitespace()
        .map(|f| PathBuf::from(f.replace('\u{0}', " ")))
        .find(|f| std::fs::metadata(f).and_then(|m| m.modified()).is_ok_and(|t| t > built))
        .map(|f| f.display().to_string())
}

/// The path of a service binary, checked to exist and to be newer than its sources.
pub fn bin(name: &str) -> String {
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let dir = bin_dir();
    let checked = CHECKED.get_or_init(|| {
        let build = "cargo build --bins -p queue-audit -p queue-rbac -p queue-auth -p queue-proxy";
        for b in BINARIES {
            let p = dir.join(b);
            let built = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .map_err(|_| format!("{} is missing; build the services first: `{build}`", p.display()))?;
            if let Some(source) = stale_because(&dir, b, built) {
                return Err(format!("{} is older than {source}; rebuild the services first: `{build}`", p.display()));
            }
        }
        Ok(())
    });
    if let Err(e) = checked {
        panic!("{e}");
    }
    dir.join(name).display().to_string()
}

/// The legacy stand-in (Raptor), killed on drop.
pub struct Legacy {
    child: Child,
    pub url: String,
}

impl Legacy {
    pub async fn start() -> Self {
        let listen = format!("127.0.0.1:{}", free_port());
        let child = command(&bin("legacy-standin"), &[])
            .args(["--listen", &listen, "--name", "raptor"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn legacy-standin");
        let mut legacy = Self { child, url: format!("http://{listen}") };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while client.get(format!("{}/login", legacy.url)).send().await.is_err() {
            assert!(legacy.child.try_wait().expect("wait").is_none(), "legacy-standin exited");
            assert!(Instant::now() < deadline, "legacy-standin not answering within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        legacy
    }
}

impl Drop for Legacy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy)]
pub struct Options {
    pub replicas: usize,
    /// Export spans to an OTLP collector stand-in.
    pub otlp: bool,
    /// More lines for auth's `[limits]` table.
    pub auth_limits: &'static str,
    /// The proxy's `forwarding.trusted_proxies` (a TOML array). Default: none, as shipped in
    /// deploy/local/proxy.toml.
    pub proxy_trusted_proxies: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Self { replicas: 1, otlp: false, auth_limits: "", proxy_trusted_proxies: "[]" }
    }
}

/// auth's `auth.trusted_proxies` as shipped in deploy/local/auth.toml: the proxy on loopback.
pub const LOCAL_TRUSTED_PROXIES: &str = r#"["127.0.0.0/8", "::1"]"#;

/// Everything a test talks to. Dropping it stops every process (and then drops the database).
pub struct Stack {
    pub proxy: ServiceProcess,
    /// The proxy's admin listener.
    pub admin: String,
    pub auth: Vec<ServiceProcess>,
    pub rbac: Vec<ServiceProcess>,
    pub audit: ServiceProcess,
    _legacy: Legacy,
    pub otlp: Option<OtlpSink>,
    pub keys: TestKeys,
    pub client: reqwest::Client,
    pub mail_dir: PathBuf,
    /// The proxy as a browser reaches it, `http://localhost:<port>` (a WebAuthn origin of auth:
    /// the relying party is `localhost`, so the browser must not use 127.0.0.1).
    pub browser_origin: String,
    _db: TestDb,
    _dir: tempfile::TempDir,
}

fn toml_str(p: &Path) -> String {
    let s = p.display().to_string();
    assert!(!s.contains(['"', '\\']), "a plain path: {s}");
    format!("\"{s}\"")
}

/// The tables every service has: server, database, telemetry and tokens (trusting every other
/// identity by its public key file, as `queuectl keys init` lays them out).
fn common(issuer: &str, db: Option<&str>, keys: &TestKeys, otlp: Option<&OtlpSink>) -> String {
    let mut s = String::from("[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n");
    if let Some(url) = db {
        s += &format!("[database]\nurl = \"{url}\"\npool_size = 4\n\n");
    }
    s += "[telemetry]\nformat = \"json\"\nlevel = \"info\"\n";
    if let Some(o) = otlp {
        s += &format!("otlp_endpoint = \"{}\"\n", o.endpoint_for(issuer));
    }
    s += &format!("\n[tokens]\nissuer = \"{issuer}\"\nsigning_key = {}\n", toml_str(&keys.private(issuer)));
    for other in IDENTITIES.iter().filter(|i| **i != issuer) {
        s += &format!("\n[[tokens.trusted]]\nissuer = \"{other}\"\npublic_key = {}\n", toml_str(&keys.public(other)));
    }
    s
}

impl Stack {
    pub async fn start(opts: Options) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        // One database holding each service's schema, cloned from the test cluster's migrated
        // template (each service still runs its migrations at start-up and finds none pending).
        // Not an empty one: migrations create cluster-wide roles, and first migrations of two
        // databases at once (tests run in parallel) race on CREATE ROLE.
        let db = TestDb::new(&[queue_audit::MIGRATIONS, queue_rbac::MIGRATIONS, queue_auth::MIGRATIONS]).await;
        // `queuectl keys init`: Ed25519 keys per identity, audit's local keys, auth's pepper.
        let keys = TestKeys::new();
        let (audit_keys, _) = queue_audit::config::KeysConfig::local_in(keys.dir(), false).expect("audit keys");
        let pepper = keys.dir().join("auth-pepper.key");
        queue_auth::config::write_pepper(&pepper, false).expect("pepper");
        let otlp = opts.otlp.then(OtlpSink::start);
        let mail_dir = dir.path().join("mail");
        // The proxy's port is chosen first: auth must list the browser's origin.
        let proxy_port = free_port();
        let browser_origin = format!("http://localhost:{proxy_port}");
        let write = |name: &str, text: String| {
            let p = dir.path().join(format!("{name}.toml"));
            std::fs::write(&p, text).expect("write config");
            p.display().to_string()
        };
        let env = |config: &str| {
            let mut env = vec![("QUEUE_CONFIG".to_string(), config.to_string())];
            if opts.otlp {
                // Export every 100 ms rather than every 5 s.
                env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()));
            }
            env
        };
        let start = |config: String, binary: &'static str| {
            let env = env(&config);
            async move {
                let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                ServiceProcess::start(&bin(binary), &refs).await
            }
        };

        let legacy = Legacy::start().await;
        let audit_cfg = format!(
            "{}\n[keys]\nprovider = \"local\"\nlocal_master_key = {}\nlocal_checkpoint_key = {}\n",
            common("audit", Some(&db.url), &keys, otlp.as_ref()),
            toml_str(&audit_keys.local_master_key),
            toml_str(&audit_keys.local_checkpoint_key),
        );
        let audit = start(write("audit", audit_cfg), "queue-audit").await;

        let rbac_cfg = format!(
            "{}\n[audit]\nurl = \"{}\"\ntimeout_ms = 5000\n",
            common("rbac", Some(&db.url), &keys, otlp.as_ref()),
            audit.base_url
        );
        let rbac_cfg = write("rbac", rbac_cfg);
        let auth_cfg = format!(
            r#"{common}
[auth]
default_tenant = "default"
pepper_file = {pepper}
provisioners = ["raptor"]
validators = ["proxy", "rbac", "audit", "raptor"]
trusted_proxies = {trusted_proxies}

[webauthn]
rp_id = "localhost"
rp_name = "Queue (e2e)"
origins = ["{ORIGIN}", "{browser_origin}"]

[email]
link_base_url = "{ORIGIN}/verify-email"

[mailer]
kind = "dev"
dev_dir = {mail}

[limits]
lockout_after_failures = 4
delay_after_failures = 100
{auth_limits}

[audit]
url = "{audit}"
poll_interval_ms = 200

[flags]
auth_backup_codes = true
"#,
            common = common("auth", Some(&db.url), &keys, otlp.as_ref()),
            pepper = toml_str(&pepper),
            mail = toml_str(&mail_dir),
            audit = audit.base_url,
            trusted_proxies = LOCAL_TRUSTED_PROXIES,
            auth_limits = opts.auth_limits,
        );
        let auth_cfg = write("auth", auth_cfg);
        let mut rbac = Vec::new();
        let mut auth = Vec::new();
        for _ in 0..opts.replicas {
            let (r, a) = tokio::join!(start(rbac_cfg.clone(), "queue-rbac"), start(auth_cfg.clone(), "queue-auth"));
            rbac.push(r);
            auth.push(a);
        }

        // The route table: backup codes move to Queue in phase 2 (as in deploy/local/routes.toml);
        // the rest of auth and rbac are pinned to Queue so the tests can sign in and grant through
        // the proxy. One upstream per service: the table has no load balancing, so the replica
        // tests reach the second replica directly.
        let table = dir.path().join("routes.toml");
        std::fs::write(
            &table,
            format!(
                r#"label = "e2e"
phase = 1
default_legacy = "raptor"

[legacy.raptor]
url = "{legacy}"

[services.auth]
url = "{auth}"

[services.rbac]
url = "{rbac}"

[[routes]]
name = "backup-codes"
prefix = "/api/v1/auth/backup-codes"
queue = {{ service = "auth", path = "/api/v1/auth/backup-codes" }}
cutover_phase = 2

[[routes]]
name = "auth"
prefix = "/api/v1/auth"
queue = {{ service = "auth" }}
cutover_phase = 2
pinned = "queue"

[[routes]]
name = "auth-pages"
prefix = "/auth"
methods = ["GET"]
queue = {{ service = "auth" }}
cutover_phase = 2
pinned = "queue"

[[routes]]
name = "rbac"
prefix = "/api/v1/rbac"
queue = {{ service = "rbac" }}
cutover_phase = 2
pinned = "queue"
"#,
                legacy = legacy.url,
                auth = auth[0].base_url,
                rbac = rbac[0].base_url,
            ),
        )
        .expect("route table");
        let admin_addr = format!("127.0.0.1:{}", free_port());
        let proxy_cfg = format!(
            "{}\n[admin]\nlisten = \"{admin_addr}\"\n\n[routing]\ntable = {}\n\n[forwarding]\ntrusted_proxies = {}\n\n[audit]\nurl = \"{}\"\n",
            common("proxy", None, &keys, otlp.as_ref()),
            toml_str(&table),
            opts.proxy_trusted_proxies,
            audit.base_url
        );
        let proxy_env = env(&write("proxy", proxy_cfg));
        let refs: Vec<(&str, &str)> = proxy_env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let proxy = ServiceProcess::start_on(&bin("queue-proxy"), &refs, proxy_port).await;

        Self {
            proxy,
            admin: format!("http://{admin_addr}"),
            auth,
            rbac,
            audit,
            _legacy: legacy,
            otlp,
            keys,
            client: reqwest::Client::new(),
            mail_dir,
            browser_origin,
            _db: db,
            _dir: dir,
        }
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = format!("--- proxy\n{}\n--- audit\n{}\n", self.proxy.stderr(), self.audit.stderr());
        for (i, p) in self.auth.iter().enumerate() {
            s += &format!("--- auth[{i}]\n{}\n", p.stderr());
        }
        for (i, p) in self.rbac.iter().enumerate() {
            s += &format!("--- rbac[{i}]\n{}\n", p.stderr());
        }
        s
    }

    /// Raptor's token for rbac: grants, checks, reads.
    pub fn rbac_admin(&self) -> String {
        self.keys.token("raptor", "rbac", &["rbac:grant", "rbac:check", "rbac:read"])
    }

    /// A call with an optional bearer token and JSON body; (status, JSON body or Null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.client.request(method, url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        let r = r.send().await.expect("request");
        let s = r.status();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, base: &str, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, format!("{base}{path}"), token, Some(body)).await
    }

    pub async fn get(&self, base: &str, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, format!("{base}{path}"), token, None).await
    }

    /// The `n`th dev-mailer message (from 0) to `email`, waiting for the mail relay.
    pub async fn mail_to(&self, email: &str, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut found = Vec::new();
            if let Ok(entries) = std::fs::read_dir(&self.mail_dir) {
                for e in entries.flatten() {
                    if let Ok(text) = std::fs::read_to_string(e.path())
                        && text.contains(&format!("To: {email}\n"))
                    {
                        found.push((e.metadata().and_then(|m| m.modified()).expect("mtime"), text));
                    }
                }
            }
            if found.len() > n {
                found.sort_by_key(|(t, _)| *t);
                return found.swap_remove(n).1;
            }
            assert!(Instant::now() < deadline, "no mail {n} to {email} within 20 s\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Verifies `email` through `base` (an auth replica or the proxy); the enrollment session.
    pub async fn enroll(&self, base: &str, email: &str) -> String {
        let (s, v) = self.post(base, "/api/v1/auth/email/verification", None, &json!({"email": email})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let mail = self.mail_to(email, 0).await;
        let at = mail.find("code is ").expect("a code in the mail") + "code is ".len();
        let code = &mail[at..at + 8];
        let body = json!({"email": email, "code": code});
        let (s, v) = self.post(base, "/api/v1/auth/email/verification/confirm", None, &body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["session"]["token"].as_str().expect("token").to_string()
    }

    /// Registers a passkey through `base` with `session`.
    pub async fn add_passkey(&self, base: &str, session: &str, key: &mut SoftPasskey) {
        let (s, v) = self.post(base, "/api/v1/auth/webauthn/register/start", Some(session), &json!({})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let ccr: CreationChallengeResponse = serde_json::from_value(v["options"].clone()).expect("options");
        let cred = key.do_registration(origin(), ccr).expect("the authenticator registers");
        let body = json!({"ceremony_id": v["ceremony_id"], "credential": cred, "name": "e2e"});
        let (s, v) = self.post(base, "/api/v1/auth/webauthn/register/finish", Some(session), &body).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    /// Starts a passkey login on `start_on` and finishes it on `finish_on`; the full session.
    pub async fn login(&self, start_on: &str, finish_on: &str, email: &str, key: &mut SoftPasskey) -> String {
        let (s, v) = self.post(start_on, "/api/v1/auth/webauthn/login/start", None, &json!({"email": email})).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let rcr: RequestChallengeResponse = serde_json::from_value(v["options"].clone()).expect("options");
        let cred = key.do_authentication(origin(), rcr).expect("the authenticator answers");
        let body = json!({"ceremony_id": v["ceremony_id"], "credential": cred});
        let (s, v) = self.post(finish_on, "/api/v1/auth/webauthn/login/finish", None, &body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["session"]["token"].as_str().expect("token").to_string()
    }

    /// A verified user with a passkey, signed in through `base`: (session, passkey).
    pub async fn signed_in(&self, base: &str, email: &str) -> (String, SoftPasskey) {
        let enrollment = self.enroll(base, email).await;
        let mut key = SoftPasskey::new(true);
        self.add_passkey(base, &enrollment, &mut key).await;
        let session = self.login(base, base, email, &mut key).await;
        (session, key)
    }

    /// The audit events of `tenant`, read with a service token (Raptor's, scope audit:read).
    pub async fn audit_events(&self, tenant: &str) -> Vec<Value> {
        let token = self.keys.token("raptor", "audit", &["audit:read"]);
        let path = format!("/api/v1/audit/events?tenant_id={tenant}&limit=1000");
        let (s, v) = self.get(&self.audit.base_url, &path, Some(&token)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v["events"].as_array().cloned().unwrap_or_default()
    }

    /// The audit service's verification of `tenant`'s chain.
    pub async fn verify_chain(&self, tenant: &str) -> Value {
        let token = self.keys.token("raptor", "audit", &["audit:read"]);
        let (s, v) =
            self.get(&self.audit.base_url, &format!("/api/v1/audit/verify?tenant_id={tenant}"), Some(&token)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    /// A grant through `base` (the proxy or an rbac replica), with an optional traceparent.
    pub async fn grant(
        &self,
        base: &str,
        principal: &str,
        tenant: &str,
        traceparent: Option<&str>,
    ) -> reqwest::Response {
        let body = json!({"principal_id": principal, "role": "agent", "scope": {"type": "tenant", "tenant_id": tenant},
                          "reason": "e2e"});
        let mut r = self.client.post(format!("{base}/api/v1/rbac/grants")).bearer_auth(self.rbac_admin()).json(&body);
        if let Some(tp) = traceparent {
            r = r.header("traceparent", tp);
        }
        r.send().await.expect("grant")
    }

    /// Whether `principal` may write tickets of `tenant`, asked of `rbac`.
    pub async fn may_write(&self, rbac: &str, principal: &str, tenant: &str) -> Value {
        let body = json!({"principal_id": principal, "permission": "ticket.write", "resource": {"tenant_id": tenant}});
        let (s, v) = self.post(rbac, "/api/v1/rbac/check", Some(&self.rbac_admin()), &body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }

    /// The proxy's admin API, with an operator's token (as `queuectl proxy …` mints it).
    pub async fn admin_post(&self, path: &str, body: &Value) -> Value {
        let token = self.keys.token("operator", "proxy", &["proxy:admin"]);
        let (s, v) = self.post(&self.admin, path, Some(&token), body).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
        v
    }
}

pub fn origin() -> Url {
    Url::parse(ORIGIN).expect("origin")
}
