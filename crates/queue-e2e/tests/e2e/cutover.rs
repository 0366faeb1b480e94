//! The cutover as an operator runs it: backup codes served by legacy in phase 1, by Queue's auth
//! in phase 2, by legacy again after a rollback; and a grant made through the proxy lands in the
//! audit chain under the request's trace id.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Options, Stack};

const CODES: &str = "/api/v1/auth/backup-codes";
const REDEEM: &str = "/api/v1/auth/backup-codes/redeem";

/// The stand-in's echo: Raptor answered, and saw the path the client asked for.
fn assert_legacy(v: &Value, path: &str) {
    assert_eq!(v["server"], "raptor", "legacy answers: {v}");
    assert_eq!(v["path"], path, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phase_2_moves_backup_codes_to_queue_rollback_returns_them_and_grants_are_audited_with_the_trace() {
    let stack = Stack::start(Options::default()).await;
    let proxy = stack.proxy.base_url.clone();
    let email = "cutover@example.com";
    // Sign-in paths are pinned to Queue in this table: a real user with a passkey, via the proxy.
    let (session, _key) = stack.signed_in(&proxy, email).await;

    // Phase 1: legacy serves the backup-code paths.
    let (s, v) = stack.get(&proxy, CODES, Some(&session)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_legacy(&v, CODES);
    assert_eq!(v["method"], "GET");
    // Queue's session (a real one from auth, sent as a bearer) is not handed to the legacy side.
    assert!(v["headers"].get("authorization").is_none(), "Queue's session reached legacy: {v}");
    let (s, v) = stack.post(&proxy, REDEEM, None, &json!({"email": email, "code": "0000-0000-00000"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_legacy(&v, REDEEM);

    // Phase 2: Queue's auth serves them (FLAG_AUTH_BACKUP_CODES is on in its config).
    let change = stack.admin_post("/admin/phase", &json!({"phase": 2})).await;
    assert_eq!(change["phase"], 2, "{change}");
    let (s, v) = stack.get(&proxy, CODES, Some(&session)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v, json!({"remaining": 0}), "auth answers: the user has no codes yet");
    let (s, generated) = stack.post(&proxy, CODES, Some(&session), &json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{generated}");
    let codes: Vec<&str> = generated["codes"].as_array().expect("codes").iter().filter_map(Value::as_str).collect();
    assert_eq!(codes.len(), 10, "{generated}");
    let (s, redeemed) = stack.post(&proxy, REDEEM, None, &json!({"email": email, "code": codes[3]})).await;
    assert_eq!(s, StatusCode::OK, "{redeemed}");
    assert_eq!(redeemed["remaining"], 9, "{redeemed}");
    assert!(redeemed["session"]["token"].as_str().is_some(), "a recovery session: {redeemed}");
    let (s, v) = stack.post(&proxy, REDEEM, None, &json!({"email": email, "code": codes[3]})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a code is used once: {v}");

    // Rollback: the previous table (phase 1) comes back; legacy serves the paths again.
    let back = stack.admin_post("/admin/rollback", &json!({})).await;
    assert_eq!(back["phase"], 1, "{back}");
    // Both admin changes were written to the audit log first: who, from what table to what.
    let proxy_events: Vec<Value> = stack
        .audit_events("_platform")
        .await
        .into_iter()
        .filter(|e| e["action"].as_str().is_some_and(|a| a.starts_with("proxy.")))
        .collect();
    let seen: Vec<(&str, &str, &Value, &Value)> = proxy_events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or(""),
                e["actor"]["id"].as_str().unwrap_or(""),
                &e["payload"]["from"]["phase"],
                &e["payload"]["to"]["phase"],
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("proxy.phase.changed", "operator", &json!(1), &json!(2)),
            ("proxy.table.rolled_back", "operator", &json!(2), &json!(1)),
        ]
    );
    let recovery = redeemed["session"]["token"].as_str().expect("token");
    let (s, v) = stack.get(&proxy, CODES, Some(recovery)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_legacy(&v, CODES);

    // A grant through the proxy: rbac writes the audit event first, under the request's trace.
    // The trace starts at the proxy: a client's own traceparent is not continued (the proxy
    // trusts nobody in front of it here, as in deploy/local).
    let chosen = "5c1e7a9d3b2f4e6a8c0d1f2e3a4b5c6d";
    let r = stack.grant(&proxy, "agent-7", "T7", Some(&format!("00-{chosen}-a1b2c3d4e5f60718-01"))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let trace = r.headers().get("x-trace-id").and_then(|v| v.to_str().ok()).expect("x-trace-id").to_string();
    assert_eq!(trace.len(), 32, "{trace}");
    assert_ne!(trace, chosen, "the client does not choose the trace");
    let grant: Value = r.json().await.expect("json");
    let events = stack.audit_events("T7").await;
    let event = events
        .iter()
        .find(|e| e["id"] == grant["audit_event_id"])
        .unwrap_or_else(|| panic!("the grant's audit event {} is in the log: {events:?}", grant["audit_event_id"]));
    assert_eq!(event["action"], "rbac.grant.created", "{event}");
    assert_eq!(event["trace_id"], trace, "{event}");
    let report = stack.verify_chain("T7").await;
    assert_eq!(report["ok"], true, "{report}");
    assert!(stack.may_write(&proxy, "agent-7", "T7").await["allowed"] == true, "the grant is in force");
}
