//! queue-proxy as a real process: platform endpoints, config errors, signals, access log.

use queue_testkit::process::ServiceProcess;
use queue_testkit::{TestKeys, checks};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_queue-proxy");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_platform_endpoints_and_stops_on_sigterm() {
    let keys = TestKeys::new();
    let key = keys.private("proxy").display().to_string();
    let mut p = ServiceProcess::start(
        BIN,
        &[
            ("QUEUE_TOKENS__ISSUER", "proxy"),
            ("QUEUE_TOKENS__SIGNING_KEY", &key),
            ("QUEUE_ADMIN__LISTEN", "127.0.0.1:0"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("{}{path}", p.base_url)).send();
    let ready: Value = get("/readyz").await.expect("readyz").json().await.expect("json");
    assert_eq!(ready["ready"], true);
    let jwks: Value = get("/.well-known/jwks.json").await.expect("jwks").json().await.expect("json");
    assert_eq!(jwks["keys"][0]["kid"], keys.minter("proxy").key().kid());
    // The proxy's own metrics and OpenAPI document are on the admin listener only: on the
    // front door (no route table here) these paths are a JSON 404 like any unrouted path.
    for path in ["/metrics", "/openapi.json"] {
        let r = get(path).await.expect(path);
        assert_eq!(r.status(), 404, "{path}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["error"]["code"], "no_route", "{path}");
    }
    assert_eq!(p.signal_and_wait("TERM").await, Some(0), "{}", p.stderr());
}

#[test]
fn a_database_section_is_an_unknown_key_for_the_proxy() {
    let keys = TestKeys::new();
    let key = keys.private("proxy").display().to_string();
    let env = [
        ("QUEUE_SERVER__LISTEN", "127.0.0.1:0"),
        ("QUEUE_TOKENS__ISSUER", "proxy"),
        ("QUEUE_TOKENS__SIGNING_KEY", key.as_str()),
        ("QUEUE_DATABASE__URL", "postgres://x@127.0.0.1/q"),
    ];
    checks::config_error_names_key(BIN, &env, "database.url");
}

#[test]
fn the_conventional_database_url_does_not_concern_the_proxy() {
    let keys = TestKeys::new();
    let key = keys.private("proxy").display().to_string();
    let env = [
        ("QUEUE_SERVER__LISTEN", "127.0.0.1:0"),
        ("QUEUE_TOKENS__ISSUER", "proxy"),
        ("QUEUE_TOKENS__SIGNING_KEY", key.as_str()),
        ("DATABASE_URL", "postgres://x@127.0.0.1/q"),
    ];
    let out = queue_testkit::process::command(BIN, &env).arg("--check-config").output().expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_missing_signing_key_stops_start_up_with_exit_64() {
    let env = [
        ("QUEUE_SERVER__LISTEN", "127.0.0.1:0"),
        ("QUEUE_TOKENS__ISSUER", "proxy"),
        ("QUEUE_TOKENS__SIGNING_KEY", "/nonexistent.pem"),
    ];
    checks::config_error_names_key(BIN, &env, "tokens.signing_key");
}
