//! Raptor's users, sessions and backup codes imported (issue 19): `POST /internal/v1/import/*`
//! for the importers only, every outcome, idempotence (the same batch again changes nothing and
//! writes no audit event), dry runs, the lookup by legacy id, a Raptor session token signing in
//! at Queue, and Raptor's werkzeug-hashed backup codes redeeming once.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::Auth;

const USERS: &str = "/internal/v1/import/users";
const SESSIONS: &str = "/internal/v1/import/sessions";
const CODES: &str = "/internal/v1/import/backup-codes";
const REDEEM: &str = "/api/v1/auth/backup-codes/redeem";
const TENANT: &str = "5a3c0e1e-0000-4000-8000-00000000a0c1";

/// Sends a batch as `queuectl legacy import` does (a fresh operator token: writes spend theirs).
async fn import(auth: &Auth, path: &str, records: Value, dry_run: bool) -> Vec<Value> {
    let token = auth.app.token("operator", &["users:import"]);
    let (s, v) = auth.post(path, Some(&token), &json!({"records": records, "dry_run": dry_run})).await;
    assert_eq!(s, 200, "{v}");
    let results = v["results"].as_array().expect("results").clone();
    assert_eq!(results.len(), records.as_array().expect("records").len(), "one result per record: {v}");
    results
}

fn outcomes(results: &[Value]) -> Vec<&str> {
    results.iter().map(|r| r["outcome"].as_str().expect("outcome")).collect()
}

fn reason(result: &Value) -> &str {
    result["reason"].as_str().unwrap_or_default()
}

fn user(legacy_id: &str, email: &str, active: bool) -> Value {
    json!({"legacy_id": legacy_id, "tenant_id": TENANT, "email": email, "email_verified_at": "2025-03-01T09:00:00Z",
           "display_name": "Ada Admin", "active": active, "created_at": "2025-02-27T16:20:00Z"})
}

async fn outbox(auth: &Auth) -> i64 {
    auth.scalar("SELECT count(*) AS n FROM auth.audit_outbox").await
}

async fn count(auth: &Auth, action: &str) -> i64 {
    auth.scalar(&format!("SELECT count(*) AS n FROM auth.audit_outbox WHERE event->>'action' = '{action}'")).await
}

#[tokio::test]
async fn users_come_in_once_by_legacy_id_with_every_outcome() {
    let auth = Auth::start().await;
    // Raptor provisioned this one earlier, through /internal/v1/users: no legacy id yet.
    let raptor = auth.app.token("raptor", &["users:write"]);
    let (s, provisioned) =
        auth.post("/internal/v1/users", Some(&raptor), &json!({"email": "alan@acme.test", "tenant_id": TENANT})).await;
    assert_eq!(s, 201, "{provisioned}");
    let before = outbox(&auth).await;

    let batch = json!([
        user("1", "  Ada@Acme.TEST ", true),
        user("2", "vera@acme.test", false),
        user("3", "Alan@acme.test", true),
        user("4", "not an address", true),
        user("x5", "x5@acme.test", true),
        user("6", "ada@acme.test", true),
        {"legacy_id": "7", "tenant_id": "bad tenant", "email": "t@acme.test", "email_verified_at": null,
         "display_name": null, "active": true, "created_at": "2025-02-27T16:20:00Z"},
    ]);
    let r = import(&auth, USERS, batch.clone(), false).await;
    assert_eq!(outcomes(&r), ["created", "created", "updated", "refused", "refused", "refused", "refused"], "{r:?}");
    assert!(reason(&r[2]).contains("linked"), "{:?}", r[2]);
    assert_eq!(r[2]["id"], provisioned["id"], "the provisioned user is linked, not duplicated");
    assert!(reason(&r[3]).contains("email"), "{:?}", r[3]);
    assert!(reason(&r[4]).contains("legacy_id"), "{:?}", r[4]);
    assert!(reason(&r[5]).contains("Raptor customer 1"), "an address held by another customer: {:?}", r[5]);
    assert!(reason(&r[6]).contains("tenant_id"), "{:?}", r[6]);
    for refused in &r[3..] {
        assert!(refused.get("id").is_none(), "{refused}");
    }

    // Normalised, verified, disabled, and Raptor's creation time kept.
    let op = auth.app.token("operator", &["users:read"]);
    let (s, ada) = auth.get("/internal/v1/users?legacy_id=1", &op).await;
    assert_eq!(s, 200, "{ada}");
    assert_eq!((ada["id"].clone(), ada["email"].as_str()), (r[0]["id"].clone(), Some("ada@acme.test")));
    assert_eq!(ada["legacy_id"], "1");
    assert_eq!(ada["created_at"], "2025-02-27T16:20:00Z");
    assert_eq!(ada["email_verified_at"], "2025-03-01T09:00:00Z");
    assert_eq!(ada["tenant_id"], TENANT);
    let (_, vera) = auth.get("/internal/v1/users?legacy_id=2", &op).await;
    assert_eq!(vera["status"], "disabled");
    let (_, alan) = auth.get("/internal/v1/users?legacy_id=3", &op).await;
    assert_eq!(
        (alan["id"].clone(), alan["email_verified_at"].as_str()),
        (provisioned["id"].clone(), Some("2025-03-01T09:00:00Z"))
    );

    // One event per created or updated record, by the importer, with no secret in it.
    assert_eq!(count(&auth, "auth.legacy.user.imported").await, 2);
    assert_eq!(count(&auth, "auth.legacy.user.updated").await, 1);
    assert_eq!(outbox(&auth).await, before + 3);
    assert_eq!(
        auth.scalar("SELECT count(*) AS n FROM auth.audit_outbox WHERE event->>'action' LIKE 'auth.legacy.%' AND event->'actor' = '{\"type\": \"service\", \"id\": \"operator\"}'::jsonb AND event->'payload'->>'legacy_id' IS NOT NULL").await,
        3
    );

    // The same batch again: nothing written, no event; the refused stay refused.
    let again = import(&auth, USERS, batch, false).await;
    assert_eq!(outcomes(&again), ["unchanged", "unchanged", "unchanged", "refused", "refused", "refused", "refused"]);
    assert_eq!(again[0]["id"], r[0]["id"]);
    assert_eq!(outbox(&auth).await, before + 3);
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.users").await, 3);

    // Changed at Raptor: updated, saying what; Raptor's null verification never un-verifies.
    let mut changed = user("1", "ada.admin@acme.test", false);
    changed["display_name"] = json!("Ada A.");
    changed["email_verified_at"] = Value::Null;
    let mut moved = user("2", "vera@acme.test", false);
    moved["tenant_id"] = json!("another-tenant");
    let r2 = import(&auth, USERS, json!([changed, moved]), false).await;
    assert_eq!(outcomes(&r2), ["updated", "refused"], "{r2:?}");
    assert_eq!(reason(&r2[0]), "changed: email, display_name, status");
    assert!(reason(&r2[1]).contains("tenant"), "{:?}", r2[1]);
    let (_, ada) = auth.get("/internal/v1/users?legacy_id=1", &op).await;
    assert_eq!((ada["email"].as_str(), ada["status"].as_str()), (Some("ada.admin@acme.test"), Some("disabled")));
    assert_eq!(ada["email_verified_at"], "2025-03-01T09:00:00Z");
    assert_eq!(count(&auth, "auth.legacy.user.updated").await, 2);

    // An address another user of the tenant holds: the database refuses the row, that record is
    // refused (its savepoint rolled back), and the records after it still come in.
    let taken = user("1", "vera@acme.test", false);
    let r3 = import(&auth, USERS, json!([taken, user("8", "eve@acme.test", true)]), false).await;
    assert_eq!(outcomes(&r3), ["refused", "created"], "{r3:?}");
    assert!(reason(&r3[0]).contains("conflicts"), "{:?}", r3[0]);
    let (_, ada) = auth.get("/internal/v1/users?legacy_id=1", &op).await;
    assert_eq!(ada["email"], "ada.admin@acme.test");
    assert_eq!(count(&auth, "auth.legacy.user.updated").await, 2);
}

#[tokio::test]
async fn the_lookup_by_legacy_id_is_for_services_with_the_scope() {
    let auth = Auth::start_with(|c| c.auth.validators = vec!["proxy".into()]).await;
    import(&auth, USERS, json!([user("42", "ada@acme.test", true)]), false).await;
    // Validators (the proxy) and provisioners (Raptor) may look up, as the importer may.
    for issuer in ["proxy", "raptor", "operator"] {
        let (s, v) = auth.get("/internal/v1/users?legacy_id=42", &auth.app.token(issuer, &["users:read"])).await;
        assert_eq!((s.as_u16(), v["legacy_id"].as_str()), (200, Some("42")), "{issuer}: {v}");
    }
    let read = || auth.app.token("raptor", &["users:read"]);
    let (s, _) = auth.get("/internal/v1/users?legacy_id=43", &read()).await;
    assert_eq!(s, 404);
    for bad in ["abc", "042", "-1", ""] {
        let (s, v) = auth.get(&format!("/internal/v1/users?legacy_id={bad}"), &read()).await;
        assert_eq!(s, 404, "{bad}: {v}");
    }
    let (s, _) = auth.get("/internal/v1/users?legacy_id=42", &auth.app.token("raptor", &["users:write"])).await;
    assert_eq!(s, 403, "the scope is users:read");
    let (s, _) = auth.get("/internal/v1/users?legacy_id=42", &auth.app.token("rbac", &["users:read"])).await;
    assert_eq!(s, 403, "an issuer that is no provisioner, validator or importer");
    // One path, two methods, each with its own policy; any other method is 405 naming both.
    let r = auth.app.client.put(auth.app.url("/internal/v1/users")).send().await.expect("request");
    assert_eq!(r.status(), 405);
    let allow = r.headers().get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let r = auth.app.client.get(auth.app.url("/internal/v1/import/users")).send().await.expect("request");
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn only_an_importer_with_the_scope_imports_and_batches_are_bounded() {
    let auth = Auth::start().await;
    let body = json!({"records": [user("1", "ada@acme.test", true)]});
    let (s, _) = auth.post(USERS, None, &body).await;
    assert_eq!(s, 401);
    for (issuer, scopes) in
        [("raptor", &["users:import"][..]), ("proxy", &["users:import"]), ("operator", &["users:write"])]
    {
        for path in [USERS, SESSIONS, CODES] {
            let (s, v) = auth.post(path, Some(&auth.app.token(issuer, scopes)), &body).await;
            assert_eq!(s, 403, "{issuer} {scopes:?} {path}: {v}");
        }
    }
    let op = || auth.app.token("operator", &["users:import"]);
    let (s, v) = auth.post(USERS, Some(&op()), &json!({"records": []})).await;
    assert_eq!((s.as_u16(), v["error"]["field"].as_str()), (422, Some("records")), "{v}");
    let many: Vec<Value> = (1..=1001).map(|i| user(&i.to_string(), &format!("u{i}@acme.test"), true)).collect();
    let (s, v) = auth.post(USERS, Some(&op()), &json!({"records": many})).await;
    assert_eq!((s.as_u16(), v["error"]["field"].as_str()), (422, Some("records")), "1001 records: {v}");
    let (s, v) =
        auth.post(USERS, Some(&op()), &json!({"records": [user("1", "a@acme.test", true)], "force": true})).await;
    assert_eq!(s, 422, "an unknown field: {v}");
    let mut extra = user("1", "a@acme.test", true);
    extra["password_hash"] = json!("scrypt:…");
    let (s, v) = auth.post(USERS, Some(&op()), &json!({"records": [extra]})).await;
    assert_eq!(s, 422, "an unknown record field: {v}");
    let (s, v) = auth.post(USERS, Some(&op()), &json!([user("1", "a@acme.test", true)])).await;
    assert!(s == 400 || s == 422, "not an object: {s} {v}");
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.users").await, 0);

    // 1,000 records (larger than the service's usual 256 KiB body) in one batch.
    let full: Vec<Value> = (1..=1000)
        .map(|i| {
            let mut u = user(&i.to_string(), &format!("user-{i}@acme.test"), true);
            u["display_name"] = json!(format!("{i} {}", "n".repeat(180)));
            u
        })
        .collect();
    assert!(serde_json::to_vec(&full).expect("json").len() > 256 * 1024);
    let r = import(&auth, USERS, json!(full), false).await;
    assert!(r.iter().all(|x| x["outcome"] == "created"));
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.users").await, 1000);
    assert_eq!(count(&auth, "auth.legacy.user.imported").await, 1000);
}

#[tokio::test]
async fn a_dry_run_answers_the_real_outcomes_and_writes_nothing() {
    let auth = Auth::start().await;
    let batch = json!([user("1", "ada@acme.test", true), user("2", "bad", true), user("3", "ADA@acme.test", true)]);
    let dry = import(&auth, USERS, batch.clone(), true).await;
    assert_eq!(outcomes(&dry), ["created", "refused", "refused"], "{dry:?}");
    assert!(dry[0].get("id").is_none(), "a user a dry run would create has no Queue id yet: {dry:?}");
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.users").await, 0);
    assert_eq!(outbox(&auth).await, 0);
    let real = import(&auth, USERS, batch.clone(), false).await;
    assert_eq!(outcomes(&real), outcomes(&dry));
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.users").await, 1);
    // After the real run, a dry run of a change says so and still writes nothing.
    let dry = import(&auth, USERS, json!([user("1", "ada@acme.test", false)]), true).await;
    assert_eq!((outcomes(&dry), reason(&dry[0])), (vec!["updated"], "changed: status"));
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.users WHERE status = 'active'").await, 1);
    assert_eq!(outbox(&auth).await, 1);
}

/// A Raptor session token: 32 random bytes, URL-safe base64 without padding (43 characters).
fn raptor_token(n: u8) -> String {
    URL_SAFE_NO_PAD
        .encode([n; 32].iter().enumerate().map(|(i, b)| b.wrapping_mul(31).wrapping_add(i as u8)).collect::<Vec<u8>>())
}

/// What queuectl sends for it: SHA-256 of the cookie value's bytes, base64url.
fn sha256(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

fn session(legacy_id: &str, token: &str, created: DateTime<Utc>, last_seen: DateTime<Utc>) -> Value {
    json!({"legacy_id": legacy_id, "user_legacy_id": "1", "token_sha256": sha256(token), "created_at": created,
           "expires_at": created + Duration::days(14), "last_seen_at": last_seen, "revoked_at": null,
           "ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (Raptor)"})
}

#[tokio::test]
async fn a_raptor_session_signs_in_at_queue_with_its_own_token_until_revoked_at_raptor() {
    let auth = Auth::start().await;
    import(&auth, USERS, json!([user("1", "ada@acme.test", true)]), false).await;
    let now = auth.clock_now();
    let created = now - Duration::hours(30);
    let (live, expired, revoked, idle) = (raptor_token(1), raptor_token(2), raptor_token(3), raptor_token(4));
    assert_eq!(live.len(), 43);
    let mut gone = session("12", &expired, now - Duration::days(15), now - Duration::days(14));
    gone["expires_at"] = json!(now - Duration::days(1));
    let mut out = session("13", &revoked, created, now - Duration::minutes(1));
    out["revoked_at"] = json!(now - Duration::minutes(1));
    let mut orphan = session("15", &raptor_token(5), created, now);
    orphan["user_legacy_id"] = json!("99");
    let mut short = session("16", &raptor_token(6), created, now);
    short["token_sha256"] = json!(URL_SAFE_NO_PAD.encode([7u8; 31]));
    let batch = json!([
        session("11", &live, created, now - Duration::minutes(2)),
        gone,
        out,
        session("14", &idle, created, now - Duration::hours(2)),
        orphan,
        short,
    ]);
    let r = import(&auth, SESSIONS, batch.clone(), false).await;
    assert_eq!(outcomes(&r), ["created", "skipped", "skipped", "skipped", "refused", "refused"], "{r:?}");
    assert_eq!((reason(&r[1]), reason(&r[2])), ("expired at Raptor", "revoked at Raptor"));
    assert!(reason(&r[3]).contains("idle"), "{:?}", r[3]);
    assert!(reason(&r[4]).contains("legacy id 99"), "{:?}", r[4]);
    assert!(reason(&r[5]).contains("32 bytes"), "{:?}", r[5]);

    // The browser's raptor_session value, presented to Queue, is a full session of the user,
    // as a bearer, as the cookie, and to the proxy's validation; Raptor's expiry kept.
    let (s, me) = auth.get("/api/v1/auth/session", &live).await;
    assert_eq!(s, 200, "{me}");
    assert_eq!((me["user"]["email"].as_str(), me["session"]["kind"].as_str()), (Some("ada@acme.test"), Some("full")));
    let expiry: DateTime<Utc> = serde_json::from_value(me["session"]["absolute_expires_at"].clone()).expect("time");
    assert_eq!(expiry, created + Duration::days(14));
    let idle_at: DateTime<Utc> = serde_json::from_value(me["session"]["idle_expires_at"].clone()).expect("time");
    assert!(idle_at <= expiry && idle_at > now, "{me}");
    let r = auth
        .app
        .client
        .get(auth.app.url("/api/v1/auth/session"))
        .header("cookie", format!("queue_session={live}"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let v = auth.validate(&live).await;
    assert_eq!((v["valid"].as_bool(), v["user_id"].clone()), (Some(true), me["user"]["id"].clone()));
    for t in [&expired, &revoked, &idle] {
        assert_eq!(auth.get("/api/v1/auth/session", t).await.0, 401);
    }

    // Raptor's plaintext is nowhere, nor its hash in an audit event.
    assert_eq!(
        auth.scalar(&format!(
            "SELECT count(*) AS n FROM auth.audit_outbox WHERE event::text LIKE '%{}%' OR event::text LIKE '%{}%'",
            live,
            sha256(&live)
        ))
        .await,
        0
    );
    let stored = format!(
        "SELECT count(*) AS n FROM auth.queue_sessions s WHERE s::text LIKE '%{live}%' \
         OR position(convert_to('{live}', 'UTF8') in s.token_hash) > 0"
    );
    assert_eq!(auth.scalar(&stored).await, 0);
    // What is stored is SHA-256 of the cookie value's bytes, as auth hashes any session token.
    let hashed = format!(
        "SELECT count(*) AS n FROM auth.queue_sessions WHERE token_hash = sha256(convert_to('{live}', 'UTF8'))"
    );
    assert_eq!(auth.scalar(&hashed).await, 1);

    // Again: unchanged, nothing written. Then Raptor revokes it: updated, and Queue says no.
    let before = outbox(&auth).await;
    let again = import(&auth, SESSIONS, batch, false).await;
    assert_eq!(outcomes(&again), ["unchanged", "skipped", "skipped", "skipped", "refused", "refused"]);
    assert_eq!(outbox(&auth).await, before);

    // Used at Raptor since (10 minutes later): the idle expiry slides.
    auth.advance(600);
    let later = auth.clock_now();
    let used = session("11", &live, created, later);
    let r = import(&auth, SESSIONS, json!([used]), false).await;
    assert_eq!((outcomes(&r), reason(&r[0])), (vec!["updated"], "changed at Raptor: last_seen_at"));

    let mut signed_out = session("11", &live, created, later);
    signed_out["revoked_at"] = json!(later);
    let r = import(&auth, SESSIONS, json!([signed_out.clone()]), false).await;
    assert_eq!((outcomes(&r), reason(&r[0])), (vec!["updated"], "revoked at Raptor"));
    assert_eq!(auth.get("/api/v1/auth/session", &live).await.0, 401);
    assert_eq!(auth.validate(&live).await["valid"], false);
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.queue_sessions WHERE revoked_reason = 'legacy'").await, 1);
    let r = import(&auth, SESSIONS, json!([signed_out]), false).await;
    assert_eq!(outcomes(&r), ["unchanged"]);
    assert_eq!(count(&auth, "auth.legacy.session.imported").await, 1);
    assert_eq!(count(&auth, "auth.legacy.session.updated").await, 2);
}

// Made with Raptor's own werkzeug 3.1.9 (var/venv-raptor), as Raptor hashes a code:
// generate_password_hash(code.replace("-", "")), the default method (scrypt:32768:8:1), and
// method="pbkdf2:sha256:600000" for Raptor's older rows.
const SCRYPT_CODES: [(&str, &str); 3] = [
    (
        "mfrgg-zdfmz",
        "scrypt:32768:8:1$LLmOouJrpX846GnN$e8b2ef63c7fb8279bdc25b0d5edf34343fa1ccf8998105ec2e1d31f4615277f969215864f42cba7eb8951078c96732cd9dc8561ecc962cd3ac319b2630c05433",
    ),
    (
        "gq3ts-mjqgk",
        "scrypt:32768:8:1$50NXoHhcteMv9EoI$df3064362f36cc3a0d33a45e0b7f68511aaa3d9cb7e7907c4cc8a687ec9713958e5555ac532d41f8d8f602b94d0d3281bbf3e9b9afcf68f514d4db2fad4f984c",
    ),
    (
        "onswg-4tfon",
        "scrypt:32768:8:1$xniMq98gtNzZQMud$14f88ff633c0019a5ce54cf5d57d7187ea1a7220099b19e8b0fa0e06c611030048f09379080b89a1f53d83f3ab488e567cbf5712bcda4e8c734de680749106f5",
    ),
];
const PBKDF2_CODES: [(&str, &str); 2] = [
    (
        "nbswy-3dpeb",
        "pbkdf2:sha256:600000$Ophj6V1ZsBkKQkfQ$27c7dd0746fc9a22e1139bea026750d47917e5cc743782d9b28dc23a0b1bbb35",
    ),
    (
        "k5xw4-ztnmv",
        "pbkdf2:sha256:600000$uEEjEBfvkeBuh9d3$7471a7a07b60a86ef08f2edc5aa139056ceac2e90d48d1752b04dcb724b254f5",
    ),
];

fn code(legacy_id: &str, hash: &str, used_at: Option<&str>) -> Value {
    json!({"legacy_id": legacy_id, "user_legacy_id": "1", "werkzeug_hash": hash, "created_at": "2026-11-02T10:00:00Z", "used_at": used_at})
}

async fn redeem(auth: &Auth, code: &str) -> (u16, Value) {
    let (s, v) = auth.post(REDEEM, None, &json!({"email": "ada@acme.test", "tenant_id": TENANT, "code": code})).await;
    (s.as_u16(), v)
}

#[tokio::test]
async fn raptors_backup_codes_redeem_at_queue_once_and_used_ones_never() {
    // The manual clock never lets a failure delay pass: the failures here are the point.
    let auth = Auth::start_with(|c| {
        c.limits.delay_after_failures = 50;
        c.limits.lockout_after_failures = 50;
    })
    .await;
    import(&auth, USERS, json!([user("1", "ada@acme.test", true)]), false).await;
    // One bit off in the digest: a forged hash imports (it is well-formed) but matches nothing.
    let mut forged = SCRYPT_CODES[2].1.to_string();
    let last = forged.pop().expect("digit");
    forged.push(if last == '0' { '1' } else { '0' });
    let truncated = &PBKDF2_CODES[1].1[..PBKDF2_CODES[1].1.len() - 2];
    let batch = json!([
        code("501", SCRYPT_CODES[0].1, None),
        code("502", SCRYPT_CODES[1].1, Some("2026-11-10T08:00:00Z")),
        code("503", &forged, None),
        code("504", PBKDF2_CODES[0].1, None),
        code("505", "argon2:id:v=19$somesalt$00ff", None),
        code("506", truncated, None),
        code("507", &format!("pbkdf2:sha1:1000$salt${}", "ab".repeat(20)), None),
    ]);
    let r = import(&auth, CODES, batch.clone(), false).await;
    assert_eq!(outcomes(&r), ["created", "created", "created", "created", "refused", "refused", "refused"], "{r:?}");
    assert!(reason(&r[4]).contains("`argon2`"), "the method is named: {:?}", r[4]);
    assert!(reason(&r[5]).contains("digest"), "{:?}", r[5]);
    assert!(reason(&r[6]).contains("`pbkdf2:sha1`"), "{:?}", r[6]);
    // Stored as Raptor stored them (no more readable), never in an audit event.
    assert_eq!(
        auth.scalar(
            "SELECT count(*) AS n FROM auth.queue_backup_codes WHERE code_hash IS NULL AND legacy_hash IS NOT NULL"
        )
        .await,
        4
    );
    assert_eq!(
        auth.scalar("SELECT count(*) AS n FROM auth.audit_outbox WHERE event::text LIKE '%LLmOouJrpX846GnN%'").await,
        0
    );

    // Typed as Raptor shows it, in any case: a recovery session, once.
    let (s, v) = redeem(&auth, "MFRGG-ZDFMZ").await;
    assert_eq!((s, v["session"]["kind"].as_str()), (200, Some("recovery")), "{v}");
    assert_eq!(redeem(&auth, "mfrgg-zdfmz").await.0, 401, "a code redeems once");
    let (s, v) = redeem(&auth, "nbswy 3dpeb").await;
    assert_eq!(s, 200, "pbkdf2: {v}");
    assert_eq!(redeem(&auth, "nbswy-3dpeb").await.0, 401);
    assert_eq!(redeem(&auth, "gq3ts-mjqgk").await.0, 401, "used at Raptor: never");
    assert_eq!(redeem(&auth, "onswg-4tfon").await.0, 401, "a forged hash matches nothing");
    assert_eq!(redeem(&auth, "k5xw4-ztnmv").await.0, 401, "a refused record was never imported");
    let (s, _) = auth
        .post(REDEEM, None, &json!({"email": "nobody@acme.test", "tenant_id": TENANT, "code": "mfrgg-zdfmz"}))
        .await;
    assert_eq!(s, 401);
    assert_eq!(
        auth.scalar("SELECT count(*) AS n FROM auth.audit_outbox WHERE event->>'action' = 'auth.backup_code.used' AND event->'payload'->>'legacy' = 'true'").await,
        2
    );

    // Again: the codes used at Queue stay used (Queue's use stands), nothing written.
    let before = outbox(&auth).await;
    let again = import(&auth, CODES, batch, false).await;
    assert_eq!(outcomes(&again), ["unchanged", "unchanged", "unchanged", "unchanged", "refused", "refused", "refused"]);
    assert_eq!(outbox(&auth).await, before);
    assert_eq!(redeem(&auth, "mfrgg-zdfmz").await.0, 401);

    // A code used at Raptor since the last import: updated, and it no longer redeems here.
    import(&auth, CODES, json!([code("508", PBKDF2_CODES[1].1, None)]), false).await;
    let r = import(&auth, CODES, json!([code("508", PBKDF2_CODES[1].1, Some("2026-11-21T08:00:00Z"))]), false).await;
    assert_eq!((outcomes(&r), reason(&r[0])), (vec!["updated"], "used at Raptor"));
    assert_eq!(redeem(&auth, "k5xw4-ztnmv").await.0, 401);
    assert_eq!(
        auth.scalar("SELECT count(*) AS n FROM auth.queue_backup_codes WHERE legacy_id = '508' AND used_at = '2026-11-21T08:00:00Z'").await,
        1
    );
    // A record naming a user never imported, or another hash for an imported code: refused.
    let mut stranger = code("509", SCRYPT_CODES[0].1, None);
    stranger["user_legacy_id"] = json!("2");
    let r = import(&auth, CODES, json!([stranger, code("501", SCRYPT_CODES[2].1, None)]), false).await;
    assert_eq!(outcomes(&r), ["refused", "refused"], "{r:?}");
}

#[tokio::test]
async fn concurrent_redeems_of_a_raptor_code_win_once_and_a_queue_set_voids_raptors() {
    let auth = Auth::start_with(|c| {
        c.limits.delay_after_failures = 50;
        c.limits.lockout_after_failures = 50;
        // The passkey login below names no tenant.
        c.auth.default_tenant = TENANT.into();
    })
    .await;
    import(&auth, USERS, json!([user("1", "ada@acme.test", true)]), false).await;
    let batch = json!([code("501", SCRYPT_CODES[0].1, None), code("502", SCRYPT_CODES[1].1, None)]);
    assert_eq!(outcomes(&import(&auth, CODES, batch, false).await), ["created", "created"]);
    let attempts = (0..6).map(|_| redeem(&auth, "mfrgg-zdfmz"));
    let statuses: Vec<u16> = futures_util::future::join_all(attempts).await.into_iter().map(|(s, _)| s).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 401), "{statuses:?}");

    // The imported user signs in at Queue (by the address) and generates a Queue set: Raptor's
    // remaining code is void, like any older set.
    let (token, _key) = auth.signed_in("ada@acme.test").await;
    let (_, me) = auth.get("/api/v1/auth/session", &token).await;
    assert_eq!(me["user"]["legacy_id"], "1", "{me}");
    let (_, v) = auth.get("/api/v1/auth/backup-codes", &token).await;
    assert_eq!(v["remaining"], 1, "Raptor's unused code counts: {v}");
    let (s, v) = auth.post("/api/v1/auth/backup-codes", Some(&token), &json!({})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(redeem(&auth, "gq3ts-mjqgk").await.0, 401);
    // A Raptor code older than that set, never imported before: replaced, so not brought.
    let r = import(&auth, CODES, json!([code("503", SCRYPT_CODES[2].1, None)]), false).await;
    assert_eq!((outcomes(&r), reason(&r[0])), (vec!["skipped"], "a newer set of backup codes replaced it"));
    assert_eq!(redeem(&auth, "onswg-4tfon").await.0, 401);
}

#[tokio::test]
async fn a_newer_raptor_set_voids_the_older_one() {
    let auth = Auth::start().await;
    import(&auth, USERS, json!([user("1", "ada@acme.test", true)]), false).await;
    let mut old_used = code("500", PBKDF2_CODES[1].1, Some("2026-11-03T10:00:00Z"));
    old_used["created_at"] = json!("2026-10-01T10:00:00Z");
    let mut old = code("501", SCRYPT_CODES[1].1, None);
    old["created_at"] = json!("2026-10-01T10:00:00Z");
    let r = import(&auth, CODES, json!([old_used, old.clone()]), false).await;
    assert_eq!(outcomes(&r), ["created", "created"]);
    // Raptor made a new set since (and deleted the old unused codes): the old one is void here.
    let new = code("511", SCRYPT_CODES[0].1, None);
    let r = import(&auth, CODES, json!([new, code("512", PBKDF2_CODES[0].1, None)]), false).await;
    assert_eq!(outcomes(&r), ["created", "created"]);
    assert_eq!(reason(&r[0]), "voided 1 older unused code(s) of this user");
    assert_eq!(reason(&r[1]), "", "codes of one set (one created_at) do not void each other");
    assert_eq!(redeem(&auth, "gq3ts-mjqgk").await.0, 401);
    assert_eq!(redeem(&auth, "mfrgg-zdfmz").await.0, 200);
    // Sent again (an importer's retry), the old code stays void and the old used one used.
    let r = import(&auth, CODES, json!([old]), false).await;
    assert_eq!(outcomes(&r), ["unchanged"]);
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.queue_backup_codes WHERE voided_at IS NOT NULL").await, 1);
}
