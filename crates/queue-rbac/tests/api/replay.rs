//! A replayed service token on rbac (issue 16 item 10): Raptor's token, captured after one
//! grant, grants, revokes and creates nothing more; checks (read-only POSTs) may reuse it.

use crate::support::{World, tenant};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn grant_body(principal: &str) -> Value {
    json!({"principal_id": principal, "role": "agent", "scope": tenant("A"), "reason": "test"})
}

#[tokio::test]
async fn a_replayed_grant_token_is_refused_and_changes_nothing() {
    let w = World::start().await;
    let token = w.admin();
    let (s, first) = w.rbac.post_json_as("/api/v1/rbac/grants", &token, &grant_body("ada")).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let first_id = first["grant"]["id"].as_str().expect("id").to_string();

    // The captured token: another grant, the same grant again, a revoke of the first.
    for body in [grant_body("mallory"), grant_body("ada")] {
        let (s, v) = w.rbac.post_json_as("/api/v1/rbac/grants", &token, &body).await;
        assert_eq!((s, v["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("token_replayed")), "{v}");
    }
    let r = w
        .rbac
        .client
        .delete(w.rbac.url(&format!("/api/v1/rbac/grants/{first_id}")))
        .bearer_auth(&token)
        .json(&json!({"reason": "replayed"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Checks only read: the same token answers them again and again.
    for _ in 0..3 {
        let body = json!({"principal_id": "ada", "permission": "ticket.read", "resource": {"tenant_id": "A"}});
        let (s, v) = w.rbac.post_json_as("/api/v1/rbac/check", &token, &body).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    // Nothing changed: one grant, still active; one grant event in the audit log.
    let (s, list) = w.rbac.get_json_as("/api/v1/rbac/grants?tenant_id=A&include_inactive=true", &w.admin()).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let grants = list["grants"].as_array().expect("grants");
    assert_eq!(grants.len(), 1, "{list}");
    assert_eq!(grants[0]["id"], first_id.as_str());
    assert!(grants[0]["revoked_at"].is_null(), "{list}");
    assert!(w.allowed("ada", "ticket.read", "A", None).await);
    assert!(!w.allowed("mallory", "ticket.read", "A", None).await);
}
