//! A replayed service token (issue 16 item 10): a writer's token, captured after one append,
//! writes nothing more — neither another event nor the same one again; reads may reuse theirs.

use crate::support::{Audit, event};
use serde_json::json;

async fn events(a: &Audit, tenant: &str, reader: &str) -> Vec<serde_json::Value> {
    let (s, page) = a.app.get_json_as(&format!("/api/v1/audit/events?tenant_id={tenant}&limit=100"), reader).await;
    assert_eq!(s.as_u16(), 200, "{page}");
    page["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_replayed_writer_token_is_refused_and_writes_nothing() {
    let a = Audit::start().await;
    let token = a.writer();
    let first = event("t1", 1);
    let (s, _) = a.app.post_json_as("/api/v1/audit/events", &token, &first).await;
    assert_eq!(s.as_u16(), 201);

    // The captured token with a forged event, with the same event, and on the batch route.
    let forged = event("t1", 2);
    for (path, body) in [
        ("/api/v1/audit/events", forged.clone()),
        ("/api/v1/audit/events", first.clone()),
        ("/api/v1/audit/events/batch", json!({"events": [forged.clone()]})),
    ] {
        let (s, body) = a.app.post_json_as(path, &token, &body).await;
        assert_eq!((s.as_u16(), body["error"]["code"].as_str()), (401, Some("token_replayed")), "{path}: {body}");
    }

    // Nothing changed: one event, and the chain still verifies at seq 1. The reader's token is
    // reused on purpose: reads may.
    let reader = a.reader();
    let stored = events(&a, "t1", &reader).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["id"], first["id"]);
    let (s, report) = a.app.get_json_as("/api/v1/audit/verify?tenant_id=t1", &reader).await;
    assert_eq!((s.as_u16(), report["verified_through_seq"].as_i64()), (200, Some(1)), "{report}");

    // A fresh token (new jti) from the same writer writes as usual.
    let (s, body) = a.app.post_json_as("/api/v1/audit/events", &a.writer(), &forged).await;
    assert_eq!((s.as_u16(), body["seq"].as_i64()), (201, Some(2)), "{body}");
}
