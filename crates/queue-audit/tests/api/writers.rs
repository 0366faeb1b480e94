//! Writers cannot forge (issue 16, item 7): each writer issuer writes only the actions it owns
//! (`limits.writers`); anything else is 403 and the chain does not change.

use crate::support::{Audit, event, local_keys};
use queue_testkit::{TestKeys, checks};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_queue-audit");

fn as_action(tenant: &str, i: usize, action: &str) -> Value {
    let mut e = event(tenant, i);
    e["action"] = json!(action);
    e
}

#[tokio::test]
async fn each_writer_writes_only_its_own_actions_and_a_forged_one_changes_nothing() {
    let a = Audit::start().await;
    let token = |issuer: &str| a.app.token(issuer, &["audit:write"]);
    // What each writer owns goes in.
    for (i, (issuer, action)) in [
        ("auth", "auth.session.created"),
        ("rbac", "rbac.grant.created"),
        ("raptor", "raptor.login.ok"),
        ("raptor", "ticket.assigned"),
    ]
    .into_iter()
    .enumerate()
    {
        let (s, v) = a.app.post_json_as("/api/v1/audit/events", &token(issuer), &as_action("w", i, action)).await;
        assert_eq!(s.as_u16(), 201, "{issuer} writes {action}: {v}");
    }
    let head = a.verify("w").await;
    assert_eq!((head["ok"].as_bool(), head["events"].as_i64()), (Some(true), Some(4)), "{head}");

    // A forged action per writer: refused, named, and nothing is written.
    for (i, (issuer, action)) in [
        ("auth", "rbac.grant.created"),
        ("rbac", "auth.session.created"),
        ("raptor", "auth.login.failed"),
        ("raptor", "rbac.grant.created"),
        ("raptor", "audit.key.rotated"),
        ("auth", "authx.session.created"),
    ]
    .into_iter()
    .enumerate()
    {
        let (s, v) = a.app.post_json_as("/api/v1/audit/events", &token(issuer), &as_action("w", 10 + i, action)).await;
        assert_eq!(s.as_u16(), 403, "{issuer} forging {action}: {v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(action) && message.contains(issuer), "the refusal says what and who: {v}");
    }
    // A batch with one foreign action among its own: the whole batch is refused.
    let batch =
        json!({"events": [as_action("w", 20, "auth.session.created"), as_action("w", 21, "rbac.grant.revoked")]});
    let (s, v) = a.app.post_json_as("/api/v1/audit/events/batch", &token("auth"), &batch).await;
    assert_eq!(s.as_u16(), 403, "{v}");
    assert!(v["error"]["message"].as_str().unwrap_or_default().contains("events[1]."), "names the event: {v}");

    let after = a.verify("w").await;
    assert_eq!(after, head, "the chain did not change");
    let metrics = reqwest::get(a.app.url("/metrics")).await.expect("metrics").text().await.expect("text");
    let refused: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("queue_audit_refused_actions_total"))
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum();
    assert_eq!(refused, 7.0, "{metrics}");
}

#[tokio::test]
async fn a_writer_table_with_a_catch_all_or_an_empty_list_stops_start_up() {
    let keys = TestKeys::new();
    let dir = tempfile::tempdir().expect("tmp");
    let audit_keys = local_keys(dir.path());
    let key = keys.private("audit").display().to_string();
    let master = audit_keys.local_master_key.display().to_string();
    let checkpoint = audit_keys.local_checkpoint_key.display().to_string();
    let base = [
        ("QUEUE_SERVER__LISTEN", "127.0.0.1:0"),
        ("QUEUE_TOKENS__ISSUER", "audit"),
        ("QUEUE_TOKENS__SIGNING_KEY", key.as_str()),
        ("DATABASE_URL", "postgres://queue@127.0.0.1:1/queue"),
        ("QUEUE_KEYS__LOCAL_MASTER_KEY", master.as_str()),
        ("QUEUE_KEYS__LOCAL_CHECKPOINT_KEY", checkpoint.as_str()),
        ("QUEUE_LIMITS__READERS", r#"["raptor"]"#),
        ("QUEUE_LIMITS__PER_CALLER_RPS", "10"),
        ("QUEUE_LIMITS__PER_CALLER_BURST", "10"),
    ];
    for (writers, key) in [
        (r#"{auth = ["auth.*"], raptor = ["*"]}"#, "limits.writers.raptor"),
        (r#"{auth = ["auth*"]}"#, "limits.writers.auth"),
        (r#"{rbac = []}"#, "limits.writers.rbac"),
    ] {
        checks::config_error_names_key(BIN, &[&base[..], &[("QUEUE_LIMITS__WRITERS", writers)]].concat(), key);
    }
}
