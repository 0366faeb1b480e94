//! Raptor's passkeys imported (issue 19): a credential made by a software authenticator against a
//! throwaway relying party and stored the way py_webauthn stores it (credential id, CBOR COSE
//! key, counter, flags, user handle), imported, then used to sign in at Queue by email and
//! usernameless through the real HTTP API; the refusals, idempotence and dry runs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_cbor_2::Value as Cbor;
use serde_json::{Value, json};
use uuid::Uuid;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs::prelude::{COSEKeyType, Credential, RequestChallengeResponse, WebauthnBuilder};

use crate::support::{Auth, origin};

const IMPORT: &str = "/internal/v1/import/passkeys";
const START: &str = "/api/v1/auth/webauthn/login/start";
const FINISH: &str = "/api/v1/auth/webauthn/login/finish";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn cbor(entries: Vec<(i128, Cbor)>) -> Vec<u8> {
    let map = entries.into_iter().map(|(k, v)| (Cbor::Integer(k), v)).collect();
    serde_cbor_2::to_vec(&Cbor::Map(map)).expect("cbor")
}

/// A user as the users import leaves it: with Raptor's customer id.
async fn legacy_user(auth: &Auth, legacy_id: &str, email: &str) -> Uuid {
    let id = Uuid::new_v4();
    auth.exec(&format!(
        "INSERT INTO auth.users (id, tenant_id, email, email_verified_at, status, created_at, updated_at, legacy_id) \
         VALUES ('{id}', '{}', '{email}', now(), 'active', now(), now(), '{legacy_id}')",
        auth.config.auth.default_tenant
    ))
    .await;
    id
}

/// Registers `key` at a throwaway relying party (Raptor's rp id and origin) under the user handle
/// `handle`, and returns the passkey as Raptor's `webauthn_credentials` row would send it.
fn raptor_passkey(key: &mut SoftPasskey, handle: Uuid, legacy_id: &str, user_legacy_id: &str) -> Value {
    let rp = WebauthnBuilder::new("localhost", &origin()).expect("rp").build().expect("rp");
    let (ccr, state) = rp.start_passkey_registration(handle, "ada", "Ada", None).expect("start");
    let response = key.do_registration(origin(), ccr).expect("authenticator registers");
    let passkey = rp.finish_passkey_registration(&response, &state).expect("registered");
    let cred: Credential = passkey.into();
    let COSEKeyType::EC_EC2(ec) = &cred.cred.key else { panic!("SoftPasskey makes ES256 keys") };
    // py_webauthn keeps `credential_public_key` as the authenticator sent it: a CBOR COSE_Key.
    let cose = cbor(vec![
        (1, Cbor::Integer(2)),
        (3, Cbor::Integer(-7)),
        (-1, Cbor::Integer(1)),
        (-2, Cbor::Bytes(ec.x.to_vec())),
        (-3, Cbor::Bytes(ec.y.to_vec())),
    ]);
    json!({
        "legacy_id": legacy_id,
        "user_legacy_id": user_legacy_id,
        "credential_id": b64(&cred.cred_id),
        "public_key": b64(&cose),
        "sign_count": cred.counter,
        "aaguid": "00000000-0000-0000-0000-000000000000",
        "device_type": "single_device",
        "backed_up": false,
        "user_verified": true,
        "transports": ["internal", "smart-card"],
        "user_handle": b64(handle.as_bytes()),
        "name": "Ada's laptop",
        "created_at": "2025-06-01T10:00:00Z",
        "last_used_at": "2026-11-01T08:30:00Z",
    })
}

async fn import(auth: &Auth, records: Value, dry_run: bool) -> Vec<Value> {
    let token = auth.app.token("operator", &["users:import"]);
    let (s, v) = auth.post(IMPORT, Some(&token), &json!({"records": records, "dry_run": dry_run})).await;
    assert_eq!(s, 200, "{v}");
    v["results"].as_array().expect("results").clone()
}

async fn events(auth: &Auth, action: &str) -> i64 {
    auth.scalar(&format!("SELECT count(*) AS n FROM auth.audit_outbox WHERE event->>'action' = '{action}'")).await
}

/// A usernameless login answered by `key` with `handle` as the user handle a resident key
/// returns (SoftPasskey keeps none: the browser's part is played as in `passkeys.rs`).
async fn usernameless(auth: &Auth, email: &str, key: &mut SoftPasskey, handle: &[u8]) -> (u16, Value) {
    let (_, by_email) = auth.post(START, None, &json!({"email": email})).await;
    let (s, v) = auth.post(START, None, &json!({})).await;
    assert_eq!(s, 200, "{v}");
    let mut options = v["options"].clone();
    options["publicKey"]["allowCredentials"] = by_email["options"]["publicKey"]["allowCredentials"].clone();
    let rcr: RequestChallengeResponse = serde_json::from_value(options).expect("options");
    let mut cred = serde_json::to_value(key.do_authentication(origin(), rcr).expect("answers")).expect("json");
    cred["response"]["userHandle"] = json!(b64(handle));
    let (s, out) = auth.post(FINISH, None, &json!({"ceremony_id": v["ceremony_id"], "credential": cred})).await;
    (s.as_u16(), out)
}

#[tokio::test]
async fn an_imported_passkey_signs_in_by_email_and_usernameless_and_keeps_its_handle() {
    let auth = Auth::start().await;
    let user = legacy_user(&auth, "7", "ada@example.com").await;
    let handle = Uuid::new_v4();
    let mut key = SoftPasskey::new(true);
    let record = raptor_passkey(&mut key, handle, "31", "7");

    let results = import(&auth, json!([record]), false).await;
    assert_eq!(results[0]["outcome"], "created", "{results:?}");
    assert_eq!(results[0]["legacy_id"], "31");
    let id = results[0]["id"].as_str().expect("id").to_string();
    // Raptor's times and fields kept; the user carries Raptor's handle from now on.
    assert_eq!(
        auth.scalar(&format!(
            "SELECT count(*) AS n FROM auth.passkeys WHERE id = '{id}' AND user_id = '{user}' AND legacy_id = '31' \
             AND created_at = '2025-06-01T10:00:00Z' AND last_used_at = '2026-11-01T08:30:00Z' \
             AND name = 'Ada''s laptop' AND legacy_source->>'device_type' = 'single_device' \
             AND passkey->'cred'->>'user_verified' = 'true' AND passkey->'cred'->'transports' = '[\"internal\"]'"
        ))
        .await,
        1
    );
    assert_eq!(
        auth.scalar(&format!(
            "SELECT count(*) AS n FROM auth.users WHERE id = '{user}' AND webauthn_user_handle = '\\x{}'",
            handle.simple()
        ))
        .await,
        1
    );
    // One event, by the importer, about the new passkey; facts, no key.
    assert_eq!(
        auth.scalar(&format!(
            "SELECT count(*) AS n FROM auth.audit_outbox WHERE event->>'action' = 'auth.legacy.passkey.imported' \
             AND event->'actor' = '{{\"type\": \"service\", \"id\": \"operator\"}}' \
             AND event->'target'->>'id' = '{id}' AND event->'payload'->>'legacy_id' = '31' \
             AND event->'payload'->>'algorithm' = 'ES256' AND NOT event->'payload' ? 'public_key' \
             AND NOT event->'payload' ? 'credential_id'"
        ))
        .await,
        1
    );

    // By email: the imported passkey is offered, signs, and its counter moves at Queue.
    let token = auth.login("ada@example.com", &mut key).await;
    let (_, me) = auth.get("/api/v1/auth/session", &token).await;
    assert_eq!(me["user"]["id"], user.to_string());
    assert_eq!(auth.scalar(&format!("SELECT sign_count AS n FROM auth.passkeys WHERE id = '{id}'")).await, 1);

    // Usernameless: the authenticator returns Raptor's handle, not the Queue user id.
    let (s, out) = usernameless(&auth, "ada@example.com", &mut key, handle.as_bytes()).await;
    assert_eq!((s, out["session"]["user_id"].as_str()), (200, Some(user.to_string().as_str())), "{out}");
    // Another handle is still refused.
    let (s, _) = usernameless(&auth, "ada@example.com", &mut key, Uuid::new_v4().as_bytes()).await;
    assert_eq!(s, 401);

    // A passkey registered at Queue by this user carries the same handle.
    let (s, v) = auth.post("/api/v1/auth/webauthn/register/start", Some(&token), &json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["options"]["publicKey"]["user"]["id"], b64(handle.as_bytes()));
    let mut second = SoftPasskey::new(true);
    auth.add_passkey(&token, &mut second, "phone").await;
    let (s, out) = usernameless(&auth, "ada@example.com", &mut second, handle.as_bytes()).await;
    assert_eq!((s, out["session"]["user_id"].as_str()), (200, Some(user.to_string().as_str())), "{out}");
}

#[tokio::test]
async fn the_same_batch_again_is_unchanged_a_change_at_raptor_an_update_and_a_dry_run_writes_nothing() {
    let auth = Auth::start().await;
    legacy_user(&auth, "7", "ada@example.com").await;
    let mut key = SoftPasskey::new(true);
    let record = raptor_passkey(&mut key, Uuid::new_v4(), "31", "7");
    let counts = async || {
        (
            auth.scalar("SELECT count(*) AS n FROM auth.passkeys").await,
            auth.scalar("SELECT count(*) AS n FROM auth.audit_outbox").await,
            auth.scalar("SELECT count(*) AS n FROM auth.users WHERE webauthn_user_handle IS NOT NULL").await,
        )
    };

    // A dry run: the outcome a real run gives, nothing written.
    let dry = import(&auth, json!([record]), true).await;
    assert_eq!(dry[0]["outcome"], "created", "{dry:?}");
    assert!(dry[0].get("id").is_none(), "nothing created, no Queue id: {dry:?}");
    assert_eq!(counts().await, (0, 0, 0));

    let first = import(&auth, json!([record]), false).await;
    assert_eq!(first[0]["outcome"], "created");
    let id = first[0]["id"].clone();
    assert_eq!(counts().await, (1, 1, 1));

    // Again: unchanged, the same id, no write and no event.
    let again = import(&auth, json!([record]), false).await;
    assert_eq!((again[0]["outcome"].as_str(), &again[0]["id"]), (Some("unchanged"), &id), "{again:?}");
    assert_eq!(counts().await, (1, 1, 1));

    // Used and renamed at Raptor since: updated, saying what changed; a dry run first says so
    // and writes nothing.
    let mut changed = record.clone();
    changed["sign_count"] = json!(5);
    changed["name"] = json!("Ada's old laptop");
    changed["last_used_at"] = json!("2026-12-01T09:00:00Z");
    let dry = import(&auth, json!([changed]), true).await;
    assert_eq!(dry[0]["outcome"], "updated", "{dry:?}");
    assert_eq!(auth.scalar("SELECT sign_count AS n FROM auth.passkeys").await, 0);
    let updated = import(&auth, json!([changed]), false).await;
    assert_eq!(
        (updated[0]["outcome"].as_str(), updated[0]["reason"].as_str(), &updated[0]["id"]),
        (Some("updated"), Some("changed at Raptor: sign_count, name, last_used_at"), &id)
    );
    assert_eq!(auth.scalar("SELECT sign_count AS n FROM auth.passkeys WHERE name = 'Ada''s old laptop'").await, 5);
    assert_eq!(events(&auth, "auth.legacy.passkey.updated").await, 1);
    assert_eq!(auth.scalar("SELECT (passkey->'cred'->>'counter')::bigint AS n FROM auth.passkeys").await, 5);

    // The counter is kept: an authenticator whose counter is below Raptor's is refused as a
    // regression (SoftPasskey's next counter is 1).
    let (ceremony, cred) = auth.assertion(Some("ada@example.com"), &mut key).await;
    let (s, _) = auth.post(FINISH, None, &json!({"ceremony_id": ceremony, "credential": cred})).await;
    assert_eq!(s, 401);
    assert_eq!(events(&auth, "auth.passkey.counter_regressed").await, 1);

    // A credential that changes under the same legacy id is another one: refused.
    let mut other = changed.clone();
    other["public_key"] = raptor_passkey(&mut SoftPasskey::new(true), Uuid::new_v4(), "31", "7")["public_key"].clone();
    let refused = import(&auth, json!([other]), false).await;
    assert_eq!(refused[0]["outcome"], "refused");
    assert!(refused[0]["reason"].as_str().expect("reason").starts_with("public_key changed at Raptor"), "{refused:?}");
}

#[tokio::test]
async fn what_cannot_work_at_queue_is_refused_with_the_reason_and_the_rest_imports() {
    let auth = Auth::start().await;
    legacy_user(&auth, "7", "ada@example.com").await;
    let bob = legacy_user(&auth, "8", "bob@example.com").await;
    let handle = Uuid::new_v4();
    let good = raptor_passkey(&mut SoftPasskey::new(true), handle, "31", "7");
    let with_key = |legacy_id: &str, cose: &[u8]| {
        let mut r = good.clone();
        r["legacy_id"] = json!(legacy_id);
        r["credential_id"] = json!(b64(legacy_id.as_bytes()));
        r["public_key"] = json!(b64(cose));
        r
    };
    let eddsa = cbor(vec![
        (1, Cbor::Integer(1)),
        (3, Cbor::Integer(-8)),
        (-1, Cbor::Integer(6)),
        (-2, Cbor::Bytes(vec![7; 32])),
    ]);
    let ps256 = cbor(vec![
        (1, Cbor::Integer(3)),
        (3, Cbor::Integer(-37)),
        (-1, Cbor::Bytes(vec![0xc1; 256])),
        (-2, Cbor::Bytes(vec![1, 0, 1])),
    ]);
    // An ES256 key whose point is not on the curve.
    let off_curve = cbor(vec![
        (1, Cbor::Integer(2)),
        (3, Cbor::Integer(-7)),
        (-1, Cbor::Integer(1)),
        (-2, Cbor::Bytes(vec![1; 32])),
        (-3, Cbor::Bytes(vec![2; 32])),
    ]);
    let good_key = URL_SAFE_NO_PAD.decode(good["public_key"].as_str().expect("key")).expect("b64");
    let mut unknown_user = good.clone();
    unknown_user["legacy_id"] = json!("40");
    unknown_user["user_legacy_id"] = json!("999");
    // Bob's passkey carrying Ada's handle (imported first in the batch).
    let mut shared = raptor_passkey(&mut SoftPasskey::new(true), handle, "41", "8");
    shared["name"] = Value::Null;
    // A handle equal to another user's id (what their Queue-registered passkeys carry).
    let mut bobs_id = raptor_passkey(&mut SoftPasskey::new(true), Uuid::new_v4(), "43", "7");
    bobs_id["user_handle"] = json!(b64(bob.as_bytes()));
    let mut bad_device = raptor_passkey(&mut SoftPasskey::new(true), Uuid::new_v4(), "42", "8");
    bad_device["device_type"] = json!("roaming");
    let batch = json!([
        good,
        with_key("32", &eddsa),
        with_key("33", &ps256),
        with_key("34", b"\xff\x00 garbage"),
        with_key("35", &good_key[..good_key.len() - 10]),
        with_key("36", &off_curve),
        unknown_user,
        shared,
        bad_device,
        bobs_id,
    ]);
    let results = import(&auth, batch, false).await;
    let got: Vec<(&str, &str, &str)> = results
        .iter()
        .map(|r| {
            (
                r["legacy_id"].as_str().expect("legacy id"),
                r["outcome"].as_str().expect("outcome"),
                r["reason"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(got[0], ("31", "created", ""));
    let expect = [
        ("32", "unsupported COSE algorithm EdDSA (-8)"),
        ("33", "unsupported COSE algorithm PS256 (-37)"),
        ("34", "public_key is not CBOR"),
        ("35", "public_key is not CBOR"),
        ("36", "public_key is not a valid ES256 COSE key"),
        ("40", "unknown user legacy id \"999\""),
        ("41", "user_handle belongs to another user"),
        ("42", "device_type \"roaming\""),
        ("43", "user_handle belongs to another user"),
    ];
    for ((legacy_id, reason), (got_id, outcome, got_reason)) in expect.iter().zip(&got[1..]) {
        assert_eq!((legacy_id, "refused"), (got_id, *outcome), "{results:?}");
        assert!(got_reason.starts_with(reason), "{legacy_id}: {got_reason}");
    }
    assert_eq!(got.len(), 10);
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.passkeys").await, 1);
    assert_eq!(events(&auth, "auth.legacy.passkey.imported").await, 1);
}

#[tokio::test]
async fn an_rs256_key_imports() {
    use aws_lc_rs::rsa::{KeyPair, KeySize, PublicKeyComponents};
    use aws_lc_rs::signature::KeyPair as _;
    let auth = Auth::start().await;
    legacy_user(&auth, "7", "ada@example.com").await;
    let pair = KeyPair::generate(KeySize::Rsa2048).expect("rsa");
    let parts = PublicKeyComponents::<Vec<u8>>::from(pair.public_key());
    let cose = cbor(vec![
        (1, Cbor::Integer(3)),
        (3, Cbor::Integer(-257)),
        (-1, Cbor::Bytes(parts.n)),
        (-2, Cbor::Bytes(parts.e)),
    ]);
    let mut record = raptor_passkey(&mut SoftPasskey::new(true), Uuid::new_v4(), "31", "7");
    record["public_key"] = json!(b64(&cose));
    record["device_type"] = json!("multi_device");
    record["backed_up"] = json!(true);
    let results = import(&auth, json!([record]), false).await;
    assert_eq!(results[0]["outcome"], "created", "{results:?}");
    assert_eq!(
        auth.scalar(
            "SELECT count(*) AS n FROM auth.passkeys WHERE passkey->'cred'->>'backup_eligible' = 'true' \
             AND passkey->'cred'->>'backup_state' = 'true'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn only_an_importer_with_the_scope_imports_and_batches_are_1_to_1000() {
    let auth = Auth::start().await;
    legacy_user(&auth, "7", "ada@example.com").await;
    let record = raptor_passkey(&mut SoftPasskey::new(true), Uuid::new_v4(), "31", "7");
    let body = json!({"records": [record]});
    for token in [
        auth.app.token("raptor", &["users:import"]),
        auth.app.token("proxy", &["users:import"]),
        auth.app.token("operator", &["users:write"]),
    ] {
        let (s, v) = auth.post(IMPORT, Some(&token), &body).await;
        assert_eq!(s, 403, "{v}");
    }
    let (s, _) = auth.post(IMPORT, None, &body).await;
    assert_eq!(s, 401);
    let records: Vec<Value> = (0..1001).map(|_| record.clone()).collect();
    for (bad, status) in [
        (json!({"records": []}), 422),
        (json!({"records": records}), 422),
        (json!({"records": [record], "dry_run": false, "tenant": "x"}), 422),
        (json!({"records": [{"legacy_id": "31"}]}), 422),
        (json!([record]), 422),
    ] {
        // A fresh token each time: a service token is good for one change (replay protection).
        let operator = auth.app.token("operator", &["users:import"]);
        let (s, v) = auth.post(IMPORT, Some(&operator), &bad).await;
        assert_eq!(s, status, "{bad:.80} {v}");
    }
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.passkeys").await, 0);
}

#[tokio::test]
async fn a_full_batch_of_1000_imports_in_one_request() {
    let auth = Auth::start().await;
    legacy_user(&auth, "7", "ada@example.com").await;
    let record = raptor_passkey(&mut SoftPasskey::new(true), Uuid::new_v4(), "1", "7");
    // ~470 KiB of JSON: over the server's default body limit, within the import routes'.
    let records: Vec<Value> = (1..=1000)
        .map(|i| {
            let mut r = record.clone();
            r["legacy_id"] = json!(i.to_string());
            r["credential_id"] = json!(b64(format!("credential-{i}").as_bytes()));
            r
        })
        .collect();
    let started = std::time::Instant::now();
    let results = import(&auth, json!(records), false).await;
    let took = started.elapsed();
    assert_eq!(results.len(), 1000);
    assert!(
        results.iter().all(|r| r["outcome"] == "created"),
        "{:?}",
        results.iter().find(|r| r["outcome"] != "created")
    );
    assert_eq!(results[999]["legacy_id"], "1000");
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.passkeys").await, 1000);
    println!("1000 passkeys imported in {took:?}");
    let again = import(&auth, json!(records), false).await;
    assert!(again.iter().all(|r| r["outcome"] == "unchanged"));
    assert_eq!(events(&auth, "auth.legacy.passkey.imported").await, 1000);
}

/// Raptor's own software authenticator and py_webauthn (`raptor_passkey.py`, in
/// var/venv-raptor): the record is what py_webauthn verified and Raptor stored, and the same
/// authenticator then answers Queue's challenges, a resident key returning its user handle.
struct RaptorAuthenticator {
    dir: tempfile::TempDir,
}

impl RaptorAuthenticator {
    fn run(&self, args: &[&str], stdin: Option<&Value>) -> Value {
        use std::io::Write;
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = repo.join("var/venv-raptor/bin/python");
        assert!(python.exists(), "{} is missing: run scripts/install-test-deps.sh", python.display());
        let mut child = std::process::Command::new(python)
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../legacy/raptor/tests/raptor_passkey.py"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("python");
        let mut input = child.stdin.take().expect("stdin");
        if let Some(v) = stdin {
            input.write_all(v.to_string().as_bytes()).expect("write");
        }
        drop(input);
        let out = child.wait_with_output().expect("python runs");
        assert!(out.status.success(), "raptor_passkey.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("json")
    }

    fn state(&self) -> String {
        self.dir.path().join("authenticator.json").display().to_string()
    }

    fn register(legacy_id: &str, user_legacy_id: &str) -> (Self, Value) {
        let a = Self { dir: tempfile::tempdir().expect("tmp") };
        let record = a.run(&["register", &a.state(), legacy_id, user_legacy_id], None);
        (a, record)
    }

    fn get(&self, options: &Value) -> Value {
        self.run(&["get", &self.state()], Some(options))
    }
}

#[tokio::test]
async fn a_passkey_raptor_registered_with_py_webauthn_signs_in_at_queue() {
    let auth = Auth::start().await;
    let user = legacy_user(&auth, "7", "ada@example.com").await;
    let (raptor, record) = RaptorAuthenticator::register("31", "7");
    assert_eq!((record["device_type"].as_str(), record["backed_up"].as_bool()), (Some("multi_device"), Some(true)));
    let results = import(&auth, json!([record]), false).await;
    assert_eq!(results[0]["outcome"], "created", "{results:?}");

    // By email.
    let (s, v) = auth.post(START, None, &json!({"email": "ada@example.com"})).await;
    assert_eq!(s, 200, "{v}");
    let assertion = raptor.get(&v["options"]);
    let (s, out) = auth.post(FINISH, None, &json!({"ceremony_id": v["ceremony_id"], "credential": assertion})).await;
    assert_eq!((s.as_u16(), out["session"]["user_id"].as_str()), (200, Some(user.to_string().as_str())), "{out}");

    // Usernameless: an empty allow list; the resident key picks itself and returns Raptor's handle.
    let (_, v) = auth.post(START, None, &json!({})).await;
    assert_eq!(v["options"]["publicKey"]["allowCredentials"], json!([]));
    let assertion = raptor.get(&v["options"]);
    assert_eq!(assertion["response"]["userHandle"], record["user_handle"]);
    let (s, out) = auth.post(FINISH, None, &json!({"ceremony_id": v["ceremony_id"], "credential": assertion})).await;
    assert_eq!((s.as_u16(), out["session"]["user_id"].as_str()), (200, Some(user.to_string().as_str())), "{out}");
    assert_eq!(auth.scalar("SELECT sign_count AS n FROM auth.passkeys").await, 2);
}

#[tokio::test]
async fn the_same_batch_sent_twice_at_once_imports_once() {
    let auth = Auth::start().await;
    legacy_user(&auth, "7", "ada@example.com").await;
    let records: Vec<Value> = (1..=20)
        .map(|i| {
            let mut r = raptor_passkey(&mut SoftPasskey::new(true), Uuid::new_v4(), &i.to_string(), "7");
            r["user_handle"] = json!(b64(&[7; 16]));
            r
        })
        .collect();
    let (a, b) = tokio::join!(import(&auth, json!(records), false), import(&auth, json!(records), false));
    let outcomes =
        |rs: &[Value]| rs.iter().map(|r| r["outcome"].as_str().expect("outcome").to_string()).collect::<Vec<_>>();
    let (a, b) = (outcomes(&a), outcomes(&b));
    // The user's row is locked per record: one request creates each passkey, the other then finds it.
    for (x, y) in a.iter().zip(&b) {
        let mut pair = [x.as_str(), y.as_str()];
        pair.sort_unstable();
        assert_eq!(pair, ["created", "unchanged"], "{a:?} {b:?}");
    }
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.passkeys").await, 20);
    assert_eq!(events(&auth, "auth.legacy.passkey.imported").await, 20);
}
