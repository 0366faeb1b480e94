//! The proxy reaches a Queue service over TLS (issue 16 item 10): an `https://` upstream whose
//! certificate chains to `server.tls.ca_file` is forwarded to; without that CA the proxy
//! refuses the upstream's certificate and answers 502.

use crate::support::{Options, Proxy, standin, table};
use actix_web::{HttpResponse, web};
use queue_platform::config::TlsConfig;
use queue_platform::{Platform, Signals};
use queue_testkit::TestKeys;
use queue_testkit::tls::{CertFiles, ca_and_server_cert};
use std::path::PathBuf;

/// A platform service serving HTTPS with `cert`/`key`: the backup-codes route the table cuts
/// over answers with its name.
fn tls_service(cert: PathBuf, key: PathBuf) -> std::net::SocketAddr {
    let keys = TestKeys::new();
    let mut base = queue_testkit::service_config("auth", "postgres://unused@127.0.0.1/none", &keys);
    base.server.tls = TlsConfig { cert_file: Some(cert), key_file: Some(key), ca_file: None };
    let platform = Platform::new("auth", None, &base.tokens, &base.telemetry, utoipa::openapi::OpenApi::default())
        .expect("platform");
    let running = queue_platform::server::serve(platform, &base.server, Signals::Ignore, |cfg| {
        cfg.route(
            "/queue/v1/backup-codes",
            web::get().to(|| async { HttpResponse::Ok().json(serde_json::json!({"server": "auth-over-tls"})) }),
        );
    })
    .expect("serve");
    let addr = running.addr;
    tokio::spawn(running.wait());
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_reached_only_through_the_configured_ca() {
    let dir = tempfile::tempdir().expect("tmp");
    let CertFiles { ca, cert, key } = ca_and_server_cert(dir.path(), "auth");
    let auth = tls_service(cert, key);
    let legacy = standin("raptor", false);
    // Phase 2: backup codes go to Queue's auth, over https by the certificate's name.
    let routes = table(2, &legacy.url(), &format!("https://localhost:{}", auth.port()), "");

    let trusting = Proxy::start_with(&routes, Options { ca_file: Some(ca), ..Options::default() }).await;
    let (status, body) = trusting.get("/api/v1/auth/backup-codes").await;
    assert_eq!((status.as_u16(), body["server"].as_str()), (200, Some("auth-over-tls")), "{body}");

    // Without the CA the upstream's certificate is not trusted: a 502, never a plain fallback.
    let untrusting = Proxy::start(&routes).await;
    let (status, body) = untrusting.get("/api/v1/auth/backup-codes").await;
    assert_eq!(status.as_u16(), 502, "{body}");
}
