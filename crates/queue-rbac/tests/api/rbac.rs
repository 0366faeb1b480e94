//! Roles, grants and checks against the real audit service.

use crate::support::{World, global, spawn_rbac, tenant, ticket};
use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

fn id(v: &Value) -> String {
    v["grant"]["id"].as_str().expect("grant id").to_string()
}

#[tokio::test]
async fn check_matrix_scope_by_permission_by_state() {
    let w = World::start().await;
    let expiry = (Utc::now() + chrono::Duration::milliseconds(1500)).to_rfc3339();
    let scopes = [("global", global()), ("tenant", tenant("A")), ("ticket", ticket("A", "1"))];
    let mut grants = std::collections::HashMap::new();
    for (name, scope) in &scopes {
        for state in ["active", "expired", "revoked"] {
            let principal = format!("{name}-{state}");
            let exp = (state == "expired").then_some(expiry.as_str());
            let g = w.grant(&principal, "agent", scope.clone(), exp).await;
            if state == "revoked" {
                let (s, v) = w.revoke_on(&w.rbac, &id(&g)).await;
                assert_eq!(s, StatusCode::OK, "{v}");
            }
            grants.insert(principal, id(&g));
        }
    }
    // Let the expiring grants expire.
    let until = DateTime::parse_from_rfc3339(&expiry).expect("time").with_timezone(&Utc);
    tokio::time::sleep((until - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(200)).await;

    // resource name, tenant, ticket
    let resources = [
        ("same tenant", "A", None),
        ("its ticket", "A", Some("1")),
        ("other tenant", "B", None),
        ("other ticket", "A", Some("2")),
    ];
    let expected_active = |scope: &str, resource: &str| match (scope, resource) {
        ("global", _) => true,
        ("tenant", r) => r != "other tenant",
        ("ticket", r) => r == "its ticket",
        _ => false,
    };
    let mut table = Vec::new();
    for (scope, _) in &scopes {
        for state in ["active", "expired", "revoked"] {
            let principal = format!("{scope}-{state}");
            for (rname, t, k) in resources {
                for permission in ["ticket.write", "audit.read"] {
                    let v = w.check_on(&w.rbac, &principal, permission, t, k).await;
                    let allowed = v["allowed"].as_bool().expect("allowed");
                    let want = state == "active" && permission == "ticket.write" && expected_active(scope, rname);
                    table.push(format!("{scope:>7} {state:>8} {rname:>13} {permission:>13} -> {allowed}"));
                    assert_eq!(allowed, want, "{scope} grant, {state}, {rname}, {permission}: {v}");
                    let ids: Vec<&str> =
                        v["grant_ids"].as_array().expect("ids").iter().filter_map(Value::as_str).collect();
                    if want {
                        assert_eq!(ids, vec![grants[&principal].as_str()], "the answer names the grant");
                    } else {
                        assert!(ids.is_empty());
                    }
                }
            }
        }
    }
    assert_eq!(table.len(), 3 * 3 * 4 * 2);
}

#[tokio::test]
async fn batch_checks_answer_in_order_at_one_revision() {
    let w = World::start().await;
    w.grant("u1", "viewer", tenant("A"), None).await;
    let checks: Vec<Value> = ["A", "B", "A"]
        .iter()
        .zip(["ticket.read", "ticket.read", "ticket.write"])
        .map(|(t, p)| json!({"principal_id": "u1", "permission": p, "resource": {"tenant_id": t}}))
        .collect();
    let (s, v) = w.rbac.post_json_as("/api/v1/rbac/check/batch", &w.admin(), &json!({"checks": checks})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let allowed: Vec<bool> = v["results"].as_array().expect("results").iter().map(|r| r["allowed"] == true).collect();
    assert_eq!(allowed, vec![true, false, false]);
    assert!(v["revision"].as_i64() > Some(0));
}

#[tokio::test]
async fn with_audit_down_grant_and_revoke_answer_503_and_change_nothing() {
    let w = World::start().await;
    let g = w.grant("p1", "viewer", tenant("A"), None).await;
    // The grant's audit event was committed before the grant: it is in the log, carrying the
    // whole grant, and was recorded before the database row was written.
    let events = w.audit_events("A").await;
    let event = events.iter().find(|e| e["id"] == g["audit_event_id"]).expect("audit event in the log");
    assert_eq!(event["action"], "rbac.grant.created");
    let payload = &event["payload"];
    assert_eq!(payload["grant"]["id"], g["grant"]["id"]);
    assert_eq!(payload["grant"]["principal_id"], "p1");
    let recorded = DateTime::parse_from_rfc3339(event["recorded_at"].as_str().expect("recorded")).expect("time");
    #[derive(diesel::QueryableByName)]
    struct At {
        #[diesel(sql_type = diesel::sql_types::Timestamptz)]
        at: DateTime<Utc>,
    }
    let row_written: At = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(
            "SELECT changed_at AS at FROM rbac.rbac_grants_shadow WHERE new_row->>'id' = $1 AND operation = 'INSERT'",
        )
        .bind::<diesel::sql_types::Text, _>(id(&g)),
        &mut w.sql().await,
    )
    .await
    .expect("shadow row");
    assert!(recorded < row_written.at, "audit {recorded} before grant {}", row_written.at);

    let grants_before = w.scalar("SELECT count(*) AS n FROM rbac.rbac_grants").await;
    let revision_before = w.scalar("SELECT revision AS n FROM rbac.rbac_revision").await;
    w.audit.stop().await;
    let body = json!({"principal_id": "p2", "role": "viewer", "scope": tenant("A"), "reason": "while audit is down"});
    let (s, v) = w.rbac.post_json_as("/api/v1/rbac/grants", &w.admin(), &body).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or("").contains("nothing was changed"), "{v}");
    let (s, v) = w.revoke_on(&w.rbac, &id(&g)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(w.scalar("SELECT count(*) AS n FROM rbac.rbac_grants").await, grants_before);
    assert_eq!(w.scalar("SELECT count(*) AS n FROM rbac.rbac_grants WHERE revoked_at IS NOT NULL").await, 0);
    assert_eq!(w.scalar("SELECT revision AS n FROM rbac.rbac_revision").await, revision_before);
    assert!(w.allowed("p1", "ticket.read", "A", None).await, "the grant still holds");
    assert!(!w.allowed("p2", "ticket.read", "A", None).await, "no grant was made");
}

#[tokio::test]
async fn a_revoke_is_seen_by_the_very_next_check_on_another_replica() {
    let w = World::start().await;
    let second = w.replica().await;
    let under_lease = counter(&second, "queue_rbac_freshness_total{via=\"lease\"}").await;
    for round in 0..25 {
        let principal = format!("r{round}");
        let g = w.grant(&principal, "agent", tenant("A"), None).await;
        // The second replica has the principal cached as allowed ...
        let before = w.check_on(&second, &principal, "ticket.write", "A", None).await;
        assert_eq!(before["allowed"], true, "round {round}: {before}");
        // ... the first revokes; the very next check on the second denies.
        let (s, v) = w.revoke_on(&w.rbac, &id(&g)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let after = w.check_on(&second, &principal, "ticket.write", "A", None).await;
        assert_eq!(after["allowed"], false, "round {round}: revoked at {} but {after}", v["revision"]);
        assert!(after["revision"].as_i64() >= v["revision"].as_i64(), "answer reflects the revoke's revision");
        if round == 0 {
            // Give both replicas time to hold their leases: the later rounds test that path.
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
    let under_lease = counter(&second, "queue_rbac_freshness_total{via=\"lease\"}").await - under_lease;
    assert!(under_lease > 0.0, "the second replica answered under its lease (not only through the fence)");
}

#[tokio::test]
async fn a_change_made_by_hand_invalidates_caches_and_shows_up_in_reconcile() {
    let w = World::start().await;
    let second = w.replica().await;
    let g = w.grant("h1", "agent", tenant("A"), None).await;
    w.grant("h2", "viewer", ticket("A", "7"), None).await;
    assert!(w.check_on(&second, "h1", "ticket.write", "A", None).await["allowed"] == true);
    let (s, clean) = w.rbac.get_json_as("/api/v1/rbac/reconcile", &w.admin()).await;
    assert_eq!(s, StatusCode::OK, "{clean}");
    assert!(clean["checked"].as_i64() >= Some(2), "{clean}");
    assert_eq!(clean["unaudited"], json!([]), "changes made through the service are all audited");

    // Someone with database access revokes by hand, bypassing the service and its audit.
    w.exec(&format!("UPDATE rbac.rbac_grants SET revoked_at = now(), revoked_by = 'psql' WHERE id = '{}'", id(&g)))
        .await;
    // A change by hand is not waited for like one through the service: each replica applies it
    // from the notification, at the latest at its next lease renewal (a quarter of 2 s).
    for app in [&second, &w.rbac] {
        let mut denied = false;
        for _ in 0..200 {
            if w.check_on(app, "h1", "ticket.write", "A", None).await["allowed"] == false {
                denied = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(denied, "the cache was invalidated by the change made by hand");
    }

    let (s, report) = w.rbac.get_json_as("/api/v1/rbac/reconcile", &w.admin()).await;
    assert_eq!(s, StatusCode::OK);
    let unaudited = report["unaudited"].as_array().expect("list");
    assert_eq!(unaudited.len(), 1, "{report}");
    assert_eq!(unaudited[0]["table"], "rbac_grants");
    assert_eq!(unaudited[0]["operation"], "UPDATE");
    assert_eq!(unaudited[0]["new_row"]["id"].as_str(), Some(id(&g).as_str()));
    assert_eq!(unaudited[0]["old_row"]["revoked_at"], Value::Null);
    assert!(unaudited[0]["db_user"].as_str().is_some());
}

#[tokio::test]
async fn history_at_an_instant_and_who_reaches_a_ticket() {
    let w = World::start().await;
    let old = w.grant("p-old", "viewer", tenant("A"), None).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    w.revoke_on(&w.rbac, &id(&old)).await;
    let newer = w.grant("p-new", "agent", ticket("A", "9"), None).await;
    let glob = w.grant("p-global", "auditor", global(), None).await;
    w.grant("p-elsewhere", "agent", ticket("A", "10"), None).await;

    let at = urlencode(&between.to_rfc3339());
    let (s, then) = w.rbac.get_json_as(&format!("/api/v1/rbac/grants?tenant_id=A&at={at}"), &w.admin()).await;
    assert_eq!(s, StatusCode::OK, "{then}");
    let ids = |v: &Value| -> Vec<String> {
        v["grants"].as_array().expect("grants").iter().map(|g| g["id"].as_str().unwrap_or("").to_string()).collect()
    };
    assert_eq!(ids(&then), vec![id(&old)], "at that instant only the old grant was in force");
    let (_, now) = w.rbac.get_json_as("/api/v1/rbac/grants?tenant_id=A", &w.admin()).await;
    assert!(ids(&now).contains(&id(&newer)) && !ids(&now).contains(&id(&old)));

    let (s, reach) = w.rbac.get_json_as("/api/v1/rbac/tenants/A/tickets/9/principals", &w.admin()).await;
    assert_eq!(s, StatusCode::OK, "{reach}");
    let who: Vec<&str> =
        reach["principals"].as_array().expect("p").iter().filter_map(|p| p["principal_id"].as_str()).collect();
    assert_eq!(who, vec!["p-global", "p-new"], "{reach}");
    let p_new = &reach["principals"][1];
    assert_eq!(p_new["grants"][0]["id"].as_str(), Some(id(&newer).as_str()));
    assert!(p_new["permissions"].as_array().expect("perms").contains(&json!("ticket.write")));
    let (_, readers) =
        w.rbac.get_json_as("/api/v1/rbac/tenants/A/tickets/9/principals?permission=audit.read", &w.admin()).await;
    assert_eq!(readers["principals"][0]["grants"][0]["id"].as_str(), Some(id(&glob).as_str()));
    assert_eq!(readers["principals"].as_array().map(Vec::len), Some(1));
    let (_, before) =
        w.rbac.get_json_as(&format!("/api/v1/rbac/tenants/A/tickets/9/principals?at={at}"), &w.admin()).await;
    let who: Vec<&str> =
        before["principals"].as_array().expect("p").iter().filter_map(|p| p["principal_id"].as_str()).collect();
    assert_eq!(who, vec!["p-old"]);
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn an_expired_grant_is_written_to_the_audit_log_once() {
    let w = World::start().await;
    let _second = w.replica().await;
    let expires = (Utc::now() + chrono::Duration::milliseconds(800)).to_rfc3339();
    let g = w.grant("e1", "viewer", tenant("E"), Some(&expires)).await;
    assert!(w.allowed("e1", "ticket.read", "E", None).await);
    let mut expired = Vec::new();
    for _ in 0..100 {
        expired = w.audit_events("E").await.into_iter().filter(|e| e["action"] == "rbac.grant.expired").collect();
        if !expired.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(expired.len(), 1, "one expiry event, though two replicas run the job");
    assert_eq!(expired[0]["target"]["id"].as_str(), Some(id(&g).as_str()));
    assert!(!w.allowed("e1", "ticket.read", "E", None).await, "expired grants stop counting");
    // A few more rounds of both replicas' jobs add nothing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let again = w.audit_events("E").await.into_iter().filter(|e| e["action"] == "rbac.grant.expired").count();
    assert_eq!(again, 1);
    let (_, report) = w.rbac.get_json_as("/api/v1/rbac/reconcile", &w.admin()).await;
    assert_eq!(report["unaudited"], json!([]), "the expiry bookkeeping is audited too: {report}");
}

#[tokio::test]
async fn bad_input_names_the_field_and_changes_nothing() {
    let w = World::start().await;
    // What the document's schema refuses: 422 naming the field.
    let cases = [
        (json!({"principal_id": "p", "role": "No Such", "scope": tenant("A"), "reason": "x"}), "role"),
        (json!({"principal_id": "p", "role": "viewer", "scope": tenant("A"), "reason": " "}), "reason"),
        (json!({"principal_id": "p", "role": "viewer", "scope": tenant("A"), "reason": "a\u{0}b"}), "reason"),
        (json!({"principal_id": "a b", "role": "viewer", "scope": tenant("A"), "reason": "x"}), "principal_id"),
        (json!({"principal_id": "p", "role": "viewer", "scope": tenant("A,B"), "reason": "x"}), "scope.tenant_id"),
    ];
    for (body, field) in cases {
        let (s, v) = w.rbac.post_json_as("/api/v1/rbac/grants", &w.admin(), &body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    // What depends on state (the stored roles, the clock): 404 and 409, as the error policy says.
    let (s, v) = w
        .rbac
        .post_json_as(
            "/api/v1/rbac/grants",
            &w.admin(),
            &json!({"principal_id": "p", "role": "nope", "scope": tenant("A"), "reason": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "an unknown role: {v}");
    let past = json!({"principal_id": "p", "role": "viewer", "scope": tenant("A"), "reason": "x", "expires_at": "2001-01-01T00:00:00Z"});
    let (s, v) = w.rbac.post_json_as("/api/v1/rbac/grants", &w.admin(), &past).await;
    assert_eq!(s, StatusCode::CONFLICT, "an expiry in the past: {v}");
    // A scope carries the ids its type needs and nothing else.
    let global_with_tenant =
        json!({"principal_id": "p", "role": "viewer", "scope": {"type": "global", "tenant_id": "A"}, "reason": "x"});
    let (s, v) = w.rbac.post_json_as("/api/v1/rbac/grants", &w.admin(), &global_with_tenant).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (s, _) = w
        .rbac
        .post_json_as(
            "/api/v1/rbac/grants",
            &w.admin(),
            &json!({"principal_id": "p", "role": "viewer", "scope": {"type": "planet"}, "reason": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "an unknown scope type");
    let (s, _) = w
        .rbac
        .post_json_as(
            "/api/v1/rbac/check",
            &w.admin(),
            &json!({"principal_id": "p", "permission": "Ticket", "resource": {"tenant_id": "A"}}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(w.scalar("SELECT count(*) AS n FROM rbac.rbac_grants").await, 0);
    assert!(w.audit_events("A").await.is_empty(), "nothing was audited either");
    // Unknown grant; twice revoked.
    let (s, _) = w.revoke_on(&w.rbac, "6f1c2d7e-0000-4000-8000-000000000001").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let g = w.grant("p", "viewer", tenant("A"), None).await;
    assert_eq!(w.revoke_on(&w.rbac, &id(&g)).await.0, StatusCode::OK);
    assert_eq!(w.revoke_on(&w.rbac, &id(&g)).await.0, StatusCode::CONFLICT);
}

#[tokio::test]
async fn custom_roles_belong_to_their_tenant() {
    let w = World::start().await;
    let role = json!({"name": "triage", "tenant_id": "A", "permissions": ["ticket.read", "ticket.write"], "description": "first line"});
    let (s, v) = w.rbac.post_json_as("/api/v1/rbac/roles", &w.admin(), &role).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = w.rbac.post_json_as("/api/v1/rbac/roles", &w.admin(), &role).await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, v) = w
        .rbac
        .post_json_as(
            "/api/v1/rbac/roles",
            &w.admin(),
            &json!({"name": "x", "tenant_id": "A", "permissions": ["made.up"]}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a permission that does not exist: {v}");
    w.grant("c1", "triage", ticket("A", "5"), None).await;
    assert!(w.allowed("c1", "ticket.write", "A", Some("5")).await);
    let body = json!({"principal_id": "c2", "role": "triage", "scope": tenant("B"), "reason": "x"});
    let (s, v) = w.rbac.post_json_as("/api/v1/rbac/grants", &w.admin(), &body).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "tenant B has no role `triage`: {v}");
    let (_, roles) = w.rbac.get_json_as("/api/v1/rbac/roles?tenant_id=A", &w.admin()).await;
    let names: Vec<&str> =
        roles["roles"].as_array().expect("roles").iter().filter_map(|r| r["name"].as_str()).collect();
    assert!(names.contains(&"triage") && names.contains(&"security_admin"), "{names:?}");
    let (_, roles_b) = w.rbac.get_json_as("/api/v1/rbac/roles?tenant_id=B", &w.admin()).await;
    assert!(!roles_b.to_string().contains("triage"));
    assert_eq!(w.audit_events("A").await.iter().filter(|e| e["action"] == "rbac.role.created").count(), 1);
}

#[tokio::test]
async fn services_need_the_right_scope() {
    let w = World::start().await;
    let checker_only = w.keys.token("proxy", "rbac", &["rbac:check"]);
    let body = json!({"principal_id": "p", "role": "viewer", "scope": tenant("A"), "reason": "x"});
    let (s, _) = w.rbac.post_json_as("/api/v1/rbac/grants", &checker_only, &body).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let no_scope = w.keys.token("raptor", "rbac", &[]);
    let (s, _) = w
        .rbac
        .post_json_as(
            "/api/v1/rbac/check",
            &no_scope,
            &json!({"principal_id": "p", "permission": "ticket.read", "resource": {"tenant_id": "A"}}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = w.rbac.post_json_as("/api/v1/rbac/check", "", &json!({})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_change_that_fails_after_its_audit_event_is_compensated() {
    let w = World::start().await;
    // The database refuses this one grant after the audit event has been written.
    w.exec(
        "CREATE FUNCTION rbac.test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
           IF NEW.principal_id = 'boom' THEN RAISE EXCEPTION 'refused for the test'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER test_refuse BEFORE INSERT ON rbac.rbac_grants FOR EACH ROW EXECUTE FUNCTION rbac.test_refuse();",
    )
    .await;
    let body = json!({"principal_id": "boom", "role": "viewer", "scope": tenant("C"), "reason": "doomed"});
    let (s, v) = w.rbac.post_json_as("/api/v1/rbac/grants", &w.admin(), &body).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(w.scalar("SELECT count(*) AS n FROM rbac.rbac_grants").await, 0);
    let mut events = Vec::new();
    for _ in 0..50 {
        events = w.audit_events("C").await;
        if events.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let actions: Vec<&str> = events.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(actions, vec!["rbac.grant.created", "rbac.change.aborted"], "{events:?}");
    assert_eq!(events[1]["payload"]["aborted_event_id"], events[0]["id"], "the compensation names the event");
    assert!(!w.allowed("boom", "ticket.read", "C", None).await);
}

#[tokio::test]
async fn a_grant_lands_in_the_audit_chain_with_the_requests_trace_id() {
    let w = World::start().await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let body = json!({"principal_id": "t1", "role": "viewer", "scope": tenant("T"), "reason": "traced"});
    let r = w
        .rbac
        .client
        .post(w.rbac.url("/api/v1/rbac/grants"))
        .bearer_auth(w.admin())
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers().get("x-trace-id").and_then(|v| v.to_str().ok()), Some(trace));
    let v: Value = r.json().await.expect("json");
    let events = w.audit_events("T").await;
    let event = events.iter().find(|e| e["id"] == v["audit_event_id"]).expect("event");
    assert_eq!(event["trace_id"], trace);
    let token = w.keys.token("raptor", "audit", &["audit:read"]);
    let (_, report) = w.audit.get_json_as("/api/v1/audit/verify?tenant_id=T", &token).await;
    assert_eq!(report["ok"], true, "{report}");
}

#[tokio::test]
async fn the_service_role_cannot_delete_or_rewrite_grants() {
    use diesel_async::SimpleAsyncConnection;
    let w = World::start().await;
    let g = w.grant("p", "agent", tenant("A"), None).await;
    let mut c = w.sql().await;
    c.batch_execute(&format!("SET ROLE {}", queue_rbac::APP_ROLE)).await.expect("set role");
    for sql in [
        format!("DELETE FROM rbac.rbac_grants WHERE id = '{}'", id(&g)),
        format!("UPDATE rbac.rbac_grants SET principal_id = 'mallory' WHERE id = '{}'", id(&g)),
        "UPDATE rbac.rbac_role_permissions SET permission = 'security.manage'".to_string(),
        "DELETE FROM rbac.rbac_grants_shadow".to_string(),
        "TRUNCATE rbac.rbac_changes".to_string(),
    ] {
        let err = c.batch_execute(&sql).await.expect_err(&sql);
        assert!(err.to_string().contains("permission denied"), "{sql}: {err}");
    }
}

/// A counter's value in a replica's /metrics: `name{label,...}` (other labels ignored).
async fn counter(app: &queue_testkit::TestApp, series: &str) -> f64 {
    let (name, label) = series.trim_end_matches('}').split_once('{').expect("name{label}");
    let text = app.client.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn with_a_live_lease_checks_skip_the_revision_read_and_without_one_they_do_not() {
    let w = World::start().await;
    w.grant("l1", "agent", tenant("A"), None).await;
    // The lease is renewed at start-up; until then checks read the revision.
    let mut via_lease = false;
    for _ in 0..200 {
        assert!(w.allowed("l1", "ticket.write", "A", None).await);
        if counter(&w.rbac, "queue_rbac_freshness_total{via=\"lease\"}").await > 0.0 {
            via_lease = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(via_lease, "checks are answered under the replica's lease");
    let n = w.scalar("SELECT count(*) AS n FROM rbac.rbac_replicas WHERE lease_until > clock_timestamp()").await;
    assert_eq!(n, 1, "one replica holds a live lease");

    let unleased = spawn_rbac(&w.keys, &w.rbac_db, &w.audit, |c| c.cache.lease_ms = 0).await;
    for _ in 0..5 {
        assert_eq!(w.check_on(&unleased, "l1", "ticket.write", "A", None).await["allowed"], true);
    }
    assert_eq!(counter(&unleased, "queue_rbac_freshness_total{via=\"lease\"}").await, 0.0);
    assert!(counter(&unleased, "queue_rbac_freshness_total{via=\"fence\"}").await >= 5.0);
}

#[tokio::test]
async fn a_change_returns_only_once_every_replica_with_a_live_lease_has_applied_it() {
    let w = World::start().await;
    let g = w.grant("l2", "agent", tenant("A"), None).await;
    // A replica that holds a lease but has applied nothing (stopped, or cut off from the
    // database): the revoke must outwait its lease, which then no longer lets it answer.
    let silent = uuid::Uuid::new_v4();
    w.exec(&format!(
        "INSERT INTO rbac.rbac_replicas (replica_id, applied_revision, lease_until, renewed_at)
         VALUES ('{silent}', 0, clock_timestamp() + interval '1500 milliseconds', clock_timestamp())"
    ))
    .await;
    let (s, v) = w.revoke_on(&w.rbac, &id(&g)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let ended = w
        .scalar(&format!(
            "SELECT count(*) AS n FROM rbac.rbac_replicas WHERE replica_id = '{silent}' AND lease_until <= clock_timestamp()"
        ))
        .await;
    assert_eq!(ended, 1, "the revoke returned only after the silent replica's lease ended");
    // The live replica (the one that revoked) recorded the revision before answering.
    let behind = w
        .scalar(&format!(
            "SELECT count(*) AS n FROM rbac.rbac_replicas
             WHERE lease_until > clock_timestamp() AND applied_revision < {}",
            v["revision"]
        ))
        .await;
    assert_eq!(behind, 0, "{v}");
    assert!(!w.allowed("l2", "ticket.write", "A", None).await);
}

#[tokio::test]
async fn a_failing_query_is_an_opaque_500_and_an_unreachable_database_a_503() {
    let w = World::start().await;
    let reader = w.keys.token("raptor", "rbac", &["rbac:read"]);
    let (s, v) = w.rbac.get_json_as("/api/v1/rbac/roles", &reader).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // The database answers, but refuses the query: a bug of ours, not an outage.
    w.exec("REVOKE SELECT ON rbac.rbac_roles FROM queue_rbac_app").await;
    let (s, v) = w.rbac.get_json_as("/api/v1/rbac/roles", &reader).await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR, "{v}");
    assert_eq!(
        (v["error"]["code"].as_str(), v["error"]["message"].as_str()),
        (Some("internal"), Some("internal error"))
    );
    // The database is gone: unavailable.
    w.rbac_db.drop_now().await;
    let (s, v) = w.rbac.get_json_as("/api/v1/rbac/roles", &reader).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "unavailable", "{v}");
}
