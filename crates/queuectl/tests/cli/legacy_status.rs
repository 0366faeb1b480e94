//! `queuectl legacy status` against a real Raptor database and real auth, rbac and audit: before
//! any import (Queue holds nothing, Raptor its rows, a lag), after an import (equal, no lag), after
//! a revocation at Raptor (a difference and a lag of seconds), after the import again (equal);
//! the status endpoints refuse a non-importer; a service that refuses or does not answer, a
//! database that is not Raptor's and a URL that is none exit 2.

use diesel_async::SimpleAsyncConnection;
use serde_json::Value;

use crate::legacy_fixtures::{Queue, raptor};

const HASH: &str = "scrypt:32768:8:1$LLmOouJrpX846GnN$e8b2ef63c7fb8279bdc25b0d5edf34343fa1ccf8998105ec2e1d31f4615277f969215864f42cba7eb8951078c96732cd9dc8561ecc962cd3ac319b2630c05433";

/// Two customers of one tenant (one inactive), a live and a revoked session, an unused and a used
/// backup code, a tenant's role, a grant in force and a revoked one. Times relative to now, so
/// the live ones stay live.
fn rows() -> String {
    format!(
        "
INSERT INTO tenants (id, name) VALUES ('5a3c0e1e-0000-4000-8000-00000000a0c1', 'Acme');
INSERT INTO customers (id, tenant_id, email, email_verified_at, display_name, is_active, created_at) VALUES
  (1, '5a3c0e1e-0000-4000-8000-00000000a0c1', 'ada@acme.test', now() - interval '300 days', 'Ada', true, now() - interval '300 days'),
  (2, '5a3c0e1e-0000-4000-8000-00000000a0c1', 'alan@acme.test', NULL, NULL, false, now() - interval '200 days');
UPDATE customers SET updated_at = created_at;
INSERT INTO customer_sessions (id, customer_id, token, created_at, expires_at, last_seen_at, revoked_at) VALUES
  (1, 1, 'LiveRaptorSessionToken_0123456789abcdefghijk', now() - interval '1 day', now() + interval '6 days', now() - interval '5 minutes', NULL),
  (2, 2, 'RevokedRaptorSessionToken_0123456789abcdefgh', now() - interval '40 days', now() - interval '26 days', NULL, now() - interval '39 days');
INSERT INTO customer_backup_codes (id, customer_id, code_hash, used_at, created_at) VALUES
  (1, 1, '{HASH}', NULL, now() - interval '30 days'),
  (2, 1, '{HASH}', now() - interval '10 days', now() - interval '30 days');
INSERT INTO rbac_permissions (name) VALUES ('ticket.read');
INSERT INTO rbac_roles (id, tenant_id, name, description, created_at) VALUES
  (1, '5a3c0e1e-0000-4000-8000-00000000a0c1', 'reader', NULL, now() - interval '250 days');
INSERT INTO rbac_role_permissions (role_id, permission) VALUES (1, 'ticket.read');
INSERT INTO rbac_grants (id, customer_id, role_id, scope_type, tenant_id, granted_by, granted_at, reason, revoked_at, revoked_by) VALUES
  (1, 1, 1, 'tenant', '5a3c0e1e-0000-4000-8000-00000000a0c1', NULL, now() - interval '100 days', 'on call', NULL, NULL),
  (2, 2, 1, 'tenant', '5a3c0e1e-0000-4000-8000-00000000a0c1', 1, now() - interval '150 days', NULL, now() - interval '120 days', 1);
"
    )
}

/// kind → (raptor rows, raptor live, queue rows, queue live, lag state).
fn table(status: &Value) -> Vec<(String, i64, i64, i64, i64, String)> {
    status["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .map(|k| {
            let n = |v: &Value| v.as_i64().unwrap_or(-1);
            (
                k["kind"].as_str().unwrap_or("?").to_string(),
                n(&k["raptor"]["rows"]),
                n(&k["raptor"]["live"]),
                n(&k["queue"]["rows"]),
                n(&k["queue"]["live"]),
                k["lag"]["state"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect()
}

fn expect(rows: [(&str, i64, i64, i64, i64, &str); 6]) -> Vec<(String, i64, i64, i64, i64, String)> {
    rows.into_iter().map(|(k, a, b, c, d, l)| (k.to_string(), a, b, c, d, l.to_string())).collect()
}

async fn status(queue: &Queue, source: &str) -> Value {
    let (code, out, err) = queue.legacy("status", source, "operator", &["--json"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

async fn import(queue: &Queue, source: &str) {
    let (code, out, err) = queue.legacy("import", source, "operator", &[]).await;
    assert_eq!(code, 0, "{out}\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_follows_raptor_through_imports_and_a_revocation() {
    let db = raptor(&rows()).await;
    let queue = Queue::start().await;

    // Before any import: Queue holds nothing; the lag is the age of Raptor's oldest row.
    let before = status(&queue, &db.url).await;
    assert_eq!(
        table(&before),
        expect([
            ("users", 2, 1, 0, 0, "behind"),
            ("sessions", 2, 1, 0, 0, "behind"),
            ("backup-codes", 2, 1, 0, 0, "behind"),
            ("passkeys", 0, 0, 0, 0, "none"),
            ("roles", 1, 1, 0, 0, "behind"),
            ("grants", 2, 1, 0, 0, "behind"),
        ])
    );
    let users_lag = before["kinds"][0]["lag"]["seconds"].as_i64().expect("seconds");
    assert!((300 * 86_400 - 60..=300 * 86_400 + 60).contains(&users_lag), "{before:#}");
    assert_eq!(before["sessions_carried_over"], 0);
    // Nothing done at Queue yet: rbac owes Raptor nothing (and writes back nowhere here).
    let rbac_owes = &before["write_back_backlog"]["rbac"];
    assert_eq!((rbac_owes["pending"].as_i64(), rbac_owes["failed"].as_i64()), (Some(0), Some(0)), "{before:#}");
    assert_eq!(rbac_owes["enabled"], false, "{before:#}");
    assert!(before["write_back_backlog"]["auth"].is_object(), "{before:#}");
    assert!(before["refused"].as_str().expect("refused").contains("legacy import --dry-run"), "{before:#}");
    assert_eq!(before["kinds"][1]["difference"], serde_json::json!({"rows": null, "live": 1}));

    // After the import: every count equal, no lag, the live session carried over.
    import(&queue, &db.url).await;
    let after = status(&queue, &db.url).await;
    assert_eq!(
        table(&after),
        expect([
            ("users", 2, 1, 2, 1, "none"),
            ("sessions", 2, 1, 1, 1, "none"),
            ("backup-codes", 2, 1, 2, 1, "none"),
            ("passkeys", 0, 0, 0, 0, "none"),
            ("roles", 1, 1, 1, 1, "none"),
            ("grants", 2, 1, 2, 1, "none"),
        ])
    );
    assert_eq!(after["sessions_carried_over"], 1);
    assert!(after["kinds"][0]["queue"]["updated_at"].is_string(), "{after:#}");
    assert!(after["kinds"][1]["queue"].get("updated_at").is_none(), "{after:#}");

    // Raptor revokes the live session: a difference, and a lag of seconds.
    db.conn()
        .await
        .batch_execute("UPDATE customer_sessions SET revoked_at = now() - interval '2 seconds' WHERE id = 1")
        .await
        .expect("revoke");
    let revoked = status(&queue, &db.url).await;
    let sessions = &revoked["kinds"][1];
    assert_eq!(
        (sessions["raptor"]["live"].as_i64(), sessions["queue"]["live"].as_i64()),
        (Some(0), Some(1)),
        "{revoked:#}"
    );
    assert_eq!(sessions["difference"]["live"], -1, "{revoked:#}");
    assert_eq!(sessions["lag"]["state"], "behind", "{revoked:#}");
    let lag = sessions["lag"]["seconds"].as_i64().expect("seconds");
    assert!((0..120).contains(&lag), "{revoked:#}");
    let (code, text, err) = queue.legacy("status", &db.url, "operator", &[]).await;
    assert_eq!(code, 0, "{text}\n{err}");
    assert!(text.contains("behind Raptor: sessions since"), "{text}");
    assert!(text.contains("sessions carried over: 1"), "{text}");
    assert!(text.contains("write-back backlog (Queue's changes not at Raptor yet):\n"), "{text}");
    assert!(text.contains("\n  rbac: nothing pending\n"), "{text}");

    // The import brings the revocation: equal again, nothing carried over.
    import(&queue, &db.url).await;
    let again = status(&queue, &db.url).await;
    assert_eq!(
        table(&again),
        expect([
            ("users", 2, 1, 2, 1, "none"),
            ("sessions", 2, 0, 1, 0, "none"),
            ("backup-codes", 2, 1, 2, 1, "none"),
            ("passkeys", 0, 0, 0, 0, "none"),
            ("roles", 1, 1, 1, 1, "none"),
            ("grants", 2, 1, 2, 1, "none"),
        ])
    );
    assert_eq!(again["sessions_carried_over"], 0);

    // Not an importer: both services refuse it, and the status exits 2 naming the answer.
    for (service, app) in [("auth", &queue.auth), ("rbac", &queue.rbac)] {
        let token = queue.keys.token("proxy", service, &[scope(service)]);
        let resp = reqwest::Client::new()
            .get(app.url("/internal/v1/import/status"))
            .bearer_auth(token)
            .send()
            .await
            .expect("status");
        assert_eq!(resp.status(), 403, "{service}");
    }
    let (code, out, err) = queue.legacy("status", &db.url, "proxy", &[]).await;
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("403") && err.contains("/internal/v1/import/status"), "{err}");

    // A database that is not Raptor's, and a URL that is no database: exit 2, saying so.
    let other = queue_testkit::TestDb::empty().await;
    let (code, _, err) = queue.legacy("status", &other.url, "operator", &[]).await;
    assert!(code == 2 && err.contains("is this Raptor's database?"), "{err}");
    let (code, _, err) = queue.legacy("status", "http://127.0.0.1:1/", "operator", &[]).await;
    assert!(code == 2 && err.contains("--source-url must be a postgresql:// URL"), "{err}");
    queue.stop().await;

    // A service that does not answer: exit 2.
    let (code, out, err) = queue.legacy("status", &db.url, "operator", &[]).await;
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("cannot reach auth"), "{err}");
}

fn scope(service: &str) -> &'static str {
    if service == "auth" { "users:import" } else { "rbac:import" }
}
