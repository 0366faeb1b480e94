//! Provisioning users: `POST /internal/v1/users` (service token, scope `users:write`).

use serde_json::json;

use crate::support::Auth;

#[tokio::test]
async fn raptor_provisions_a_user_once_with_a_normalised_email() {
    let auth = Auth::start().await;
    // A token per provisioning call: a write spends its token.
    let raptor = || auth.app.token("raptor", &["users:write"]);
    let body = json!({"email": "  Ada@Example.COM ", "tenant_id": "t1", "display_name": "Ada", "email_verified": true});
    let (s, user) = auth.post("/internal/v1/users", Some(&raptor()), &body).await;
    assert_eq!(s, 201, "{user}");
    assert_eq!(user["email"], "ada@example.com");
    assert_eq!((user["tenant_id"].as_str(), user["status"].as_str()), (Some("t1"), Some("active")));
    assert!(user["email_verified_at"].is_string());
    assert_eq!(user["display_name"], "Ada");

    // Again (a retry of Raptor's migration): the same user, 200, nothing new.
    let (s, again) =
        auth.post("/internal/v1/users", Some(&raptor()), &json!({"email": "ada@example.com", "tenant_id": "t1"})).await;
    assert_eq!((s.as_u16(), &again["id"]), (200, &user["id"]));
    // The same address in another tenant is another user.
    let (s, other) =
        auth.post("/internal/v1/users", Some(&raptor()), &json!({"email": "ada@example.com", "tenant_id": "t2"})).await;
    assert_eq!(s, 201);
    assert_ne!(other["id"], user["id"]);

    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.users").await, 2);
    // The shadow table saw both inserts, and the outbox holds one event per new user.
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.users_shadow WHERE operation = 'INSERT'").await, 2);
    assert_eq!(
        auth.scalar("SELECT count(*) AS n FROM auth.audit_outbox WHERE event->>'action' = 'auth.user.created' AND event->'actor'->>'id' = 'raptor'").await,
        2
    );
}

#[tokio::test]
async fn provisioning_needs_the_scope_and_an_allowed_issuer() {
    let auth = Auth::start().await;
    let body = json!({"email": "a@example.com"});
    let (s, _) = auth.post("/internal/v1/users", None, &body).await;
    assert_eq!(s, 401);
    let (s, _) = auth.post("/internal/v1/users", Some(&auth.app.token("raptor", &[])), &body).await;
    assert_eq!(s, 403);
    let (s, _) = auth.post("/internal/v1/users", Some(&auth.app.token("proxy", &["users:write"])), &body).await;
    assert_eq!(s, 403);
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.users").await, 0);
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let auth = Auth::start().await;
    // A token per provisioning call: a write spends its token.
    let raptor = || auth.app.token("raptor", &["users:write"]);
    for (body, field) in [
        (json!({"email": "not-an-email"}), "email"),
        (json!({"email": "a@b"}), "email"),
        (json!({"email": "a b@example.com"}), "email"),
        (json!({"email": "a@example.com", "tenant_id": "bad tenant"}), "tenant_id"),
    ] {
        let (s, v) = auth.post("/internal/v1/users", Some(&raptor()), &body).await;
        assert_eq!((s.as_u16(), v["error"]["field"].as_str()), (422, Some(field)), "{body}: {v}");
    }
    let (s, v) =
        auth.post("/internal/v1/users", Some(&raptor()), &json!({"email": "a@example.com", "colour": 1})).await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.users").await, 0);
}
