//! The audit log: writing, idempotency, validation, tampering, RLS, append-only, concurrency.

use crate::support::{Audit, event, exec};
use queue_audit::config::ChainConfig;
use serde_json::json;

#[tokio::test]
async fn events_chain_and_verify() {
    let a = Audit::start().await;
    let written = a.write_n("t1", 5).await;
    let seqs: Vec<i64> = written.iter().map(|v| v["seq"].as_i64().expect("seq")).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let report = a.verify("t1").await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["verified_through_seq"], 5);
    // Another tenant has its own chain from seq 1.
    assert_eq!(a.write_n("t2", 1).await[0]["seq"], 1);
}

#[tokio::test]
async fn the_same_id_returns_the_first_result_and_other_content_conflicts() {
    let a = Audit::start().await;
    let e = event("t1", 1);
    let (s1, first) = a.write(&e).await;
    let (s2, again) = a.write(&e).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first, again);
    let mut changed = e.clone();
    changed["action"] = json!("auth.login.failed");
    let (s, body) = a.write(&changed).await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(a.verify("t1").await["verified_through_seq"], 1, "nothing added");
    // A stored id in a batch with a new one: the optimistic transaction rolls back on the
    // (tenant, id) index and goes again looking ids up; the stored one keeps its seq.
    let fresh = event("t1", 2);
    let (s, body) = a.app.post_json_as("/api/v1/audit/events/batch", &a.writer(), &json!({"events": [e, fresh]})).await;
    assert_eq!(s.as_u16(), 201, "{body}");
    assert_eq!(body["results"][0], first, "{body}");
    assert_eq!(body["results"][1]["seq"], 2, "{body}");
    let metrics = reqwest::get(a.app.url("/metrics")).await.expect("metrics").text().await.expect("text");
    let retried = metrics
        .lines()
        .find(|l| l.starts_with("queue_audit_append_retried_batches_total"))
        .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok());
    // The repeated write, the conflicting one and this batch each went the second way.
    assert_eq!(retried, Some(3.0), "{metrics}");
    let report = a.verify("t1").await;
    assert_eq!((report["ok"].as_bool(), report["events"].as_i64()), (Some(true), Some(2)), "{report}");
}

#[tokio::test]
async fn bad_input_names_the_field_and_writes_nothing() {
    let a = Audit::start().await;
    let mut e = event("t1", 1);
    e["occurred_at"] = json!("last tuesday");
    let (s, body) = a.write(&e).await;
    assert_eq!((s, body["error"]["field"].as_str()), (422, Some("occurred_at")));
    let mut e = event("t1", 1);
    e["payload"] = json!({"blob": "x".repeat(20_000)});
    assert_eq!(a.write(&e).await.0, 413);
    let mut bad = event("t2", 2);
    bad["tenant_id"] = json!("t,2");
    let (s, body) =
        a.app.post_json_as("/api/v1/audit/events/batch", &a.writer(), &json!({"events": [event("t1", 1), bad]})).await;
    assert_eq!((s.as_u16(), body["error"]["field"].as_str()), (422, Some("events[1].tenant_id")));
    assert_eq!(a.verify("t1").await["events"], 0);
}

/// A batch may mix tenants (the document cannot say "one tenant", so the service does not ask
/// it): each event extends its own tenant's chain, all in one transaction, and a conflict in
/// one tenant writes nothing in the other.
#[tokio::test]
async fn a_batch_of_several_tenants_extends_each_chain_atomically() {
    let a = Audit::start().await;
    a.write_n("t2", 2).await;
    let t2 = event("t2", 11);
    let batch = json!({"events": [event("t1", 10), t2.clone(), event("t1", 12)]});
    let (s, body) = a.app.post_json_as("/api/v1/audit/events/batch", &a.writer(), &batch).await;
    assert_eq!(s.as_u16(), 201, "{body}");
    let seqs: Vec<i64> =
        body["results"].as_array().expect("results").iter().map(|r| r["seq"].as_i64().expect("seq")).collect();
    assert_eq!(seqs, vec![1, 3, 2], "each tenant's own chain");
    let mut changed = t2;
    changed["action"] = json!("auth.login.failed");
    let (s, body) = a
        .app
        .post_json_as("/api/v1/audit/events/batch", &a.writer(), &json!({"events": [event("t1", 13), changed]}))
        .await;
    assert_eq!(s.as_u16(), 409, "{body}");
    // The same id twice in one batch: the same content is one event, other content a conflict.
    let twice = event("t3", 1);
    let (s, body) = a
        .app
        .post_json_as("/api/v1/audit/events/batch", &a.writer(), &json!({"events": [twice.clone(), twice.clone()]}))
        .await;
    assert_eq!(s.as_u16(), 201, "{body}");
    assert_eq!(body["results"][0], body["results"][1], "{body}");
    let mut other = event("t3", 2);
    other["id"] = twice["id"].clone();
    let (s, body) = a
        .app
        .post_json_as(
            "/api/v1/audit/events/batch",
            &a.writer(),
            &json!({"events": [event("t3", 3), other.clone(), other]}),
        )
        .await;
    assert_eq!(s.as_u16(), 409, "{body}");
    let fresh = event("t4", 1);
    let mut changed_twin = fresh.clone();
    changed_twin["action"] = json!("auth.login.failed");
    let (s, body) =
        a.app.post_json_as("/api/v1/audit/events/batch", &a.writer(), &json!({"events": [fresh, changed_twin]})).await;
    assert_eq!(s.as_u16(), 409, "an id twice with other content in one batch: {body}");
    for (tenant, events) in [("t1", 2), ("t2", 3), ("t3", 1), ("t4", 0)] {
        let report = a.verify(tenant).await;
        assert_eq!((report["ok"].as_bool(), report["events"].as_i64()), (Some(true), Some(events)), "{report}");
    }
}

#[tokio::test]
async fn callers_need_the_right_scope_and_issuer() {
    let a = Audit::start().await;
    let (s, _) = a.app.post_json_as("/api/v1/audit/events", &a.reader(), &event("t1", 1)).await;
    assert_eq!(s.as_u16(), 403, "a reader cannot write");
    // The operator (trusted in the test world, as the proxy's admin) writes no audit events.
    let operator = a.app.token("operator", &["audit:write"]);
    let (s, _) = a.app.post_json_as("/api/v1/audit/events", &operator, &event("t1", 1)).await;
    assert_eq!(s.as_u16(), 403, "operator is not a configured writer");
    let (s, _) = a.app.get_json_as("/api/v1/audit/verify?tenant_id=t1", &a.writer()).await;
    assert_eq!(s.as_u16(), 403, "a writer cannot read");
}

#[tokio::test]
async fn a_batch_is_one_round_trip_in_order() {
    let a = Audit::start().await;
    let events: Vec<_> = (0..50).map(|i| event("t1", i)).collect();
    let (s, body) = a.app.post_json_as("/api/v1/audit/events/batch", &a.writer(), &json!({"events": events})).await;
    assert_eq!(s.as_u16(), 201, "{body}");
    let seqs: Vec<i64> =
        body["results"].as_array().expect("results").iter().map(|r| r["seq"].as_i64().expect("seq")).collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    assert_eq!(a.verify("t1").await["ok"], true);
}

#[tokio::test]
async fn reads_filter_and_paginate() {
    let a = Audit::start().await;
    a.write_n("t1", 7).await;
    let mut failed = event("t1", 99);
    failed["action"] = json!("auth.login.failed");
    a.write(&failed).await;
    let (s, page) = a.app.get_json_as("/api/v1/audit/events?tenant_id=t1&limit=3", &a.reader()).await;
    assert_eq!(s.as_u16(), 200);
    assert_eq!(page["events"].as_array().expect("events").len(), 3);
    assert_eq!(page["next_after_seq"], 3);
    let (_, rest) = a.app.get_json_as("/api/v1/audit/events?tenant_id=t1&after_seq=3&limit=100", &a.reader()).await;
    assert_eq!(rest["events"][0]["seq"], 4);
    let (_, only) = a.app.get_json_as("/api/v1/audit/events?tenant_id=t1&action=auth.login.failed", &a.reader()).await;
    let only = only["events"].as_array().expect("events").clone();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["payload"]["n"], 99);
    let (s, _) = a.app.get_json_as("/api/v1/audit/events?tenant_id=t1&limit=0", &a.reader()).await;
    assert_eq!(s.as_u16(), 422);
}

/// Each kind of tampering, by someone holding the database, is reported with its first bad seq.
#[tokio::test]
async fn tampering_is_found_where_it_happened() {
    let cases: [(&str, &str, i64); 5] = [
        ("edit a field", "UPDATE audit.customer_audit_events SET actor_id = 'mallory' WHERE tenant_id = 't1' AND seq = 4", 4),
        ("delete a row", "DELETE FROM audit.customer_audit_events WHERE tenant_id = 't1' AND seq = 3", 3),
        ("swap two rows",
         "UPDATE audit.customer_audit_events SET seq = seq + 1000000 WHERE tenant_id = 't1' AND seq IN (5, 6);
          UPDATE audit.customer_audit_events SET seq = CASE seq WHEN 1000005 THEN 6 ELSE 5 END WHERE tenant_id = 't1' AND seq > 1000000", 5),
        ("change a key_id",
         "INSERT INTO audit.keys (epoch, provider, key_ref, encrypted_key) SELECT 2, provider, key_ref, encrypted_key FROM audit.keys WHERE epoch = 1;
          UPDATE audit.customer_audit_events SET key_id = 2 WHERE tenant_id = 't1' AND seq = 2", 2),
        ("edit the payload",
         "UPDATE audit.customer_audit_events SET payload_canonical = '{\"n\":1000}' WHERE tenant_id = 't1' AND seq = 7", 7),
    ];
    for (what, sql, bad) in cases {
        let a = Audit::start().await;
        a.write_n("t1", 8).await;
        assert_eq!(a.verify("t1").await["ok"], true, "{what}: untouched chain verifies");
        let mut db = a.attacker().await;
        exec(&mut db, sql).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let report = a.verify("t1").await;
        assert_eq!(report["ok"], false, "{what}: {report}");
        assert_eq!(report["first_bad_seq"], bad, "{what}: {report}");
        assert!(report["reason"].is_string());
    }
}

#[tokio::test]
async fn a_forged_row_appended_without_the_key_is_found() {
    let a = Audit::start().await;
    a.write_n("t1", 3).await;
    let mut db = a.attacker().await;
    exec(
        &mut db,
        "INSERT INTO audit.customer_audit_events
        (tenant_id, seq, event_id, actor_type, actor_id, action, target_type, target_id, occurred_at, recorded_at,
         payload_canonical, request_digest, prev_mac, mac, key_id)
        SELECT tenant_id, 4, gen_random_uuid(), 'user', 'mallory', 'grant.created', 'grant', 'g1', now(), now(),
               '{}', request_digest, mac, sha256(mac), key_id
        FROM audit.customer_audit_events WHERE tenant_id = 't1' AND seq = 3",
    )
    .await
    .expect("forge");
    let report = a.verify("t1").await;
    assert_eq!((report["ok"].as_bool(), report["first_bad_seq"].as_i64()), (Some(false), Some(4)), "{report}");
}

#[tokio::test]
async fn cutting_the_tail_after_a_checkpoint_is_found() {
    let chain =
        queue_audit::config::ChainConfig { checkpoint_every: 5, checkpoint_interval_secs: 1, ..Default::default() };
    let a = Audit::start_with(chain, |_| {}).await;
    a.write_n("t1", 10).await;
    // The checkpoint is signed off the request path; wait until it is there.
    assert_eq!(a.wait_for_checkpoint("t1", 10).await["seq"], 10);
    let mut db = a.attacker().await;
    exec(&mut db, "DELETE FROM audit.customer_audit_events WHERE tenant_id = 't1' AND seq > 7;
                   UPDATE audit.chain_heads SET seq = 7, mac = (SELECT mac FROM audit.customer_audit_events WHERE tenant_id = 't1' AND seq = 7)").await.expect("cut");
    let report = a.verify("t1").await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["first_bad_seq"], 8, "{report}");
    assert_eq!(report["checkpoint_seq"], 10);
}

#[derive(diesel::QueryableByName)]
struct N {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

async fn count(c: &mut diesel_async::AsyncPgConnection) -> i64 {
    use diesel_async::RunQueryDsl;
    diesel::sql_query("SELECT count(*) AS n FROM audit.customer_audit_events")
        .get_result::<N>(c)
        .await
        .expect("count")
        .n
}

#[tokio::test]
async fn row_level_security_scopes_reads_to_the_tenant_set() {
    let a = Audit::start().await;
    a.write_n("tenant-a", 2).await;
    a.write_n("tenant-b", 3).await;
    a.write_n("tenant-c", 4).await;
    let mut c = a.as_service_role().await;
    assert_eq!(count(&mut c).await, 0, "no tenant set: nothing");
    // A writer transaction's tenant list admits exactly the tenants listed.
    exec(&mut c, "SELECT set_config('queue.writer_tenants', 'tenant-a,tenant-c', false)").await.expect("set");
    assert_eq!(count(&mut c).await, 6, "the writer list sees a and c, none of b");
    exec(&mut c, "SELECT set_config('queue.writer_tenants', '', false)").await.expect("unset");
    assert_eq!(count(&mut c).await, 0, "an empty list: nothing");
    exec(&mut c, "SELECT set_config('queue.tenant_id', 'tenant-a', false)").await.expect("set");
    assert_eq!(count(&mut c).await, 2, "tenant a sees its own, none of b");
    // Writing into another tenant's chain is refused by the policy's WITH CHECK.
    let cross =
        exec(&mut c, "INSERT INTO audit.chain_heads (tenant_id, seq, mac) VALUES ('tenant-b', 99, '\\x00')").await;
    assert!(cross.expect_err("other tenant").to_string().contains("row-level security"));
    for sql in [
        "UPDATE audit.customer_audit_events SET actor_id = 'x'",
        "DELETE FROM audit.customer_audit_events",
        "TRUNCATE audit.customer_audit_events",
    ] {
        assert!(exec(&mut c, sql).await.is_err(), "the service role may not: {sql}");
    }
    assert_eq!(a.verify("tenant-a").await["ok"], true);
}

#[tokio::test]
async fn a_non_superuser_owner_cannot_update_or_delete_either() {
    let a = Audit::start().await;
    a.write_n("t1", 2).await;
    let mut db = a.attacker().await;
    exec(&mut db, "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'queue_test_ops') THEN CREATE ROLE queue_test_ops; END IF; END $$;
                   GRANT USAGE ON SCHEMA audit TO queue_test_ops;
                   GRANT ALL ON audit.customer_audit_events TO queue_test_ops;
                   ALTER TABLE audit.customer_audit_events NO FORCE ROW LEVEL SECURITY;
                   SET ROLE queue_test_ops;
                   SELECT set_config('queue.tenant_id', 't1', false)").await.expect("setup");
    for sql in [
        "DELETE FROM audit.customer_audit_events",
        "UPDATE audit.customer_audit_events SET actor_id = 'x'",
        "TRUNCATE audit.customer_audit_events",
    ] {
        let err = exec(&mut db, sql).await.expect_err("trigger refuses");
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_with_retries_lose_nothing_and_duplicate_nothing() {
    // Two writer tasks for four tenants: at least two tenants share a writer, so transactions
    // hold several tenants' events (group commit across tenants) while the shards run in parallel.
    let chain = ChainConfig { writers: 2, ..ChainConfig::default() };
    let a = std::sync::Arc::new(Audit::start_with(chain, |_| {}).await);
    let tenants = ["c1", "c2", "c3", "c4"];
    let mut tasks = Vec::new();
    for w in 0..32 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            let tenant = tenants[w % 4];
            let events: Vec<_> = (0..500).map(|i| event(tenant, i)).collect();
            let mut acked = Vec::new();
            for (i, e) in events.iter().enumerate() {
                // A token per write, as the audit client mints them: a write spends its token.
                let (s, v) = a.app.post_json_as("/api/v1/audit/events", &a.writer(), e).await;
                assert_eq!(s.as_u16(), 201, "{v}");
                // Every tenth event is retried (with a fresh token): the same answer comes back.
                if i % 10 == 0 {
                    let (s2, v2) = a.app.post_json_as("/api/v1/audit/events", &a.writer(), e).await;
                    assert_eq!((s2.as_u16(), &v2), (201, &v));
                }
                acked.push((tenant, v["seq"].as_i64().expect("seq")));
            }
            acked
        }));
    }
    let mut per_tenant: std::collections::HashMap<&str, Vec<i64>> = Default::default();
    for t in tasks {
        for (tenant, seq) in t.await.expect("writer") {
            per_tenant.entry(tenant).or_default().push(seq);
        }
    }
    for tenant in tenants {
        let mut seqs = per_tenant.remove(tenant).expect("tenant");
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=4000).collect::<Vec<_>>(), "{tenant}: every ack once, gap-free");
        let report = a.verify(tenant).await;
        assert_eq!((report["ok"].as_bool(), report["events"].as_i64()), (Some(true), Some(4000)), "{report}");
    }
}

#[tokio::test]
async fn key_rotation_mid_stream_verifies_across_epochs() {
    let a = Audit::start().await;
    a.write_n("t1", 3).await;
    let keys = queue_audit::key_ring(&a.config).await.expect("ring");
    let mut owner = a.attacker().await;
    assert_eq!(keys.rotate(&mut owner).await.expect("rotate"), 2);
    let after = a.write_n("t1", 3).await;
    assert!(after.iter().all(|v| v["seq"].as_i64() > Some(3)));
    let (_, page) = a.app.get_json_as("/api/v1/audit/events?tenant_id=t1", &a.reader()).await;
    let epochs: Vec<i64> =
        page["events"].as_array().expect("events").iter().map(|e| e["key_id"].as_i64().expect("key")).collect();
    assert_eq!(epochs, vec![1, 1, 1, 2, 2, 2]);
    // The writer had chained from memory under epoch 1: its first batch after the rotation
    // wrote nothing and went again with the new epoch.
    assert_eq!(counter(&a.app.url(""), "queue_audit_append_stale_heads_total").await, 1.0);
    assert_eq!(a.verify("t1").await["ok"], true);
}

/// A counter from a service's /metrics (0 when it has not been touched yet).
async fn counter(base: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base}/metrics")).await.expect("metrics").text().await.expect("text");
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// Two replicas on one database append to the same tenant in turn. Each writer chains from the
/// head it remembers; after the other replica wrote, that head is stale: the new rows' seqs are
/// taken, the batch rolls back whole and goes again reading the heads. One gap-free chain.
#[tokio::test]
async fn two_replicas_appending_to_one_tenant_keep_one_chain() {
    let a = Audit::start().await;
    let running = queue_audit::run(a.config.clone(), queue_platform::Signals::Ignore).await.expect("second replica");
    let b = format!("http://{}", running.addr);
    let b_handle = running.handle();
    tokio::spawn(running.wait());
    let client = reqwest::Client::new();
    for i in 0..10 {
        let (s, v) = a.write(&event("t1", 2 * i)).await;
        assert_eq!((s, v["seq"].as_i64()), (201, Some(2 * i as i64 + 1)), "{v}");
        let r = client
            .post(format!("{b}/api/v1/audit/events"))
            .bearer_auth(a.writer())
            .json(&event("t1", 2 * i + 1))
            .send()
            .await
            .expect("write on the second replica");
        assert_eq!(r.status(), 201);
        let v: serde_json::Value = r.json().await.expect("json");
        assert_eq!(v["seq"].as_i64(), Some(2 * i as i64 + 2), "{v}");
    }
    let report = a.verify("t1").await;
    assert_eq!((report["ok"].as_bool(), report["events"].as_i64()), (Some(true), Some(20)), "{report}");
    // The first write on each replica read the head (nothing remembered yet); every later one
    // found its remembered head moved by the other replica.
    let name = "queue_audit_append_stale_heads_total";
    assert_eq!(counter(&a.app.url(""), name).await, 9.0);
    assert_eq!(counter(&b, name).await, 9.0);
    // A replica that was not disturbed chains from memory: no more stale batches.
    a.write_n("t1", 3).await;
    assert_eq!(counter(&a.app.url(""), name).await, 10.0, "one stale batch after b's last write, then none");
    b_handle.stop(true).await;
}

#[tokio::test]
async fn the_offline_verifier_agrees_with_the_online_one() {
    let a = Audit::start().await;
    a.write_n("t1", 20).await;
    let text = a.export("t1").await;
    let keys = queue_audit::key_ring(&a.config).await.expect("ring");
    let offline =
        queue_audit::domain::verify::verify_export(text.lines().map(String::from), &keys).await.expect("parse");
    let online = a.verify("t1").await;
    assert!(offline.ok);
    assert_eq!(serde_json::to_value(&offline).expect("json"), online);

    // A line edited in the file is found at its seq.
    let tampered = text.replacen("\"actor_id\":\"u5\"", "\"actor_id\":\"mallory\"", 1);
    let offline =
        queue_audit::domain::verify::verify_export(tampered.lines().map(String::from), &keys).await.expect("parse");
    assert_eq!((offline.ok, offline.first_bad_seq), (false, Some(6)));

    // A forged file that brings its own checkpoint key is refused: the key in the header must be
    // this deployment's.
    let header: serde_json::Value = serde_json::from_str(text.lines().next().expect("header")).expect("json");
    let mut forged_header = header.clone();
    forged_header["checkpoint_public_key"] =
        json!(format!("{}00", header["checkpoint_public_key"].as_str().expect("key")));
    let forged = text.replacen(text.lines().next().expect("header"), &forged_header.to_string(), 1);
    let err = queue_audit::domain::verify::verify_export(forged.lines().map(String::from), &keys)
        .await
        .expect_err("a foreign checkpoint key");
    assert!(err.contains("not this deployment's checkpoint key"), "{err}");
}

#[tokio::test]
async fn the_rate_limit_per_caller_answers_429_with_retry_after() {
    let a = Audit::start_with(Default::default(), |c| {
        c.limits.per_caller_rps = 1;
        c.limits.per_caller_burst = 2;
    })
    .await;
    assert_eq!(a.write(&event("t1", 1)).await.0, 201);
    assert_eq!(a.write(&event("t1", 2)).await.0, 201);
    let r = a
        .app
        .client
        .post(a.app.url("/api/v1/audit/events"))
        .bearer_auth(a.writer())
        .json(&event("t1", 3))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    // Another caller has its own bucket.
    let other = a.app.token("rbac", &["audit:write"]);
    let mut own = event("t1", 4);
    own["action"] = json!("rbac.grant.created");
    let (s, _) = a.app.post_json_as("/api/v1/audit/events", &other, &own).await;
    assert_eq!(s.as_u16(), 201);
}

/// tools/verify_audit_export.py, written from docs/audit-chain.md alone, agrees with us.
#[tokio::test]
async fn an_independent_verifier_accepts_the_export_and_finds_tampering() {
    let a = Audit::start().await;
    a.write_n("t1", 12).await;
    let text = a.export("t1").await;
    let ring = queue_audit::key_ring(&a.config).await.expect("ring");
    let mut conn = a.attacker().await;
    let keys = ring.all(&mut conn).await.expect("keys");
    let key_args: Vec<String> = keys
        .iter()
        .flat_map(|(e, k)| ["--key-hex".to_string(), format!("{e}={}", queue_audit::domain::chain::hex(k.bytes()))])
        .collect();
    let dir = tempfile::tempdir().expect("tmp");
    let tool = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/verify_audit_export.py");
    let run = |content: &str| {
        let f = dir.path().join("export.ndjson");
        std::fs::write(&f, content).expect("write");
        let out = std::process::Command::new("python3").arg(&tool).args(&key_args).arg(&f).output().expect("python3");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(run(&text), "ok");
    assert_eq!(run(&text.replacen("\"actor_id\":\"u5\"", "\"actor_id\":\"mallory\"", 1)), "seq 6: mac mismatch");
}

#[tokio::test]
async fn a_failed_transaction_leaves_no_trace_and_the_writer_goes_on() {
    use diesel_async::SimpleAsyncConnection;
    // One writer, so the failing batch and the next ones share a connection pool and a writer.
    let a = Audit::start_with(ChainConfig { writers: 1, ..ChainConfig::default() }, |c| c.database.pool_size = 2).await;
    a.write_n("f1", 3).await;
    a.attacker()
        .await
        .batch_execute(
            "CREATE FUNCTION audit.test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
               IF NEW.actor_id = 'boom' THEN RAISE EXCEPTION 'refused for the test'; END IF; RETURN NEW; END $$;
             CREATE TRIGGER test_refuse BEFORE INSERT ON audit.customer_audit_events
               FOR EACH ROW EXECUTE FUNCTION audit.test_refuse();",
        )
        .await
        .expect("trigger");
    let mut doomed = event("f1", 100);
    doomed["actor"]["id"] = json!("boom");
    let (status, body) = a.write(&doomed).await;
    assert_eq!(status, 500, "{body}");
    // The same connections serve the next appends: no transaction was left open, no seq lost.
    for i in 0..5 {
        let (status, body) = a.write(&event("f1", 200 + i)).await;
        assert_eq!((status, body["seq"].as_i64()), (201, Some(4 + i as i64)), "{body}");
    }
    let report = a.verify("f1").await;
    assert_eq!((report["ok"].as_bool(), report["events"].as_i64()), (Some(true), Some(8)), "{report}");
}
