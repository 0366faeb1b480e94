//! The smaller holes on the rbac side (issue 16, item 8), with real sessions from the real auth
//! service: a granter gives no more time than they hold, and another tenant's roles and
//! principals are not readable.

use crate::support::{World, tenant, ticket};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_granter_cannot_give_an_expiry_later_than_their_own_grants() {
    let w = World::start_with_users().await;
    let (admin, session) = w.user("A", "temp-admin@a.example").await;
    let (bob, _) = w.user("A", "bob@a.example").await;
    let own_expiry = chrono::Utc::now() + chrono::Duration::hours(1);
    let own = own_expiry.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    w.grant(&admin, "customer_admin", tenant("A"), Some(&own)).await;

    let grants_before = w.scalar("SELECT count(*) AS n FROM rbac.rbac_grants").await;
    let events_before = w.audit_events("A").await.len();
    let later = (own_expiry + chrono::Duration::minutes(1)).to_rfc3339();
    for (expires_at, why) in [(None, "no expiry"), (Some(later.as_str()), "a minute after the granter's own")] {
        let mut body = json!({"principal_id": bob, "role": "viewer", "scope": tenant("A"), "reason": "cap"});
        if let Some(e) = expires_at {
            body["expires_at"] = json!(e);
        }
        let (s, v) = w.rbac.post_json_as("/api/v1/rbac/grants", &session, &body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{why}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("expires_at") && message.contains(&own[..19]), "says why and until when: {v}");
    }
    assert_eq!(w.scalar("SELECT count(*) AS n FROM rbac.rbac_grants").await, grants_before, "nothing granted");
    assert_eq!(w.audit_events("A").await.len(), events_before, "nothing audited either");

    // Up to their own expiry is fine, also at a ticket of the tenant.
    let within = (own_expiry - chrono::Duration::minutes(1)).to_rfc3339();
    for (scope, expires_at) in [(tenant("A"), own.as_str()), (ticket("A", "3"), within.as_str())] {
        let body =
            json!({"principal_id": bob, "role": "viewer", "scope": scope, "reason": "cap", "expires_at": expires_at});
        let (s, v) = w.rbac.post_json_as("/api/v1/rbac/grants", &session, &body).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    // A second, permanent covering grant lifts the cap: what counts is how long they hold it.
    w.grant(&admin, "customer_admin", tenant("A"), None).await;
    let body = json!({"principal_id": "carol", "role": "viewer", "scope": tenant("A"), "reason": "no cap"});
    let (s, v) = w.rbac.post_json_as("/api/v1/rbac/grants", &session, &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

#[tokio::test]
async fn another_tenants_roles_grants_and_principals_are_not_readable() {
    let w = World::start_with_users().await;
    let (admin_a, session) = w.user("A", "admin@a.example").await;
    w.grant(&admin_a, "customer_admin", tenant("A"), None).await;
    // Tenant B's own organisation: a custom role, and people holding it.
    let role =
        json!({"name": "b-secret-ops", "tenant_id": "B", "permissions": ["ticket.read"], "description": "B only"});
    let (s, v) = w.rbac.post_json_as("/api/v1/rbac/roles", &w.admin(), &role).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    w.grant("b-person", "b-secret-ops", tenant("B"), None).await;
    w.grant("b-ticket-person", "viewer", ticket("B", "9"), None).await;

    // Their own tenant: readable.
    let (s, v) = w.rbac.get_json_as("/api/v1/rbac/roles?tenant_id=A", &session).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = w.rbac.get_json_as("/api/v1/rbac/grants?tenant_id=A", &session).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Another tenant's roles, grants, a ticket's principals, someone's grants: refused, and the
    // answer says nothing of what is there.
    for path in [
        "/api/v1/rbac/roles?tenant_id=B",
        "/api/v1/rbac/grants?tenant_id=B",
        "/api/v1/rbac/grants?tenant_id=B&ticket_id=9",
        "/api/v1/rbac/grants?tenant_id=B&principal_id=b-person",
        "/api/v1/rbac/tenants/B/tickets/9/principals",
    ] {
        let (s, v) = w.rbac.get_json_as(path, &session).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {v}");
        let text = v.to_string();
        assert!(!text.contains("b-secret-ops") && !text.contains("b-person"), "{path} leaked: {text}");
    }
    let (s, v) = w.rbac.get_json_as("/api/v1/rbac/grants?principal_id=b-person", &session).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "someone else's grants need a tenant one may read: {v}");
    // The built-in roles are the same everywhere and stay listable; B's own are not among them.
    let (s, v) = w.rbac.get_json_as("/api/v1/rbac/roles", &session).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!v.to_string().contains("b-secret-ops"), "{v}");

    // A service that is not a reader does not read a tenant's roles either.
    let checker = w.keys.token("proxy", "rbac", &["rbac:check"]);
    let (s, v) = w.rbac.get_json_as("/api/v1/rbac/roles?tenant_id=B", &checker).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, v) = w.rbac.get_json_as("/api/v1/rbac/roles?tenant_id=B", &w.admin()).await;
    assert_eq!((s, v.to_string().contains("b-secret-ops")), (StatusCode::OK, true), "a reader does: {v}");
}
