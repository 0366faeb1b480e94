//! The foundation on auth (the full set of platform checks runs on audit; these show this
//! service is wired the same way).

use queue_testkit::{TestApp, TestKeys, checks};

const BIN: &str = env!("CARGO_BIN_EXE_queue-auth");

async fn spawn() -> TestApp {
    TestApp::spawn("auth", queue_auth::MIGRATIONS, |c| queue_auth::run(c, queue_platform::Signals::Ignore)).await
}

#[tokio::test]
async fn platform_endpoints_answer() {
    checks::platform_endpoints_answer(&spawn().await, "queue-auth").await;
}

#[tokio::test]
async fn readiness_follows_the_database() {
    checks::readiness_follows_the_database(&spawn().await).await;
}

#[tokio::test]
async fn migrations_live_in_the_services_own_schema() {
    checks::migrations_live_in_own_schema(&spawn().await, "auth").await;
}

#[tokio::test]
async fn tokens_must_name_this_service_as_audience() {
    let app = spawn().await;
    let (status, body) = app.get_json_as("/internal/v1/caller", &app.token("raptor", &[])).await;
    assert_eq!((status.as_u16(), body["audience"].as_str()), (200, Some("auth")));
    let (status, _) = app.get_json_as("/internal/v1/caller", &app.keys.token("raptor", "audit", &[])).await;
    assert_eq!(status, 401);
}

#[test]
fn a_missing_database_url_stops_start_up_with_exit_64() {
    let keys = TestKeys::new();
    let key = keys.private("auth").display().to_string();
    let env = [
        ("QUEUE_SERVER__LISTEN", "127.0.0.1:0"),
        ("QUEUE_TOKENS__ISSUER", "auth"),
        ("QUEUE_TOKENS__SIGNING_KEY", key.as_str()),
    ];
    checks::config_error_names_key(BIN, &env, "database.url");
}
