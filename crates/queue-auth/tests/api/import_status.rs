//! `GET /internal/v1/import/status` (issue 19, item 4): what auth holds from Raptor, per kind —
//! only rows with a legacy id, the live ones (a session past its idle expiry or revoked, a
//! voided code, a disabled user are not), the newest of Raptor's times; importers only.

use chrono::Duration;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::Auth;

const TENANT: &str = "5a3c0e1e-0000-4000-8000-00000000a0c1";
const STATUS: &str = "/internal/v1/import/status";
const HASH: &str = "scrypt:32768:8:1$LLmOouJrpX846GnN$e8b2ef63c7fb8279bdc25b0d5edf34343fa1ccf8998105ec2e1d31f4615277f969215864f42cba7eb8951078c96732cd9dc8561ecc962cd3ac319b2630c05433";

async fn import(auth: &Auth, kind: &str, records: Value) {
    let token = auth.app.token("operator", &["users:import"]);
    let (s, v) = auth.post(&format!("/internal/v1/import/{kind}"), Some(&token), &json!({"records": records})).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["results"].as_array().expect("results").iter().all(|r| r["outcome"] == "created"), "{v}");
}

/// kind → (imported, live).
async fn status(auth: &Auth) -> (Value, Vec<(String, i64, i64)>) {
    let (s, v) = auth.get(STATUS, &auth.app.token("operator", &["users:import"])).await;
    assert_eq!(s, 200, "{v}");
    let kinds = v["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .map(|k| {
            (
                k["kind"].as_str().expect("kind").to_string(),
                k["imported"].as_i64().expect("n"),
                k["live"].as_i64().expect("n"),
            )
        })
        .collect();
    (v, kinds)
}

fn expect(rows: [(&str, i64, i64); 4]) -> Vec<(String, i64, i64)> {
    rows.into_iter().map(|(k, a, b)| (k.to_string(), a, b)).collect()
}

#[tokio::test]
async fn the_status_counts_what_came_from_raptor_and_what_of_it_is_live() {
    let auth = Auth::start().await;
    // A user of Queue's own (no legacy id) is not counted.
    auth.signed_in("own@acme.test").await;
    let (v, kinds) = status(&auth).await;
    assert_eq!(kinds, expect([("users", 0, 0), ("sessions", 0, 0), ("backup-codes", 0, 0), ("passkeys", 0, 0)]));
    assert!(v["kinds"][0]["newest_source_at"].is_null(), "{v}");

    let now = auth.clock_now();
    let created = now - Duration::days(2);
    import(
        &auth,
        "users",
        json!([
            {"legacy_id": "1", "tenant_id": TENANT, "email": "ada@acme.test", "email_verified_at": null,
             "display_name": null, "active": true, "created_at": created - Duration::days(100)},
            {"legacy_id": "2", "tenant_id": TENANT, "email": "alan@acme.test", "email_verified_at": null,
             "display_name": null, "active": false, "created_at": created - Duration::days(50)},
        ]),
    )
    .await;
    let session = |id: &str, token: &str, last_seen| {
        json!({"legacy_id": id, "user_legacy_id": "1", "token_sha256": sha256(token), "created_at": created,
               "expires_at": now + Duration::days(5), "last_seen_at": last_seen, "revoked_at": null,
               "ip": null, "user_agent": null})
    };
    import(
        &auth,
        "sessions",
        json!([
            session("1", "first-raptor-token", now - Duration::minutes(1)),
            session("2", "second-raptor-token", now - Duration::minutes(25))
        ]),
    )
    .await;
    import(
        &auth,
        "backup-codes",
        json!([{"legacy_id": "1", "user_legacy_id": "1", "werkzeug_hash": HASH, "created_at": created, "used_at": null},
               {"legacy_id": "2", "user_legacy_id": "1", "werkzeug_hash": HASH, "created_at": created, "used_at": null}]),
    )
    .await;
    let (v, kinds) = status(&auth).await;
    assert_eq!(kinds, expect([("users", 2, 1), ("sessions", 2, 2), ("backup-codes", 2, 2), ("passkeys", 0, 0)]));
    let newest = |i: usize| {
        v["kinds"][i]["newest_source_at"].as_str().map(|t| t.parse::<chrono::DateTime<chrono::Utc>>().expect("time"))
    };
    assert_eq!(newest(0), Some(created - Duration::days(50)), "{v}");
    assert_eq!(newest(1), Some(created), "{v}");
    assert!(v["kinds"][0]["updated_at"].is_string() && v["kinds"][1].get("updated_at").is_none(), "{v}");

    // Ten minutes on, the session last seen 25 minutes ago is past the idle timeout (30 min);
    // a code voided at Queue is no longer live; neither is counted live, both still imported.
    auth.advance(10 * 60);
    auth.exec("UPDATE auth.queue_backup_codes SET voided_at = now() WHERE legacy_id = '2'").await;
    let (_, kinds) = status(&auth).await;
    assert_eq!(kinds, expect([("users", 2, 1), ("sessions", 2, 1), ("backup-codes", 2, 1), ("passkeys", 0, 0)]));

    // Raptor revokes the live one: the import's revocation is Raptor's time, the new watermark.
    let revoked_at = auth.clock_now() - Duration::seconds(30);
    let mut revoked = session("1", "first-raptor-token", now - Duration::minutes(1));
    revoked["revoked_at"] = json!(revoked_at);
    let token = auth.app.token("operator", &["users:import"]);
    let (s, r) = auth.post("/internal/v1/import/sessions", Some(&token), &json!({"records": [revoked]})).await;
    assert_eq!((s.as_u16(), r["results"][0]["outcome"].as_str()), (200, Some("updated")), "{r}");
    let (v, kinds) = status(&auth).await;
    assert_eq!(kinds[1], ("sessions".to_string(), 2, 0));
    assert_eq!(
        v["kinds"][1]["newest_source_at"].as_str().map(|t| t.parse::<chrono::DateTime<chrono::Utc>>().expect("time")),
        Some(revoked_at),
        "{v}"
    );
}

#[tokio::test]
async fn only_an_importer_with_users_import_reads_the_status() {
    let auth = Auth::start().await;
    for (issuer, scope) in [("raptor", "users:import"), ("proxy", "users:import"), ("operator", "users:read")] {
        let (s, v) = auth.get(STATUS, &auth.app.token(issuer, &[scope])).await;
        assert_eq!(s, 403, "{issuer} with {scope}: {v}");
    }
    let (user, _) = auth.signed_in("ada@acme.test").await;
    let (s, _) = auth.get(STATUS, &user).await;
    assert_eq!(s, 401, "a user's session is no service token");
    let (s, v) = auth.get(STATUS, &auth.app.token("operator", &["users:import"])).await;
    assert_eq!(s, 200, "{v}");
}

fn sha256(token: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}
