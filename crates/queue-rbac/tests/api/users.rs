//! Users (sessions validated by the real auth service) granting, checking, and reading the audit
//! log through the auditor role.

use crate::support::{World, tenant, ticket};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn post_as(w: &World, session: &str, path: &str, body: &Value) -> (StatusCode, Value) {
    w.rbac.post_json_as(path, session, body).await
}

fn grant_body(principal: &str, role: &str, scope: Value) -> Value {
    json!({"principal_id": principal, "role": role, "scope": scope, "reason": "user test"})
}

#[tokio::test]
async fn a_tenant_admin_grants_only_within_their_reach() {
    let w = World::start_with_users().await;
    let (admin, admin_session) = w.user("A", "admin@a.example").await;
    let (bob, bob_session) = w.user("A", "bob@a.example").await;
    w.grant(&admin, "customer_admin", tenant("A"), None).await;

    // Within the tenant: yes, and the audit event names the user as the actor.
    let (s, v) = post_as(&w, &admin_session, "/api/v1/rbac/grants", &grant_body(&bob, "viewer", tenant("A"))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["grant"]["granted_by"], format!("user:{admin}"));
    let event = w.audit_events("A").await.into_iter().find(|e| e["id"] == v["audit_event_id"]).expect("event");
    assert_eq!(event["actor"], json!({"type": "user", "id": admin}));
    let (s, v) =
        post_as(&w, &admin_session, "/api/v1/rbac/grants", &grant_body("carol", "agent", ticket("A", "1"))).await;
    assert_eq!(s, StatusCode::CREATED, "a ticket of the tenant is within reach: {v}");

    // Another tenant, a role beyond their own permissions, themselves: no, and nothing changes.
    let before = w.scalar("SELECT count(*) AS n FROM rbac.rbac_grants").await;
    for (body, why) in [
        (grant_body(&bob, "viewer", tenant("B")), "another tenant"),
        (grant_body(&bob, "security_admin", tenant("A")), "security_admin"),
        (grant_body(&bob, "auditor", tenant("A")), "a role with audit.read, which the admin lacks"),
        (grant_body(&admin, "agent", tenant("A")), "themselves"),
        (grant_body(&bob, "viewer", json!({"type": "global"})), "global scope"),
    ] {
        let (s, v) = post_as(&w, &admin_session, "/api/v1/rbac/grants", &body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{why}: {v}");
    }
    assert_eq!(w.scalar("SELECT count(*) AS n FROM rbac.rbac_grants").await, before);

    // A viewer cannot grant at all.
    let (s, _) = post_as(&w, &bob_session, "/api/v1/rbac/grants", &grant_body("dave", "viewer", tenant("A"))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A user checks their own permissions, nobody else's.
    let own = json!({"principal_id": bob, "permission": "ticket.read", "resource": {"tenant_id": "A"}});
    let (s, v) = post_as(&w, &bob_session, "/api/v1/rbac/check", &own).await;
    assert_eq!((s, v["allowed"].as_bool()), (StatusCode::OK, Some(true)));
    let other = json!({"principal_id": admin, "permission": "ticket.read", "resource": {"tenant_id": "A"}});
    assert_eq!(post_as(&w, &bob_session, "/api/v1/rbac/check", &other).await.0, StatusCode::FORBIDDEN);
    // A session that is not valid is refused.
    let (s, _) = post_as(&w, "not-a-session-token", "/api/v1/rbac/check", &own).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_auditor_reads_the_audit_log_of_their_tenant_only() {
    let w = World::start_with_users().await;
    let (auditor, session) = w.user("A", "auditor@a.example").await;
    let (_, nobody) = w.user("A", "nobody@a.example").await;
    w.grant("someone", "viewer", tenant("A"), None).await; // something in tenant A's log
    w.grant("someone", "viewer", tenant("B"), None).await;
    let g = w.grant(&auditor, "auditor", tenant("A"), None).await;

    let (s, v) = w.audit.get_json_as("/api/v1/audit/events?tenant_id=A", &session).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!v["events"].as_array().expect("events").is_empty());
    let (s, v) = w.audit.get_json_as("/api/v1/audit/verify?tenant_id=A", &session).await;
    assert_eq!((s, v["ok"].as_bool()), (StatusCode::OK, Some(true)), "{v}");
    let (s, _) = w.audit.get_json_as("/api/v1/audit/events?tenant_id=B", &session).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "another tenant");
    let (s, _) = w.audit.get_json_as("/api/v1/audit/events?tenant_id=A", &nobody).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "no audit role");
    let (s, _) = w.audit.get_json_as("/api/v1/audit/events?tenant_id=A", "forged-session").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Revoking the auditor grant stops reads at once.
    let id = g["grant"]["id"].as_str().expect("id").to_string();
    assert_eq!(w.revoke_on(&w.rbac, &id).await.0, StatusCode::OK);
    let (s, _) = w.audit.get_json_as("/api/v1/audit/events?tenant_id=A", &session).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}
