//! queuectl as an operator runs it, against real services and a real PostgreSQL.

mod api_conformance;
mod api_reference;
mod audit;
mod config_reference;
mod deploy_configs;
mod legacy_fixtures;
mod legacy_import;
mod legacy_status;
mod legacy_tap;
mod module_cycles;
mod proxy;
mod proxy_rollback;
mod tls;

use queue_platform::config::TrustedIssuerConfig;
use queue_platform::{ServiceConfig, Signals};
use queue_testkit::process::command;
use queue_testkit::{TestApp, TestDb, TestKeys};
use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_queuectl");

pub(crate) fn queuectl(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = command(BIN, env).args(args).output().expect("run queuectl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`queuectl`] off the async runtime, for tests whose services answer on it.
pub(crate) async fn queuectl_async(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        queuectl(&args, &env)
    })
    .await
    .expect("run")
}

/// The proxy without a route table, its admin listener on 127.0.0.1:0 (trusting the test
/// identities of `keys`): `using` runs against that listener, then the proxy stops.
pub(crate) async fn with_proxy_admin<T>(keys: &TestKeys, using: impl AsyncFnOnce(std::net::SocketAddr) -> T) -> T {
    use queue_proxy::{AdminConfig, ProxyConfig, RoutingConfig};
    let base = queue_testkit::service_config("proxy", "postgres://unused@127.0.0.1/none", keys);
    let config = ProxyConfig {
        server: base.server,
        telemetry: base.telemetry,
        tokens: base.tokens,
        admin: AdminConfig { listen: "127.0.0.1:0".parse().expect("addr"), ..AdminConfig::default() },
        routing: RoutingConfig { table: None, watch_interval_ms: 0, history: 10 },
        forwarding: Default::default(),
        identity: Default::default(),
        shadow: Default::default(),
        audit: None,
    };
    let started = queue_proxy::start(config, Signals::Ignore).await.expect("proxy starts");
    let handle = started.running.handle();
    tokio::spawn(started.running.wait());
    let out = using(started.admin_addr).await;
    handle.stop(true).await;
    out
}

fn trust_raptor_from(dir: &Path) -> impl FnOnce(&mut ServiceConfig) {
    let public = dir.join("raptor.pub.pem");
    move |c| {
        c.tokens.trusted.retain(|t| t.issuer != "raptor");
        c.tokens.trusted.push(TrustedIssuerConfig {
            issuer: "raptor".into(),
            jwks_url: None,
            public_key: Some(public),
        });
    }
}

#[tokio::test]
async fn a_minted_token_for_audit_is_accepted_by_audit_and_refused_by_rbac() {
    let keys = tempfile::tempdir().expect("tmp");
    let dir = keys.path().to_str().expect("utf8");
    let (code, _, err) = queuectl(&["keys", "init", "--dir", dir], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, token, err) = queuectl(
        &["token", "mint", "--iss", "raptor", "--aud", "audit", "--scope", "audit:write", "--keys-dir", dir],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let token = token.trim();

    let audit_keys = queue_audit::config::KeysConfig::local_in(keys.path(), false).expect("audit keys").0;
    let audit = TestApp::spawn_with(
        "audit",
        queue_audit::MIGRATIONS,
        |c| queue_audit::run(queue_audit::AuditConfig::new(c, audit_keys), Signals::Ignore),
        trust_raptor_from(keys.path()),
    )
    .await;
    let rbac = TestApp::spawn_with(
        "rbac",
        queue_rbac::MIGRATIONS,
        |c| {
            let audit = url::Url::parse("http://127.0.0.1:9/").expect("url");
            queue_rbac::run(queue_rbac::RbacConfig::new(c, audit), Signals::Ignore)
        },
        trust_raptor_from(keys.path()),
    )
    .await;

    let (status, body) = audit.get_json_as("/internal/v1/caller", token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["issuer"], "raptor");
    assert_eq!(body["scopes"], serde_json::json!(["audit:write"]));

    let (status, body) = rbac.get_json_as("/internal/v1/caller", token).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
}

#[test]
fn keys_init_writes_private_keys_0600_and_keeps_existing_ones() {
    use std::os::unix::fs::PermissionsExt;
    let keys = tempfile::tempdir().expect("tmp");
    let dir = keys.path().to_str().expect("utf8");
    let (code, out, _) = queuectl(&["keys", "init", "--dir", dir], &[]);
    assert_eq!(code, 0);
    for name in ["auth", "rbac", "audit", "proxy", "raptor"] {
        let private = keys.path().join(format!("{name}.pem"));
        let mode = std::fs::metadata(&private).expect("private key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
        assert!(
            std::fs::read_to_string(keys.path().join(format!("{name}.pub.pem")))
                .expect("public")
                .contains("PUBLIC KEY")
        );
        assert!(out.contains(&format!("{name}: wrote")));
    }
    let before = std::fs::read(keys.path().join("audit.pem")).expect("read");
    let (_, out, _) = queuectl(&["keys", "init", "--dir", dir], &[]);
    assert!(out.contains("audit: kept"));
    assert_eq!(std::fs::read(keys.path().join("audit.pem")).expect("read"), before);
    queuectl(&["keys", "init", "--dir", dir, "--force"], &[]);
    assert_ne!(std::fs::read(keys.path().join("audit.pem")).expect("read"), before);
}

#[test]
fn mint_refuses_a_missing_key_and_a_long_lifetime() {
    let keys = tempfile::tempdir().expect("tmp");
    let dir = keys.path().to_str().expect("utf8");
    let (code, _, err) = queuectl(&["token", "mint", "--iss", "auth", "--aud", "audit", "--keys-dir", dir], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("keys init"), "{err}");
    queuectl(&["keys", "init", "--dir", dir], &[]);
    let (code, _, err) =
        queuectl(&["token", "mint", "--iss", "auth", "--aud", "audit", "--ttl", "3600", "--keys-dir", dir], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("--ttl"), "{err}");
}

#[tokio::test]
async fn migrate_applies_each_schema_once() {
    let db = TestDb::new(&[]).await;
    let env = [("DATABASE_URL", db.url.as_str())];
    let (code, out, err) = queuectl(&["migrate"], &env);
    assert_eq!(code, 0, "{err}");
    for s in ["auth", "rbac", "audit"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations").join(s);
        let n = std::fs::read_dir(dir).expect("migrations dir").count();
        assert!(out.contains(&format!("{s}: {n} migration(s) applied")), "{out}");
    }
    let (code, out, _) = queuectl(&["migrate", "--service", "audit"], &env);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "audit: 0 migration(s) applied (up to date)");
    let (code, _, err) = queuectl(&["migrate", "--service", "billing"], &env);
    assert_ne!(code, 0);
    assert!(err.contains("billing"), "{err}");
}

#[tokio::test]
async fn rbac_reconcile_lists_a_change_made_by_hand_and_exits_2() {
    use diesel_async::SimpleAsyncConnection;
    let db = TestDb::new(&[queue_rbac::MIGRATIONS]).await;
    let env = [("DATABASE_URL", db.url.as_str())];
    let (code, out, err) = queuectl(&["rbac", "reconcile"], &env);
    assert_eq!(code, 0, "{err}");
    let clean: serde_json::Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(clean["unaudited"], serde_json::json!([]));
    // A role defined straight in SQL: no audit event, no link.
    db.conn()
        .await
        .batch_execute(
            "INSERT INTO rbac.rbac_roles (id, name, tenant_id, created_by) \
             VALUES ('6f1c2d7e-0000-4000-8000-0000000000aa', 'sneaky', 'A', 'psql')",
        )
        .await
        .expect("insert");
    let (code, out, err) = queuectl(&["rbac", "reconcile"], &env);
    assert_eq!(code, 2, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json report");
    assert_eq!(report["unaudited"][0]["table"], "rbac_roles");
    assert_eq!(report["unaudited"][0]["operation"], "INSERT");
    assert_eq!(report["unaudited"][0]["new_row"]["name"], "sneaky");
    assert!(err.contains("1 change(s) without an audit event"), "{err}");
}

#[test]
fn help_names_every_command() {
    let (code, out, _) = queuectl(&["--help"], &[]);
    assert_eq!(code, 0);
    for c in ["migrate", "keys", "token", "tls", "audit", "rbac", "proxy"] {
        assert!(out.contains(c), "{out}");
    }
    let (_, out, _) = queuectl(&["token", "mint", "--help"], &[]);
    for flag in ["--iss", "--aud", "--scope", "--ttl", "--key"] {
        assert!(out.contains(flag), "{out}");
    }
}
