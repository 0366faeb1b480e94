//! `GET /internal/v1/import/status` (issue 19, item 4): what rbac holds from Raptor — only rows
//! with a legacy id (Queue's own grants and built-ins not counted), grants in force as live, the
//! newest of Raptor's times; importers only.

use crate::support::{World, tenant};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

const TENANT: &str = "6f1c2d4e-8a3b-4c5d-9e6f-7a8b9c0d1e2f";
const STATUS: &str = "/internal/v1/import/status";

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

async fn import(w: &World, kind: &str, records: Value) -> Vec<Value> {
    let token = w.keys.token("operator", "rbac", &["rbac:import"]);
    let (s, v) =
        w.rbac.post_json_as(&format!("/internal/v1/import/{kind}"), &token, &json!({"records": records})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["results"].as_array().expect("results").clone()
}

/// kind → (imported, live, newest_source_at).
async fn status(w: &World) -> Vec<(String, i64, i64, Option<String>)> {
    let (s, v) = w.rbac.get_json_as(STATUS, &w.keys.token("operator", "rbac", &["rbac:import"])).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .map(|k| {
            let at = k["newest_source_at"].as_str().map(|t| ts(t.parse().expect("time")));
            (
                k["kind"].as_str().expect("kind").to_string(),
                k["imported"].as_i64().expect("n"),
                k["live"].as_i64().expect("n"),
                at,
            )
        })
        .collect()
}

#[tokio::test]
async fn the_status_counts_raptors_roles_and_grants_and_the_ones_in_force() {
    let w = World::start().await;
    // Queue's own grant is not Raptor's.
    w.grant("u-own", "viewer", tenant(TENANT), None).await;
    assert_eq!(status(&w).await, vec![("roles".into(), 0, 0, None), ("grants".into(), 0, 0, None)]);

    let now = Utc::now();
    let (made, granted, revoked) = (now - Duration::days(500), now - Duration::days(400), now - Duration::days(10));
    let roles = import(
        &w,
        "roles",
        json!([
            {"legacy_id": "1", "tenant_id": null, "name": "viewer", "description": null, "permissions": ["ticket.read"],
             "created_at": ts(made - Duration::days(100))},
            {"legacy_id": "2", "tenant_id": TENANT, "name": "triage", "description": null,
             "permissions": ["ticket.read"], "created_at": ts(made)},
        ]),
    )
    .await;
    assert_eq!(roles.iter().map(|r| r["outcome"].as_str().unwrap_or("?")).collect::<Vec<_>>(), ["updated", "created"]);
    let grant = |id: &str, who: &str, expires: Option<DateTime<Utc>>, revoked_at: Option<DateTime<Utc>>| {
        json!({"legacy_id": id, "principal_id": who, "role": "triage", "role_tenant_id": TENANT,
               "scope": {"type": "tenant", "tenant_id": TENANT, "ticket_id": null}, "granted_by": null,
               "granted_at": ts(granted), "expires_at": expires.map(ts), "reason": null,
               "revoked_at": revoked_at.map(ts), "revoked_by": null})
    };
    let grants = import(
        &w,
        "grants",
        json!([
            grant("1", "u-a", None, None),
            grant("2", "u-b", Some(now - Duration::days(30)), None),
            grant("3", "u-c", None, Some(revoked))
        ]),
    )
    .await;
    assert!(grants.iter().all(|r| r["outcome"] == "created"), "{grants:?}");
    // The built-in matched is Queue's own (no legacy id): one role; one grant of three in force.
    assert_eq!(
        status(&w).await,
        vec![("roles".into(), 1, 1, Some(ts(made))), ("grants".into(), 3, 1, Some(ts(revoked)))]
    );
}

#[tokio::test]
async fn only_an_importer_with_rbac_import_reads_the_status() {
    let w = World::start().await;
    for (issuer, scope) in [("raptor", "rbac:import"), ("proxy", "rbac:import"), ("operator", "rbac:read")] {
        let (s, v) = w.rbac.get_json_as(STATUS, &w.keys.token(issuer, "rbac", &[scope])).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{issuer} with {scope}: {v}");
    }
    let (s, v) = w.rbac.get_json_as(STATUS, &w.admin()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "Raptor's admin token: {v}");
}
