//! The stack under test: the real binaries of audit, rbac, auth, proxy and the legacy side as
//! processes, on one database of the test cluster (each service owns its schema in it),
//! with keys made as `queuectl keys init` makes them and config files in a temp dir. The legacy
//! side is the echo stand-in (`legacy-standin`) or, with `Options::raptor`, the real Raptor
//! (`legacy/raptor`, Flask) on its own empty database.
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
const BINARIES: [&str; 6] = ["queue-audit", "queue-rbac", "queue-auth", "queue-proxy", "legacy-standin", "queuectl"];

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
        let build = "cargo build --bins -p queue-audit -p queue-rbac -p queue-auth -p queue-proxy -p queuectl";
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

/// The repository's root (the tests are built from `crates/queue-e2e`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root")
}

/// The legacy stand-in (an echo server answering as Raptor), killed on drop.
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

/// How the services trust tokens of issuer `raptor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// `Jwks` is for the tests of Raptor's key rotation (issue 18, item 3), which land with Raptor's JWKS.
#[allow(dead_code)]
pub enum RaptorTrust {
    /// By the static public key `queuectl keys init` wrote (`public_key = ".../raptor.pub.pem"`).
    PublicKey,
    /// By Raptor's JWKS, `jwks_url = "http://127.0.0.1:<raptor port>/.well-known/jwks.json"`, with
    /// `tokens.jwks_refetch_min_secs` set to this (how soon an unknown `kid` may refetch).
    Jwks { refetch_min_secs: u64 },
}

/// The real Raptor as the legacy upstream (see [`Raptor`]).
#[derive(Clone, Copy, Debug)]
pub struct RaptorOptions {
    pub trust: RaptorTrust,
    /// `RAPTOR_KEY_PUBLISH_LEAD_SECS`: how long a new key is published before Raptor signs with it.
    pub key_publish_lead_secs: u64,
    /// `RAPTOR_KEY_CHECK_SECS`: how often Raptor looks at its key file.
    pub key_check_secs: u64,
    /// Issue 19, item 3: auth and rbac write back to Raptor (`[legacy] writeback_url`), Raptor
    /// serves its write-back API to them (`RAPTOR_WRITEBACK_ISSUERS`), and rbac accepts users'
    /// sessions (validated at auth) so that people grant through the proxy as themselves.
    pub write_back: bool,
}

impl Default for RaptorOptions {
    /// Raptor's own defaults, trusted by the static key (as `make run` does today).
    fn default() -> Self {
        Self { trust: RaptorTrust::PublicKey, key_publish_lead_secs: 300, key_check_secs: 2, write_back: false }
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
    /// The real Raptor instead of the echo stand-in as the legacy upstream. Default: the echo.
    pub raptor: Option<RaptorOptions>,
    /// The proxy runs on the shipped route table (deploy/local/routes.toml, phase 1, with this
    /// stack's addresses: see [`shipped_table`]) instead of the tests' own (auth and rbac pinned
    /// to Queue).
    pub shipped_routes: bool,
    /// auth's `default_tenant`: the tenant of the pages' calls, which name none. Default
    /// "default" (as deploy/local/auth.toml).
    pub auth_default_tenant: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            replicas: 1,
            otlp: false,
            auth_limits: "",
            proxy_trusted_proxies: "[]",
            raptor: None,
            shipped_routes: false,
            auth_default_tenant: "default",
        }
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
    /// The echo stand-in, when the stack runs without Raptor.
    _legacy: Option<Legacy>,
    /// The real Raptor, with `Options::raptor`.
    pub raptor: Option<Raptor>,
    pub otlp: Option<OtlpSink>,
    pub keys: TestKeys,
    pub client: reqwest::Client,
    pub mail_dir: PathBuf,
    /// The proxy as a browser reaches it, `http://localhost:<port>` (a WebAuthn origin of auth:
    /// the relying party is `localhost`, so the browser must not use 127.0.0.1).
    pub browser_origin: String,
    db: TestDb,
    _dir: tempfile::TempDir,
}

fn toml_str(p: &Path) -> String {
    let s = p.display().to_string();
    assert!(!s.contains(['"', '\\']), "a plain path: {s}");
    format!("\"{s}\"")
}

/// The tables every service has: server, database, telemetry and tokens (trusting every other
/// identity by its public key file, as `queuectl keys init` lays them out, or Raptor by its
/// JWKS at `raptor_jwks`: (URL, `jwks_refetch_min_secs`)).
fn common(
    issuer: &str,
    db: Option<&str>,
    keys: &TestKeys,
    otlp: Option<&OtlpSink>,
    raptor_jwks: Option<(&str, u64)>,
) -> String {
    let mut s = String::from("[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\n");
    if let Some(url) = db {
        s += &format!("[database]\nurl = \"{url}\"\npool_size = 4\n\n");
    }
    s += "[telemetry]\nformat = \"json\"\nlevel = \"info\"\n";
    if let Some(o) = otlp {
        s += &format!("otlp_endpoint = \"{}\"\n", o.endpoint_for(issuer));
    }
    s += &format!("\n[tokens]\nissuer = \"{issuer}\"\nsigning_key = {}\n", toml_str(&keys.private(issuer)));
    if let Some((_, refetch)) = raptor_jwks {
        s += &format!("jwks_refetch_min_secs = {refetch}\n");
    }
    for other in IDENTITIES.iter().filter(|i| **i != issuer) {
        match raptor_jwks {
            Some((url, _)) if *other == "raptor" => {
                s += &format!("\n[[tokens.trusted]]\nissuer = \"raptor\"\njwks_url = \"{url}\"\n");
            }
            _ => {
                s += &format!(
                    "\n[[tokens.trusted]]\nissuer = \"{other}\"\npublic_key = {}\n",
                    toml_str(&keys.public(other))
                );
            }
        }
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

        // Raptor's port is chosen first too: the services' configs may name its JWKS.
        let raptor_port = free_port();
        let jwks_url = format!("http://127.0.0.1:{raptor_port}/.well-known/jwks.json");
        let raptor_jwks = match opts.raptor.map(|r| r.trust) {
            Some(RaptorTrust::Jwks { refetch_min_secs }) => Some((jwks_url.as_str(), refetch_min_secs)),
            _ => None,
        };
        let common = |issuer: &str, db: Option<&str>| common(issuer, db, &keys, otlp.as_ref(), raptor_jwks);
        // The echo stand-in needs nothing from Queue: it starts first. Raptor calls Queue's
        // services, so it starts after them (below), before the proxy.
        let legacy = if opts.raptor.is_none() { Some(Legacy::start().await) } else { None };
        let audit_cfg = format!(
            "{}\n[keys]\nprovider = \"local\"\nlocal_master_key = {}\nlocal_checkpoint_key = {}\n",
            common("audit", Some(&db.url)),
            toml_str(&audit_keys.local_master_key),
            toml_str(&audit_keys.local_checkpoint_key),
        );
        let audit = start(write("audit", audit_cfg), "queue-audit").await;

        // With `RaptorOptions::write_back`, what people do at Queue is written back to Raptor
        // (issue 19, item 3), and rbac accepts users' sessions (validated at auth, on a port chosen
        // first) so that people grant through the proxy as themselves.
        let auth_port = free_port();
        let write_back_on = opts.raptor.is_some_and(|r| r.write_back);
        let write_back = match write_back_on {
            true => format!(
                "\n[legacy]\nwriteback_url = \"http://127.0.0.1:{raptor_port}\"\nwriteback_poll_interval_ms = 200\n\
                 writeback_backoff_max_ms = 2000\n"
            ),
            false => String::new(),
        };
        let sessions_at_auth = match write_back_on {
            true => format!("\n[auth]\nurl = \"http://127.0.0.1:{auth_port}\"\nsession_cache_secs = 0\n"),
            false => String::new(),
        };
        let rbac_cfg = format!(
            "{}\n[audit]\nurl = \"{}\"\ntimeout_ms = 5000\n{write_back}{sessions_at_auth}",
            common("rbac", Some(&db.url)),
            audit.base_url
        );
        let rbac_cfg = write("rbac", rbac_cfg);
        let auth_cfg = format!(
            r#"{common}
[auth]
default_tenant = "{default_tenant}"
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
{write_back}
"#,
            common = common("auth", Some(&db.url)),
            pepper = toml_str(&pepper),
            mail = toml_str(&mail_dir),
            audit = audit.base_url,
            trusted_proxies = LOCAL_TRUSTED_PROXIES,
            auth_limits = opts.auth_limits,
            default_tenant = opts.auth_default_tenant,
            write_back = write_back,
        );
        let auth_cfg = write("auth", auth_cfg);
        let mut rbac = Vec::new();
        let mut auth = Vec::new();
        for i in 0..opts.replicas {
            let auth_start = async {
                if i == 0 && write_back_on {
                    let env = env(&auth_cfg);
                    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    ServiceProcess::start_on(&bin("queue-auth"), &refs, auth_port).await
                } else {
                    start(auth_cfg.clone(), "queue-auth").await
                }
            };
            let (r, a) = tokio::join!(start(rbac_cfg.clone(), "queue-rbac"), auth_start);
            rbac.push(r);
            auth.push(a);
        }
        let raptor = match opts.raptor {
            Some(o) => {
                let queue = RaptorQueue { audit: &audit.base_url, rbac: &rbac[0].base_url, auth: &auth[0].base_url };
                Some(Raptor::start(raptor_port, &dir.path().join("raptor"), &keys, &browser_origin, queue, o).await)
            }
            None => None,
        };
        let legacy_url = match (&raptor, &legacy) {
            (Some(r), _) => r.url.clone(),
            (None, Some(l)) => l.url.clone(),
            (None, None) => unreachable!("one legacy upstream is started"),
        };

        // The route table: backup codes move to Queue in phase 2 (as in deploy/local/routes.toml);
        // the rest of auth and rbac are pinned to Queue so the tests can sign in and grant through
        // the proxy. One upstream per service: the table has no load balancing, so the replica
        // tests reach the second replica directly.
        let table = dir.path().join("routes.toml");
        let shipped = opts.shipped_routes.then(|| shipped_table(&legacy_url, &auth[0].base_url, &rbac[0].base_url));
        std::fs::write(
            &table,
            shipped.unwrap_or_else(|| {
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
                    legacy = legacy_url,
                    auth = auth[0].base_url,
                    rbac = rbac[0].base_url,
                )
            }),
        )
        .expect("route table");
        let admin_addr = format!("127.0.0.1:{}", free_port());
        let proxy_cfg = format!(
            "{}\n[admin]\nlisten = \"{admin_addr}\"\n\n[routing]\ntable = {}\n\n[forwarding]\ntrusted_proxies = {}\n\n[audit]\nurl = \"{}\"\n\n[identity]\nauth_url = \"{}\"\n",
            common("proxy", None),
            toml_str(&table),
            opts.proxy_trusted_proxies,
            audit.base_url,
            // As deploy/local/proxy.toml: sessions validated at auth (canary cohorts, and Raptor's
            // sessions carried over to Queue's routes).
            auth[0].base_url
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
            raptor,
            otlp,
            keys,
            client: reqwest::Client::new(),
            mail_dir,
            browser_origin,
            db,
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
        if let Some(r) = &self.raptor {
            s += &format!("--- raptor\n{}\n", r.stderr());
        }
        s
    }

    /// The real Raptor of a stack started with `Options::raptor`.
    pub fn raptor(&self) -> &Raptor {
        self.raptor.as_ref().expect("a stack started with Options { raptor: Some(..), .. }")
    }

    /// Queue's database (every service's schema).
    pub fn db(&self) -> &TestDb {
        &self.db
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

    /// A GET of the proxy's admin API, with an operator's token.
    pub async fn admin_get(&self, path: &str) -> Value {
        let token = self.keys.token("operator", "proxy", &["proxy:admin"]);
        let (s, v) = self.get(&self.admin, path, Some(&token)).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
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

/// deploy/local/routes.toml, the table `make run` ships, with this stack's upstreams in place of
/// `make run`'s addresses (Raptor on 8090, auth on 8081, rbac on 8082): every route, phase and
/// path rewrite as shipped.
pub fn shipped_table(legacy: &str, auth: &str, rbac: &str) -> String {
    let path = repo_root().join("deploy/local/routes.toml");
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for (shipped, here) in
        [("http://127.0.0.1:8090", legacy), ("http://127.0.0.1:8081", auth), ("http://127.0.0.1:8082", rbac)]
    {
        assert_eq!(
            text.matches(&format!("url = \"{shipped}\"")).count(),
            1,
            "one upstream at {shipped} in {}",
            path.display()
        );
        text = text.replace(&format!("url = \"{shipped}\""), &format!("url = \"{here}\""));
    }
    text
}

/// Where Raptor calls Queue's services (`RAPTOR_QUEUE_*_URL`).
pub struct RaptorQueue<'a> {
    pub audit: &'a str,
    pub rbac: &'a str,
    pub auth: &'a str,
}

/// The real Raptor, `python -m raptor` from `legacy/raptor` in `var/venv-raptor`, on an empty
/// database of its own (it executes raptor-schema.sql and seeds the demo data on first start),
/// signing its tokens for Queue with a copy of the stack's `raptor` key. Killed on drop; its
/// database is dropped with it.
// `signing_key`, `mail_dir` and `run` are for the tests of Raptor's Queue wiring (issue 18,
// item 3: key rotation with `python -m raptor rotate-key`), which land with that wiring.
#[allow(dead_code)]
pub struct Raptor {
    child: Child,
    /// `http://127.0.0.1:<port>`: Raptor directly (a browser goes through the proxy instead).
    pub url: String,
    /// Raptor's database: raptor-schema.sql in `public` (and Queue's outbox in its own schema).
    pub db: TestDb,
    /// `RAPTOR_SIGNING_KEY`: a copy of the stack's raptor private key, Raptor's to rotate.
    pub signing_key: PathBuf,
    /// `RAPTOR_MAIL_DIR`.
    pub mail_dir: PathBuf,
    python: PathBuf,
    env: Vec<(String, String)>,
    stderr_path: PathBuf,
}

impl Raptor {
    async fn start(
        port: u16,
        dir: &Path,
        keys: &TestKeys,
        browser_origin: &str,
        queue: RaptorQueue<'_>,
        opts: RaptorOptions,
    ) -> Self {
        let python = repo_root().join("var/venv-raptor/bin/python");
        assert!(
            python.is_file(),
            "{} is missing: scripts/install-test-deps.sh (or `make test-deps`) builds Raptor's virtualenv",
            python.display()
        );
        let db = TestDb::empty().await;
        let mail_dir = dir.join("mail");
        std::fs::create_dir_all(&mail_dir).expect("Raptor's mail directory");
        let signing_key = dir.join("raptor.pem");
        std::fs::copy(keys.private("raptor"), &signing_key).expect("copy the raptor key");
        let mut secret = [0u8; 32];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").expect("urandom"), &mut secret)
            .expect("random bytes");
        let env: Vec<(String, String)> = [
            ("RAPTOR_DATABASE_URL", db.url.clone()),
            ("RAPTOR_MAIL_DIR", mail_dir.display().to_string()),
            ("RAPTOR_ORIGIN", browser_origin.to_string()),
            ("RAPTOR_RP_ID", "localhost".to_string()),
            ("RAPTOR_SECRET_KEY", secret.iter().map(|b| format!("{b:02x}")).collect()),
            ("FLAG_AUTH_BACKUP_CODES", "1".to_string()),
            ("FLAG_EMAIL_VERIFICATION", "1".to_string()),
            // Behind the proxy, which replaces X-Forwarded-For with the address it saw (as make run).
            ("RAPTOR_PROXY_HOPS", "1".to_string()),
            ("RAPTOR_SIGNING_KEY", signing_key.display().to_string()),
            ("RAPTOR_QUEUE_AUDIT_URL", queue.audit.to_string()),
            ("RAPTOR_QUEUE_RBAC_URL", queue.rbac.to_string()),
            ("RAPTOR_QUEUE_AUTH_URL", queue.auth.to_string()),
            ("RAPTOR_KEY_PUBLISH_LEAD_SECS", opts.key_publish_lead_secs.to_string()),
            ("RAPTOR_KEY_CHECK_SECS", opts.key_check_secs.to_string()),
            // The write-back API (`/internal/queue/v1/`), for Queue's auth and rbac (empty: off).
            ("RAPTOR_WRITEBACK_ISSUERS", if opts.write_back { "auth,rbac" } else { "" }.to_string()),
            // Its token check (`queue_client.verify`) is this tree's Python client.
            ("PYTHONPATH", repo_root().join("clients/python/src").display().to_string()),
            // Python writes its log lines as they come (the test reads them while Raptor runs).
            ("PYTHONUNBUFFERED", "1".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let stderr_path = dir.join("stderr.log");
        let listen = format!("127.0.0.1:{port}");
        let child = Self::command_in(&python, &env, &["--listen", &listen])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).expect("Raptor's log"))
            .spawn()
            .expect("spawn python -m raptor");
        let raptor =
            Self { child, url: format!("http://{listen}"), db, signing_key, mail_dir, python, env, stderr_path };
        raptor.healthy().await
    }

    /// Stops Raptor (as a crash or an outage would); [`Self::restart`] brings it back.
    #[allow(dead_code)]
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts Raptor again on the same port, database and environment; its log goes on.
    #[allow(dead_code)]
    pub async fn restart(self) -> Self {
        let listen = self.url.trim_start_matches("http://").to_string();
        let log = std::fs::OpenOptions::new().append(true).open(&self.stderr_path).expect("Raptor's log");
        let mut this = self;
        this.child = Self::command_in(&this.python, &this.env, &["--listen", &listen])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn python -m raptor");
        this.healthy().await
    }

    /// Waits until `/healthz` answers.
    async fn healthy(mut self) -> Self {
        let raptor = &mut self;
        let client = reqwest::Client::new();
        // The first start creates the schema and hashes three demo passwords.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", raptor.url)).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Some(status) = raptor.child.try_wait().expect("wait") {
                panic!("Raptor exited with {status} before it was healthy:\n{}", raptor.stderr());
            }
            assert!(Instant::now() < deadline, "Raptor not healthy within 60 s:\n{}", raptor.stderr());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self
    }

    /// `python -m raptor <args>` in `legacy/raptor` with exactly `env` (and PATH).
    fn command_in(python: &Path, env: &[(String, String)], args: &[&str]) -> std::process::Command {
        let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut c = command(&python.display().to_string(), &refs);
        c.current_dir(repo_root().join("legacy/raptor")).args(["-m", "raptor"]).args(args);
        c
    }

    /// `python -m raptor <args>` with the running Raptor's environment (e.g. `rotate-key`), to
    /// completion: (exit success, stdout, stderr).
    #[allow(dead_code)]
    pub async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let mut c = tokio::process::Command::from(Self::command_in(&self.python, &self.env, args));
        let out = c.kill_on_drop(true).output().await.expect("run python -m raptor");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Raptor's log: Python's logging and werkzeug's request lines.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Raptor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn origin() -> Url {
    Url::parse(ORIGIN).expect("origin")
}
