//! Checks every service must pass, shared by the services' test binaries so each states them
//! in one line.

use reqwest::StatusCode;

use crate::app::TestApp;
use crate::process::run_to_exit;

/// /healthz, /readyz, /metrics, /.well-known/jwks.json and /openapi.json answer as specified.
pub async fn platform_endpoints_answer(app: &TestApp, service: &str) {
    let (status, health) = app.get_json("/healthz").await;
    assert_eq!(
        (status, health["status"].as_str(), health["service"].as_str()),
        (StatusCode::OK, Some("ok"), Some(service))
    );

    let (status, ready) = app.get_json("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(ready["checks"][0]["name"], "database");
    assert_eq!(ready["checks"][0]["ok"], true);

    let (status, jwks) = app.get_json("/.well-known/jwks.json").await;
    assert_eq!(status, StatusCode::OK);
    let kid = app.keys.minter(&app.identity).key().kid().to_string();
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());

    let (status, doc) = app.get_json("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    assert!(doc["paths"]["/readyz"].is_object());

    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(metrics.contains("queue_http_requests_total"), "{metrics}");
}

/// `/readyz` says 503 once the database is gone, and `/healthz` still says 200.
pub async fn readiness_follows_the_database(app: &TestApp) {
    app.db.drop_now().await;
    let (status, ready) = app.get_json("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert_eq!(ready["checks"][0]["ok"], false);
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

/// The binary exits with 64 and one stderr line that names `key`.
pub fn config_error_names_key(binary: &str, env: &[(&str, &str)], key: &str) {
    let out = run_to_exit(binary, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "exit code; stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(&format!("`{key}`")), "names {key}: {stderr}");
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// The service's migrations ran in its own schema, with diesel's history table inside it and
/// nothing left in `public`.
pub async fn migrations_live_in_own_schema(app: &TestApp, schema: &str) {
    use diesel_async::RunQueryDsl;
    let mut conn = app.db.conn().await;
    let count = |sql: String| diesel::sql_query(sql);
    let applied: Count = count(format!("SELECT count(*) AS n FROM {schema}.__diesel_schema_migrations"))
        .get_result(&mut conn)
        .await
        .expect("the schema has its own migration table");
    assert!(applied.n >= 1, "at least one migration applied in {schema}");
    let public: Count =
        count("SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'public'".to_string())
            .get_result(&mut conn)
            .await
            .expect("query");
    assert_eq!(public.n, 0, "nothing in public");
}
