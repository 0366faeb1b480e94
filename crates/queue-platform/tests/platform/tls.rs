//! Service-to-service TLS (issue 16 item 10): a service serving HTTPS with a certificate from
//! the deployment's CA, reached by the platform client that trusts that CA, and refused by
//! clients that do not, and by plain HTTP. Certificates come from `queue_testkit::tls`.

use super::*;
use queue_platform::config::TlsConfig;
use queue_platform::http_client::HttpClient;
use queue_testkit::tls::{CertFiles, ca_and_server_cert};
use std::path::PathBuf;

struct TlsServer {
    world: World,
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    ca: PathBuf,
}

async fn start_tls() -> TlsServer {
    let dir = tempfile::tempdir().expect("tmp");
    let CertFiles { ca, cert, key } = ca_and_server_cert(dir.path(), "audit");
    let world = World::new();
    let platform = crate::test_platform(&world, &Default::default());
    let config = ServerConfig {
        tls: TlsConfig { cert_file: Some(cert), key_file: Some(key), ca_file: None },
        ..server_config()
    };
    let running = queue_platform::server::serve(platform, &config, Signals::Ignore, routes).expect("serve");
    let addr = running.addr;
    tokio::spawn(running.wait());
    TlsServer { world, addr, dir, ca }
}

#[tokio::test]
async fn a_client_trusting_the_ca_calls_a_tls_service_with_a_service_token() {
    let s = start_tls().await;
    let client =
        HttpClient::from_config(&TlsConfig { ca_file: Some(s.ca.clone()), ..Default::default() }).expect("client");
    let r = client.send(client.get(&format!("https://127.0.0.1:{}/healthz", s.addr.port()))).await.expect("https");
    assert_eq!(r.status(), 200);
    // A state-changing call with a service token, over TLS, by the name in the certificate.
    let t = s.world.minter("auth").mint("audit", &["audit:write"], 60).expect("mint");
    let r = client
        .send(client.post(&format!("https://localhost:{}/t/events", s.addr.port())).bearer_auth(&t))
        .await
        .expect("https");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn clients_not_trusting_the_ca_are_refused_by_the_handshake() {
    let s = start_tls().await;
    let url = format!("https://127.0.0.1:{}/healthz", s.addr.port());
    // Another CA: the certificate does not chain to it.
    let other_ca = ca_and_server_cert(s.dir.path(), "other").ca;
    let other = HttpClient::with_ca(&other_ca).expect("client");
    let err = other.send(other.get(&url)).await.expect_err("untrusted certificate");
    assert!(err.is_connect(), "{err:?}");
    // The platform's default roots do not know the deployment's CA either.
    let default = HttpClient::new();
    assert!(default.send(default.get(&url)).await.is_err(), "the dev CA is not a public root");
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_answer() {
    let s = start_tls().await;
    let client = HttpClient::new();
    let result = client.send(client.get(&format!("http://127.0.0.1:{}/healthz", s.addr.port()))).await;
    assert!(result.is_err(), "plain HTTP must not be served: {result:?}");
}

#[tokio::test]
async fn the_client_trusts_only_the_configured_ca() {
    // Missing or garbage CA files are refused at start-up, never silently replaced by the
    // default roots.
    let dir = tempfile::tempdir().expect("tmp");
    assert!(HttpClient::with_ca(&dir.path().join("missing.pem")).is_err());
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    assert!(HttpClient::with_ca(&garbage).is_err());
}
