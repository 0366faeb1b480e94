//! The route table: what the admin listener shows, and bad tables refused with a message that
//! names the key while the table in force keeps serving.

use crate::support::{Proxy, standin, table};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_shows_the_table_in_force() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let p = Proxy::start(&table(1, &legacy.url(), &auth.url(), "")).await;
    let (status, t) = p.admin_get("/admin/routes").await;
    assert_eq!(status, 200);
    assert_eq!(t["phase"], 1);
    assert_eq!(t["label"], "test table");
    assert_eq!(t["generation"], 1);
    assert_eq!(t["version"].as_str().expect("version").len(), 12);
    assert_eq!(t["routes"][0]["name"], "backup-codes");
    assert_eq!(t["routes"][0]["match"]["prefix"], "/api/v1/auth/backup-codes");
    assert_eq!(t["routes"][0]["queue_path"], "/queue/v1/backup-codes");
    assert_eq!(t["routes"][0]["cutover_phase"], 2);
    assert_eq!(t["routes"][0]["now"], "legacy");
    // The admin API is not on the public listener: there the path is just forwarded to Raptor,
    // which does not serve it.
    let (status, _) = p.get("/admin/routes").await;
    assert_eq!(status, 404);
    let r = p.client.post(p.url("/admin/rollback")).send().await.expect("request");
    assert_eq!(r.status(), 404);
    assert_eq!(p.version().await, t["version"].as_str().expect("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_table_is_refused_with_its_key_and_the_old_one_stays() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let good = table(1, &legacy.url(), &auth.url(), "");
    let p = Proxy::start(&good).await;
    let before = p.version().await;
    let bad_tables = [
        (good.replace("phase = 1", "phase = 9"), "phase"),
        (
            good.replace("service = \"auth\", path = \"/queue", "service = \"nope\", path = \"/queue"),
            "routes[0] (backup-codes).queue.service",
        ),
        (
            table(1, &legacy.url(), &auth.url(), "canary = { percent = 250, cohort = \"user\" }"),
            "routes[0] (backup-codes).canary.percent",
        ),
        (table(1, &legacy.url(), &auth.url(), "canary = { percent = 5, cohort = \"shoe-size\" }"), "(file)"),
        (good.replace("cutover_phase = 2", "cutover_phase = 2\nunknown_key = 1"), "(file)"),
        ("phase = [".to_string(), "(file)"),
    ];
    for (text, key) in bad_tables {
        std::fs::write(&p.table, &text).expect("write");
        let (status, body) = p.admin_post("/admin/reload", json!({})).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["field"], key, "{body}");
        assert!(body["error"]["message"].as_str().expect("message").contains("unchanged"), "{body}");
        assert_eq!(p.version().await, before);
        let (status, echo) = p.get("/api/v1/auth/backup-codes").await;
        assert_eq!((status.as_u16(), echo["server"].as_str()), (200, Some("raptor")));
    }
    // An invalid phase through the admin API is refused the same way.
    std::fs::write(&p.table, &good).expect("write");
    let (status, body) = p.admin_post("/admin/phase", json!({"phase": 0})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "phase");
    for phase in [json!("two"), json!(2.5), json!(-1), json!(256)] {
        let (status, body) = p.admin_post("/admin/phase", json!({ "phase": phase })).await;
        assert_eq!(status, 422, "{phase}: {body}");
    }
    let (status, body) = p.admin_post("/admin/rollback", json!({})).await;
    assert_eq!(status, 409, "nothing to roll back to yet: {body}");
    // `2.0` is an integer to JSON Schema (the document says `integer`), so the phase it names.
    let (status, body) = p.admin_post("/admin/phase", json!({"phase": 2.0})).await;
    assert_eq!((status.as_u16(), body["phase"].as_u64()), (200, Some(2)), "{body}");
}

#[test]
fn an_invalid_table_stops_start_up_naming_the_key() {
    let keys = queue_testkit::TestKeys::new();
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, table(1, "http://127.0.0.1:1", "gopher://x", "")).expect("write");
    let key = keys.private("proxy").display().to_string();
    let table = path.display().to_string();
    let env = [
        ("QUEUE_SERVER__LISTEN", "127.0.0.1:0"),
        ("QUEUE_ADMIN__LISTEN", "127.0.0.1:0"),
        ("QUEUE_TOKENS__ISSUER", "proxy"),
        ("QUEUE_TOKENS__SIGNING_KEY", key.as_str()),
        ("QUEUE_ROUTING__TABLE", table.as_str()),
    ];
    let out = queue_testkit::process::run_to_exit(env!("CARGO_BIN_EXE_queue-proxy"), &env);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("routing.table") && err.contains("services.auth.url"), "{err}");
}

#[test]
fn the_admin_listener_must_be_loopback() {
    let keys = queue_testkit::TestKeys::new();
    let key = keys.private("proxy").display().to_string();
    let env = [
        ("QUEUE_SERVER__LISTEN", "127.0.0.1:0"),
        ("QUEUE_ADMIN__LISTEN", "0.0.0.0:9080"),
        ("QUEUE_TOKENS__ISSUER", "proxy"),
        ("QUEUE_TOKENS__SIGNING_KEY", key.as_str()),
    ];
    queue_testkit::checks::config_error_names_key(env!("CARGO_BIN_EXE_queue-proxy"), &env, "admin.listen");
}
