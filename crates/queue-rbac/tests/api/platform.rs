//! The foundation on rbac (the full set of platform checks runs on audit; these show this
//! service is wired the same way).

use queue_testkit::{TestApp, TestKeys, checks};

const BIN: &str = env!("CARGO_BIN_EXE_queue-rbac");

async fn spawn() -> TestApp {
    // Nothing here writes to audit: an address where nothing listens is enough.
    let audit = url::Url::parse("http://127.0.0.1:9/").expect("url");
    TestApp::spawn("rbac", queue_rbac::MIGRATIONS, |c| {
        queue_rbac::run(queue_rbac::RbacConfig::new(c, audit), queue_platform::Signals::Ignore)
    })
    .await
}

#[tokio::test]
async fn platform_endpoints_answer() {
    checks::platform_endpoints_answer(&spawn().await, "queue-rbac").await;
}

#[tokio::test]
async fn readiness_follows_the_database() {
    checks::readiness_follows_the_database(&spawn().await).await;
}

#[tokio::test]
async fn migrations_live_in_the_services_own_schema() {
    checks::migrations_live_in_own_schema(&spawn().await, "rbac").await;
}

#[tokio::test]
async fn tokens_must_name_this_service_as_audience() {
    let app = spawn().await;
    let (status, body) = app.get_json_as("/internal/v1/caller", &app.token("raptor", &[])).await;
    assert_eq!((status.as_u16(), body["audience"].as_str()), (200, Some("rbac")));
    let (status, _) = app.get_json_as("/internal/v1/caller", &app.keys.token("raptor", "audit", &[])).await;
    assert_eq!(status, 401);
}

#[test]
fn a_missing_database_url_stops_start_up_with_exit_64() {
    let keys = TestKeys::new();
    let key = keys.private("rbac").display().to_string();
    let env = [
        ("QUEUE_SERVER__LISTEN", "127.0.0.1:0"),
        ("QUEUE_TOKENS__ISSUER", "rbac"),
        ("QUEUE_TOKENS__SIGNING_KEY", key.as_str()),
        ("QUEUE_AUDIT__URL", "http://127.0.0.1:8083"),
    ];
    checks::config_error_names_key(BIN, &env, "database.url");
}

#[tokio::test]
async fn the_openapi_document_names_every_endpoint() {
    let app = spawn().await;
    let (status, doc) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/api/v1/rbac/check", "post"),
        ("/api/v1/rbac/check/batch", "post"),
        ("/api/v1/rbac/roles", "get"),
        ("/api/v1/rbac/roles", "post"),
        ("/api/v1/rbac/grants", "get"),
        ("/api/v1/rbac/grants", "post"),
        ("/api/v1/rbac/grants/{id}", "delete"),
        ("/api/v1/rbac/tenants/{tenant_id}/tickets/{ticket_id}/principals", "get"),
        ("/api/v1/rbac/reconcile", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
}
