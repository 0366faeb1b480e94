//! Issue 20, item 2: a Merkle tree per tenant beside the chain, and its proofs, checked by an
//! implementation written from RFC 6962/9162 alone (tools/check_merkle_proofs.py) against roots it
//! computes itself from the export.

use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};

use crate::support::{Audit, exec};

async fn inclusion(a: &Audit, tenant: &str, seq: u64, size: u64) -> (u16, Value) {
    let path = format!("/api/v1/audit/proofs/inclusion?tenant_id={tenant}&seq={seq}&tree_size={size}");
    let (s, v) = a.app.get_json_as(&path, &a.reader()).await;
    (s.as_u16(), v)
}

async fn consistency(a: &Audit, tenant: &str, from: u64, to: u64) -> (u16, Value) {
    let path = format!("/api/v1/audit/proofs/consistency?tenant_id={tenant}&from={from}&to={to}");
    let (s, v) = a.app.get_json_as(&path, &a.reader()).await;
    (s.as_u16(), v)
}

/// tools/check_merkle_proofs.py with `args`, then the export and (if any) the proofs: its output.
fn tool(args: &[&str], export: &str, proofs: Option<&Value>) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let (e, p) = (dir.path().join("export.ndjson"), dir.path().join("proofs.json"));
    std::fs::write(&e, export).expect("export");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/check_merkle_proofs.py"));
    cmd.args(args).arg(&e);
    if let Some(proofs) = proofs {
        std::fs::write(&p, proofs.to_string()).expect("proofs");
        cmd.arg(&p);
    }
    let out = cmd.output().expect("python3");
    format!("{}{}", String::from_utf8_lossy(&out.stdout).trim(), String::from_utf8_lossy(&out.stderr).trim())
}

/// The independent checker's verdict on the proofs.
fn independent_check(export: &str, proofs: &Value) -> String {
    tool(&[], export, Some(proofs))
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[tokio::test]
async fn proofs_of_inclusion_and_consistency_check_by_rfc_6962_alone() {
    let a = Audit::start().await;
    a.write_n("m1", 13).await;

    let mut included = Vec::new();
    for (seq, size) in [(1, 1), (1, 13), (5, 13), (13, 13), (7, 8), (8, 8)] {
        let (s, v) = inclusion(&a, "m1", seq, size).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!((v["leaf_index"].as_u64(), v["tree_size"].as_u64()), (Some(seq - 1), Some(size)), "{v}");
        included.push(json!({"seq": seq, "tree_size": size, "hashes": v["hashes"]}));
    }
    let mut consistent = Vec::new();
    for (from, to) in [(1, 13), (4, 13), (8, 13), (12, 13), (13, 13), (3, 7)] {
        let (s, v) = consistency(&a, "m1", from, to).await;
        assert_eq!(s, 200, "{v}");
        consistent.push(json!({"from": from, "to": to, "hashes": v["hashes"]}));
    }
    let proofs = json!({"inclusion": included, "consistency": consistent});
    let export = a.export("m1").await;
    assert_eq!(independent_check(&export, &proofs), "ok");

    // A proof that lies, or an export with an event rewritten, does not check.
    let mut forged = proofs.clone();
    forged["inclusion"][2]["hashes"][0] = json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    assert_eq!(independent_check(&export, &forged), "inclusion of seq 5 in 13: does not verify");
    // Rewritten whole, an export checks against itself; against a root the verifier holds (a
    // signed checkpoint's, issue 20 item 3) it does not.
    let root = tool(&["--root", "13"], &export, None);
    let rewritten = export.replacen("\"actor_id\":\"u4\"", "\"actor_id\":\"mallory\"", 1);
    assert_ne!(rewritten, export);
    let pinned = json!({"roots": {"13": root}, "inclusion": [proofs["inclusion"][2]]});
    assert_eq!(independent_check(&export, &pinned), "ok");
    assert_eq!(independent_check(&rewritten, &pinned), "tree of 13: the export's root is not the trusted one");

    // The log grows; the old tree is consistent with the new one.
    a.write_n("m1", 5).await;
    let (s, v) = consistency(&a, "m1", 13, 18).await;
    assert_eq!(s, 200, "{v}");
    let (s2, v2) = inclusion(&a, "m1", 18, 18).await;
    assert_eq!(s2, 200, "{v2}");
    let grown = json!({"consistency": [{"from": 13, "to": 18, "hashes": v["hashes"]}],
                       "inclusion": [{"seq": 18, "tree_size": 18, "hashes": v2["hashes"]}]});
    assert_eq!(independent_check(&a.export("m1").await, &grown), "ok");

    // Stored as tlog stores it: every complete subtree once, never rehashed; append-only.
    let mut db = a.attacker().await;
    let stored: Count = diesel::sql_query("SELECT count(*) AS n FROM audit.merkle_hashes WHERE tenant_id = 'm1'")
        .get_result(&mut db)
        .await
        .expect("count");
    assert_eq!(stored.n as u64, tlog_tiles::tlog::stored_hash_count(18));
    let mut service = a.as_service_role().await;
    exec(&mut service, "SELECT set_config('queue.tenant_id', 'm1', false)").await.expect("tenant");
    assert!(exec(&mut service, "DELETE FROM audit.merkle_hashes WHERE tenant_id = 'm1'").await.is_err());
    assert!(exec(&mut service, "UPDATE audit.merkle_hashes SET hash = hash WHERE tenant_id = 'm1'").await.is_err());
    assert!(
        exec(&mut service, "UPDATE audit.merkle_trees SET size = 1 WHERE tenant_id = 'm1'").await.is_err(),
        "a tree only grows"
    );
}

#[tokio::test]
async fn proofs_outside_the_log_are_refused_with_the_field_named() {
    let a = Audit::start().await;
    a.write_n("m2", 4).await;
    for (seq, size, field) in [(0, 4, "seq"), (5, 4, "seq"), (2, 9, "tree_size")] {
        let (s, v) = inclusion(&a, "m2", seq, size).await;
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(s == 404 && message.starts_with(&format!("{field}: ")), "{seq}/{size}: {v}");
    }
    for (from, to, field) in [(0, 4, "from"), (4, 3, "from"), (2, 5, "to")] {
        let (s, v) = consistency(&a, "m2", from, to).await;
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(s == 404 && message.starts_with(&format!("{field}: ")), "{from}/{to}: {v}");
    }
    let (s, v) = inclusion(&a, "nobody", 1, 1).await;
    assert_eq!(s, 404, "a tenant with no events: {v}");
    let (s, v) = a.app.get_json_as("/api/v1/audit/proofs/inclusion?tenant_id=m2&seq=1&tree_size=1", &a.writer()).await;
    assert_eq!(s.as_u16(), 403, "a writer is not a reader: {v}");
}

#[test]
fn the_independent_checker_passes_its_own_rfc_vectors() {
    let tool = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/check_merkle_proofs.py");
    let out = std::process::Command::new("python3").arg(&tool).arg("--selftest").output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "selftest ok");
}

/// tools/check_checkpoint_note.py (with the API tools' Python, which has `cryptography`).
fn check_note(note: &str, key: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("note.txt");
    std::fs::write(&f, note).expect("note");
    let out = std::process::Command::new(root.join("var/venv-api/bin/python"))
        .arg(root.join("tools/check_checkpoint_note.py"))
        .args(["--key", key])
        .arg(&f)
        .output()
        .expect("var/venv-api/bin/python (scripts/install-test-deps.sh builds it)");
    format!("{}{}", String::from_utf8_lossy(&out.stdout).trim(), String::from_utf8_lossy(&out.stderr).trim())
}

#[tokio::test]
async fn checkpoints_are_c2sp_signed_notes_anyone_checks_with_the_public_key() {
    let chain = queue_audit::config::ChainConfig { checkpoint_every: 5, ..Default::default() };
    let a = Audit::start_with(chain, |c| c.chain.checkpoint_origin = "audit.acme.test".into()).await;
    let (s, v) = a.app.get_json_as("/api/v1/audit/checkpoints/latest?tenant_id=n1", &a.reader()).await;
    assert_eq!(s.as_u16(), 404, "none yet: {v}");
    a.write_n("n1", 5).await;
    a.wait_for_checkpoint("n1", 5).await;

    let r = a
        .app
        .client
        .get(a.app.url("/api/v1/audit/checkpoints/latest?tenant_id=n1"))
        .bearer_auth(a.reader())
        .send()
        .await
        .expect("note");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().expect("text").starts_with("text/plain"));
    let note = r.text().await.expect("body");
    let (s, keys) = a.app.get_json_as("/api/v1/audit/checkpoint-keys", &a.reader()).await;
    assert_eq!(s.as_u16(), 200, "{keys}");
    let key = keys["keys"][0].as_str().expect("a verifier key").to_string();
    assert!(key.starts_with("audit.acme.test+"), "{key}");

    // Checked from the specs alone; the root is the one an independent RFC 6962 tree of the
    // export gives.
    let root = tool(&["--root", "5"], &a.export("n1").await, None);
    assert_eq!(check_note(&note, &key), format!("ok audit.acme.test/n1 5 {root}"), "{note}");
    // A note with another size, or signed by another key, does not check.
    assert_eq!(check_note(&note.replacen("\n5\n", "\n6\n", 1), &key), "the signature does not verify");
    let other = Audit::start().await;
    let (_, other_keys) = other.app.get_json_as("/api/v1/audit/checkpoint-keys", &other.reader()).await;
    let other_key = other_keys["keys"][0].as_str().expect("key").replace("audit.queue.local", "audit.acme.test");
    assert_ne!(check_note(&note, &other_key).get(..3), Some("ok "), "another key");
}
