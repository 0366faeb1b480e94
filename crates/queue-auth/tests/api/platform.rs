//! The foundation on auth (the full set of platform checks runs on audit; these show this
//! service is wired the same way).

use queue_testkit::{TestKeys, checks};

use crate::support::Auth;

const BIN: &str = env!("CARGO_BIN_EXE_queue-auth");

#[tokio::test]
async fn platform_endpoints_answer() {
    checks::platform_endpoints_answer(&Auth::start().await.app, "queue-auth").await;
}

#[tokio::test]
async fn readiness_follows_the_database() {
    checks::readiness_follows_the_database(&Auth::start().await.app).await;
}

#[tokio::test]
async fn migrations_live_in_the_services_own_schema() {
    checks::migrations_live_in_own_schema(&Auth::start().await.app, "auth").await;
}

#[tokio::test]
async fn tokens_must_name_this_service_as_audience() {
    let auth = Auth::start().await;
    let app = &auth.app;
    let (status, body) = app.get_json_as("/internal/v1/caller", &app.token("raptor", &[])).await;
    assert_eq!((status.as_u16(), body["audience"].as_str()), (200, Some("auth")));
    let (status, _) = app.get_json_as("/internal/v1/caller", &app.keys.token("raptor", "audit", &[])).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn every_endpoint_is_in_the_openapi_document() {
    let auth = Auth::start().await;
    let (status, doc) = auth.app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    for path in [
        "/internal/v1/users",
        "/internal/v1/sessions/validate",
        "/api/v1/auth/email/verification",
        "/api/v1/auth/email/verification/confirm",
        "/api/v1/auth/webauthn/register/start",
        "/api/v1/auth/webauthn/register/finish",
        "/api/v1/auth/webauthn/login/start",
        "/api/v1/auth/webauthn/login/finish",
        "/api/v1/auth/webauthn/reauth/start",
        "/api/v1/auth/webauthn/reauth/finish",
        "/api/v1/auth/webauthn/credentials",
        "/api/v1/auth/webauthn/credentials/{id}",
        "/api/v1/auth/session",
        "/api/v1/auth/sessions",
        "/api/v1/auth/sessions/{id}",
        "/api/v1/auth/sessions/revoke-others",
        "/api/v1/auth/backup-codes",
        "/api/v1/auth/backup-codes/redeem",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing from /openapi.json");
    }
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

#[test]
fn a_missing_pepper_stops_start_up_with_exit_64() {
    let keys = TestKeys::new();
    let key = keys.private("auth").display().to_string();
    let env = [
        ("QUEUE_SERVER__LISTEN", "127.0.0.1:0"),
        ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
        ("QUEUE_TOKENS__ISSUER", "auth"),
        ("QUEUE_TOKENS__SIGNING_KEY", key.as_str()),
        ("QUEUE_AUTH__PEPPER_FILE", "/nonexistent/pepper.key"),
    ];
    checks::config_error_names_key(BIN, &env, "auth.pepper_file");
}

#[test]
fn no_validation_workers_stops_start_up_with_exit_64() {
    let keys = TestKeys::new();
    let key = keys.private("auth").display().to_string();
    let dir = tempfile::tempdir().expect("tmp");
    let pepper = dir.path().join("pepper.key");
    queue_auth::config::write_pepper(&pepper, true).expect("pepper");
    let pepper = pepper.display().to_string();
    let env = [
        ("QUEUE_SERVER__LISTEN", "127.0.0.1:0"),
        ("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none"),
        ("QUEUE_TOKENS__ISSUER", "auth"),
        ("QUEUE_TOKENS__SIGNING_KEY", key.as_str()),
        ("QUEUE_AUTH__PEPPER_FILE", pepper.as_str()),
        ("QUEUE_SESSIONS__VALIDATION_WORKERS", "0"),
    ];
    checks::config_error_names_key(BIN, &env, "sessions.validation_workers");
}

/// deploy/{local,compose}/auth.toml and the k8s ConfigMap fit `AuthConfig` (queuectl's
/// deploy_configs test checks every service; this one fails close to the change).
#[test]
fn the_deploy_configs_fit_the_config_type() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let k8s = std::fs::read_to_string(root.join("deploy/k8s/auth/configmap.yaml")).expect("configmap");
    let block: String = k8s
        .lines()
        .skip_while(|l| l.trim() != "config.toml: |")
        .skip(1)
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    for (what, text) in [
        ("local", std::fs::read_to_string(root.join("deploy/local/auth.toml")).expect("local")),
        ("compose", std::fs::read_to_string(root.join("deploy/compose/auth.toml")).expect("compose")),
        ("k8s", block),
    ] {
        let mut table: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
        if let Some(toml::Value::Table(db)) = table.get_mut("database") {
            db.entry("url").or_insert_with(|| toml::Value::String("postgres://x@db/queue".into()));
        }
        let config: queue_auth::AuthConfig =
            serde::Deserialize::deserialize(toml::Value::Table(table)).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(!config.webauthn.origins.is_empty(), "{what}");
        assert_eq!(config.cookie_secure(), what == "k8s", "{what}: Secure cookies off only for localhost");
    }
}
