//! `queuectl tls dev-certs` makes certificates that real services serve HTTPS with, and that
//! their peers trust through the CA alone: rbac writes its pre-grant audit event to audit over
//! TLS (issue 16 item 10).

use crate::queuectl;
use queue_platform::Signals;
use queue_platform::config::TlsConfig;
use queue_testkit::{TestApp, TestDb, TestKeys};
use serde_json::json;
use std::path::Path;

fn tls_of(dir: &Path, name: &str) -> TlsConfig {
    TlsConfig {
        cert_file: Some(dir.join(format!("{name}.pem"))),
        key_file: Some(dir.join(format!("{name}.key"))),
        ca_file: Some(dir.join("ca.pem")),
    }
}

#[tokio::test]
async fn dev_certs_let_rbac_grant_through_audit_over_tls() {
    let tmp = tempfile::tempdir().expect("tmp");
    let certs = tmp.path().join("tls");
    let (code, out, err) =
        queuectl(&["tls", "dev-certs", "--out", certs.to_str().expect("utf8"), "--names", "audit,rbac"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("CA: wrote"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "audit.key", "rbac.key"] {
            let mode = std::fs::metadata(certs.join(key)).expect("key").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
    }

    let keys = TestKeys::new();
    let audit_keys = queue_audit::config::KeysConfig::local_in(tmp.path(), true).expect("audit keys").0;
    let c = certs.clone();
    let audit = TestApp::spawn_in(
        "audit",
        TestDb::new(&[queue_audit::MIGRATIONS]).await,
        keys.clone(),
        |base| queue_audit::run(queue_audit::AuditConfig::new(base, audit_keys), Signals::Ignore),
        move |base| base.server.tls = tls_of(&c, "audit"),
    )
    .await;
    // By name: the certificate covers `localhost`, and rbac trusts only the dev CA.
    let audit_url = url::Url::parse(&format!("https://localhost:{}/", audit.addr.port())).expect("url");
    let c = certs.clone();
    let rbac = TestApp::spawn_in(
        "rbac",
        TestDb::new(&[queue_rbac::MIGRATIONS]).await,
        keys.clone(),
        move |base| {
            let mut config = queue_rbac::config::RbacConfig::new(base, audit_url);
            config.audit.timeout_ms = 2_000;
            queue_rbac::run(config, Signals::Ignore)
        },
        move |base| base.server.tls = tls_of(&c, "rbac"),
    )
    .await;

    let ca = std::fs::read(certs.join("ca.pem")).expect("ca");
    let client = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&ca).expect("pem"))
        .build()
        .expect("client");
    let grant = json!({"principal_id": "ada", "role": "agent", "scope": {"type": "tenant", "tenant_id": "A"},
                       "reason": "over tls"});
    let r = client
        .post(format!("https://localhost:{}/api/v1/rbac/grants", rbac.addr.port()))
        .bearer_auth(keys.token("raptor", "rbac", &["rbac:grant"]))
        .json(&grant)
        .send()
        .await
        .expect("https to rbac");
    // 201 only after the audit event was written: rbac reached audit over TLS.
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let r = client
        .get(format!("https://localhost:{}/api/v1/audit/events?tenant_id=A", audit.addr.port()))
        .bearer_auth(keys.token("raptor", "audit", &["audit:read"]))
        .send()
        .await
        .expect("https to audit");
    let page: serde_json::Value = r.json().await.expect("json");
    assert_eq!(page["events"].as_array().map(Vec::len), Some(1), "{page}");

    // Plain HTTP to a TLS listener gets nothing.
    assert!(reqwest::get(format!("http://127.0.0.1:{}/healthz", rbac.addr.port())).await.is_err());
}

#[test]
fn dev_certs_keep_an_existing_ca_unless_forced() {
    let tmp = tempfile::tempdir().expect("tmp");
    let out = tmp.path().to_str().expect("utf8");
    assert_eq!(queuectl(&["tls", "dev-certs", "--out", out, "--names", "auth"], &[]).0, 0);
    let ca = std::fs::read(tmp.path().join("ca.pem")).expect("ca");
    let (code, stdout, _) = queuectl(&["tls", "dev-certs", "--out", out, "--names", "auth,proxy"], &[]);
    assert_eq!(code, 0);
    assert!(stdout.contains("CA: kept"), "{stdout}");
    assert_eq!(std::fs::read(tmp.path().join("ca.pem")).expect("ca"), ca, "same CA: other certificates stay valid");
    assert_eq!(queuectl(&["tls", "dev-certs", "--out", out, "--force"], &[]).0, 0);
    assert_ne!(std::fs::read(tmp.path().join("ca.pem")).expect("ca"), ca);
    let (code, _, err) = queuectl(&["tls", "dev-certs", "--out", out, "--names", "Bad Name"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("Bad Name"), "{err}");
}
