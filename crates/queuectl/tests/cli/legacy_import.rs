//! `queuectl legacy import` against a real Raptor database (raptor-schema.sql on the test cluster,
//! rows inserted as Raptor writes them) and the real import endpoints of auth and rbac (rbac with
//! its audit), each behind a recording tap (`legacy_tap`): every kind converted field by field
//! and kept by the services, the session token never leaving unhashed, batches of at most 1000,
//! dry runs that write nothing, refusals for real causes with the services' reasons, the report
//! and its exit statuses, and errors that name what failed.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use diesel_async::SimpleAsyncConnection;
use queue_testkit::{TestDb, TestKeys};
use serde_json::{Value, json};
use sha2::Digest;

use crate::legacy_tap::{Received, Services, Tap};
use crate::{queuectl, queuectl_async};

const SCHEMA: &str = include_str!("../../../../legacy/raptor/raptor-schema.sql");
/// Customer 1's session cookie at Raptor, stored there in plaintext.
const TOKEN: &str = "Rpt0rSessi0nT0ken-plaintext_0123456789abcde";
const TENANT_A: &str = "5a3c0e1e-0000-4000-8000-00000000a0c1";
const TENANT_B: &str = "5a3c0e1e-0000-4000-8000-00000000b0c2";

/// A P-256 public key as a COSE_Key (ES256): the curve's generator, a real point webauthn-rs
/// accepts (what py_webauthn keeps as `credential_public_key`).
const ES256_KEY: &str = "a50102032620012158206b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296\
                         2258204fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";
/// An Ed25519 COSE_Key (EdDSA, -8): Raptor registers it, Queue cannot verify it and refuses it.
const EDDSA_KEY: &str = "a4010103272006215820d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
/// werkzeug hashes of backup codes as Raptor writes them (`generate_password_hash`).
const SCRYPT_HASH: &str = "scrypt:32768:8:1$LLmOouJrpX846GnN$e8b2ef63c7fb8279bdc25b0d5edf34343fa1ccf8998105ec2e1d31f4615277f969215864f42cba7eb8951078c96732cd9dc8561ecc962cd3ac319b2630c05433";
const PBKDF2_HASH: &str =
    "pbkdf2:sha256:600000$Ophj6V1ZsBkKQkfQ$27c7dd0746fc9a22e1139bea026750d47917e5cc743782d9b28dc23a0b1bbb35";

/// Raptor's tables with three customers and a few rows of every kind (see the comments). Customer
/// 1's live session is placed around now (Queue takes only sessions within its idle timeout):
/// `{created}`, `{seen}` and `{expires}` are filled in by [`raptor`].
const ROWS: &str = "
INSERT INTO tenants (id, name) VALUES ('5a3c0e1e-0000-4000-8000-00000000a0c1', 'Acme'),
  ('5a3c0e1e-0000-4000-8000-00000000b0c2', 'Beta');
INSERT INTO customers (id, tenant_id, email, email_verified_at, display_name, password_hash, is_active, created_at) VALUES
  (1, '5a3c0e1e-0000-4000-8000-00000000a0c1', '  Ada@Acme.TEST ', '2024-03-02 09:00:00+00', 'Ada Admin', 'pbkdf2:sha256:600000$x$y', true, '2024-03-01 10:00:00+00'),
  (2, '5a3c0e1e-0000-4000-8000-00000000a0c1', 'alan@acme.test', NULL, NULL, NULL, false, '2024-04-01 10:00:00+00'),
  (3, '5a3c0e1e-0000-4000-8000-00000000b0c2', 'vera@beta.test', '2024-05-01 10:00:00+00', 'Vera Viewer', NULL, true, '2024-05-01 10:00:00+00');
INSERT INTO customer_sessions (id, customer_id, token, created_at, expires_at, last_seen_at, revoked_at, ip, user_agent) VALUES
  (1, 1, 'Rpt0rSessi0nT0ken-plaintext_0123456789abcde', '{created}', '{expires}', '{seen}', NULL, '203.0.113.7', 'Mozilla/5.0 (X11)'),
  -- revoked and expired: auth skips it
  (2, 2, 'AnotherRaptorTokenThatWasRevoked_0123456789', '2026-11-01 08:00:00+00', '2026-11-15 08:00:00+00', NULL, '2026-11-02 08:00:00+00', NULL, NULL);
INSERT INTO customer_backup_codes (id, customer_id, code_hash, used_at, created_at) VALUES
  (1, 1, '{scrypt}', NULL, '2026-10-01 10:00:00+00'),
  (2, 1, '{pbkdf2}', '2026-10-05 10:00:00+00', '2026-10-01 10:00:00+00');
INSERT INTO webauthn_credentials (id, customer_id, credential_id, public_key, sign_count, aaguid, device_type, backed_up,
  user_verified, transports, user_handle, name, created_at, last_used_at) VALUES
  (1, 1, '\\x0a0b0c0d', '\\x{es256}', 7, '08987058-cadc-4b81-b6e1-30de50dcbe96', 'multi_device', true, true,
   '{internal,hybrid}', '\\x00112233445566778899aabbccddeeff', 'MacBook', '2025-01-01 10:00:00+00', '2026-12-01 10:00:00+00'),
  (2, 3, '\\x01', '\\x{second_key}', 0, NULL, 'single_device', false, false, NULL, '\\xffeeddccbbaa99887766554433221100', NULL,
   '2025-02-01 10:00:00+00', NULL);
INSERT INTO rbac_permissions (name) VALUES ('ticket.read'), ('ticket.write'), ('rbac.grant');
INSERT INTO rbac_roles (id, tenant_id, name, description, created_at) VALUES
  -- a built-in Queue has with the same permissions: unchanged, never created
  (1, NULL, 'viewer', 'Reads tickets', '2023-01-01 00:00:00+00'),
  (2, '5a3c0e1e-0000-4000-8000-00000000a0c1', 'triage', NULL, '2024-06-01 00:00:00+00'),
  -- a tenant's role without permissions
  (3, '5a3c0e1e-0000-4000-8000-00000000b0c2', 'nothing', NULL, '2023-01-01 00:00:00+00');
INSERT INTO rbac_role_permissions (role_id, permission) VALUES (1, 'ticket.read'), (2, 'ticket.write'), (2, 'ticket.read');
INSERT INTO rbac_grants (id, customer_id, role_id, scope_type, tenant_id, ticket_id, granted_by, granted_at, expires_at,
  reason, revoked_at, revoked_by) VALUES
  -- granted last year by another customer, with a reason
  (1, 3, 1, 'ticket', '5a3c0e1e-0000-4000-8000-00000000b0c2', 'T-1002', 1, '2025-06-01 12:00:00+00', NULL, 'on call for T-1002', NULL, NULL),
  -- by the system, expired
  (2, 2, 2, 'tenant', '5a3c0e1e-0000-4000-8000-00000000a0c1', NULL, NULL, '2025-01-01 00:00:00+00', '2025-02-01 00:00:00+00', NULL, NULL, NULL),
  -- revoked
  (3, 1, 1, 'tenant', '5a3c0e1e-0000-4000-8000-00000000a0c1', NULL, 1, '2025-03-01 00:00:00+00', NULL, 'temp', '2025-04-01 00:00:00+00', 1),
  (4, 1, 1, 'global', NULL, NULL, NULL, '2023-01-01 00:00:00+00', NULL, NULL, NULL, NULL);
SELECT setval('customers_id_seq', 3), setval('customer_sessions_id_seq', 2), setval('customer_backup_codes_id_seq', 2),
  setval('webauthn_credentials_id_seq', 2), setval('rbac_roles_id_seq', 3), setval('rbac_grants_id_seq', 4);
";

/// Customer 1's live session at Raptor: created six days ago, seen five minutes ago (with
/// microseconds), expiring in eight days.
struct Live {
    created: DateTime<Utc>,
    seen: DateTime<Utc>,
    expires: DateTime<Utc>,
}

impl Live {
    fn now() -> Self {
        let now = Utc::now().trunc_subsecs(0);
        Self {
            created: now - Duration::days(6),
            seen: now - Duration::minutes(5) + Duration::microseconds(123_456),
            expires: now + Duration::days(8),
        }
    }
}

/// A Raptor database with `ROWS` (and `more` after them), customer 3's passkey an ES256 key.
async fn raptor(more: &str) -> (TestDb, Live) {
    raptor_with(more, ES256_KEY).await
}

/// A Raptor database with `ROWS`, customer 3's passkey being `second_key` (COSE, hex).
async fn raptor_with(more: &str, second_key: &str) -> (TestDb, Live) {
    let live = Live::now();
    let rows = ROWS
        .replace("{created}", &live.created.to_rfc3339())
        .replace("{seen}", &live.seen.to_rfc3339())
        .replace("{expires}", &live.expires.to_rfc3339())
        .replace("{scrypt}", SCRYPT_HASH)
        .replace("{pbkdf2}", PBKDF2_HASH)
        .replace("{es256}", ES256_KEY)
        .replace("{second_key}", second_key);
    let db = TestDb::empty().await;
    let mut conn = db.conn().await;
    conn.batch_execute(SCHEMA).await.expect("raptor-schema.sql");
    conn.batch_execute(&rows).await.expect("rows");
    conn.batch_execute(more).await.expect("more rows");
    (db, live)
}

fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
}

/// Auth's and rbac's real import endpoints, each behind a recording tap.
struct Queue {
    auth: Tap,
    rbac: Tap,
    services: Services,
    keys: TestKeys,
}

impl Queue {
    async fn start() -> Self {
        let keys = TestKeys::new();
        let services = Services::start(&keys).await;
        Self { auth: Tap::start(services.auth.url("")), rbac: Tap::start(services.rbac.url("")), services, keys }
    }

    /// `queuectl legacy import --source-url SOURCE ARGS…` as the operator, against these endpoints.
    async fn import(&self, source: &str, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["legacy", "import", "--source-url", source, "--auth-url", &self.auth.url];
        all.extend(["--rbac-url", &self.rbac.url]);
        all.extend(args);
        let operator = self.keys.private("operator").display().to_string();
        queuectl_async(&all, &[("QUEUE_OPERATOR_KEY", &operator)]).await
    }

    fn received(&self) -> Vec<Received> {
        let mut all = self.auth.received();
        all.extend(self.rbac.received());
        all
    }

    fn forget_received(&self) {
        self.auth.forget_received();
        self.rbac.forget_received();
    }

    /// Records of `kind` the real services keep with a legacy id.
    async fn stored(&self, kind: &str) -> i64 {
        self.services.stored(kind).await
    }

    /// Auth's user imported from Raptor's customer `legacy_id` (`GET /internal/v1/users?legacy_id=`).
    async fn auth_user(&self, legacy_id: &str) -> (u16, Value) {
        let token = self.keys.token("operator", "auth", &["users:read"]);
        let path = format!("/internal/v1/users?legacy_id={legacy_id}");
        let (status, body) = self.services.auth.get_json_as(&path, &token).await;
        (status.as_u16(), body)
    }

    /// Audit events of the operator's imports per kind (users, sessions, backup codes,
    /// passkeys, roles, grants): auth's in its outbox, rbac's in the audit log.
    async fn audit_events(&self) -> [i64; 6] {
        let s = &self.services;
        let auth = |kind: &str| {
            format!(
                "SELECT count(*) FROM auth.audit_outbox WHERE event->>'action' LIKE 'auth.legacy.{kind}.%' \
                 AND event->'actor'->>'id' = 'operator'"
            )
        };
        let rbac = |kind: &str| {
            format!(
                "SELECT count(*) FROM audit.customer_audit_events WHERE action LIKE 'rbac.legacy.{kind}.%' \
                 AND actor_type = 'service' AND actor_id = 'operator'"
            )
        };
        [
            s.count(&s.auth, &auth("user")).await,
            s.count(&s.auth, &auth("session")).await,
            s.count(&s.auth, &auth("backup_code")).await,
            s.count(&s.auth, &auth("passkey")).await,
            s.count(&s.audit, &rbac("role")).await,
            s.count(&s.audit, &rbac("grant")).await,
        ]
    }

    /// Auth's answer for a session cookie (`POST /internal/v1/sessions/validate`, as the proxy).
    async fn validate(&self, cookie: &str) -> Value {
        let token = self.keys.token("proxy", "auth", &["sessions:validate"]);
        let body = json!({ "token": cookie });
        let (status, v) = self.services.auth.post_json_as("/internal/v1/sessions/validate", &token, &body).await;
        assert_eq!(status.as_u16(), 200, "{v}");
        v
    }

    async fn stop(&self) {
        self.auth.stop().await;
        self.rbac.stop().await;
        self.services.stop().await;
    }
}

/// What the service answered for each record of `kind`: (legacy id, outcome), in order.
fn outcomes(received: &[Received], kind: &str) -> Vec<(String, String)> {
    received
        .iter()
        .filter(|r| r.kind == kind)
        .flat_map(|r| r.answer["results"].as_array().cloned().unwrap_or_default())
        .map(|a| (a["legacy_id"].as_str().unwrap_or("?").to_string(), a["outcome"].as_str().unwrap_or("?").to_string()))
        .collect()
}

/// The records of `kind` that reached its endpoint, by legacy id.
fn records(received: &[Received], kind: &str) -> Vec<Value> {
    received
        .iter()
        .filter(|r| r.kind == kind)
        .flat_map(|r| r.body["records"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn record(received: &[Received], kind: &str, legacy_id: &str) -> Value {
    records(received, kind)
        .into_iter()
        .find(|r| r["legacy_id"] == legacy_id)
        .unwrap_or_else(|| panic!("no {kind} record {legacy_id}"))
}

/// The report's counts per kind: kind → [rows, created, updated, unchanged, skipped, refused].
fn counts(report: &Value) -> Vec<(String, [u64; 6])> {
    report["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .map(|k| {
            let n = |f: &str| k[f].as_u64().unwrap_or(u64::MAX);
            (
                k["kind"].as_str().unwrap_or("?").to_string(),
                [n("rows"), n("created"), n("updated"), n("unchanged"), n("skipped"), n("refused")],
            )
        })
        .collect()
}

fn all_kinds(f: impl Fn(u64) -> [u64; 6]) -> Vec<(String, [u64; 6])> {
    [("users", 3), ("sessions", 2), ("backup-codes", 2), ("passkeys", 2), ("roles", 3), ("grants", 4)]
        .into_iter()
        .map(|(k, rows)| (k.to_string(), f(rows)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_reaches_its_endpoint_converted_and_a_second_run_changes_nothing() {
    let (db, live) = raptor("").await;
    // Read-only access is enough: a role that may only SELECT (with a password, which the
    // report must not show; the test cluster trusts loopback, so any password does).
    let reader = format!("reader_{}", db.name);
    db.conn()
        .await
        .batch_execute(&format!("CREATE ROLE {reader} LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO {reader};"))
        .await
        .expect("reader role");
    let mut source = url::Url::parse(&db.url).expect("url");
    source.set_username(&reader).expect("user");
    source.set_password(Some("s3cret-pw")).expect("password");
    let source = source.to_string();
    let queue = Queue::start().await;

    let (code, out, err) = queue.import(&source, &[]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("done: nothing refused"), "{out}");
    assert!(out.contains("redacted") && !out.contains("s3cret-pw") && !err.contains("s3cret-pw"), "{out}\n{err}");
    let first = queue.received();

    // Each service got its kinds, in order, with a token of the operator for it.
    let order: Vec<&str> = first.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(order, ["users", "sessions", "backup-codes", "passkeys", "roles", "grants"]);
    for r in &first {
        let (aud, scope) =
            if r.kind == "roles" || r.kind == "grants" { ("rbac", "rbac:import") } else { ("auth", "users:import") };
        assert_eq!(
            (&r.claims["iss"], &r.claims["aud"], &r.claims["scope"]),
            (&json!("operator"), &json!(aud), &json!([scope]))
        );
        assert_eq!(r.body["dry_run"], false);
    }

    assert_eq!(
        record(&first, "users", "1"),
        json!({"legacy_id": "1", "tenant_id": TENANT_A, "email": "  Ada@Acme.TEST ",
               "email_verified_at": "2024-03-02T09:00:00Z", "display_name": "Ada Admin", "active": true,
               "created_at": "2024-03-01T10:00:00Z"})
    );
    let alan = record(&first, "users", "2");
    assert_eq!(
        (&alan["active"], &alan["email_verified_at"], &alan["display_name"]),
        (&json!(false), &Value::Null, &Value::Null)
    );

    let hash = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sha2::Sha256::digest(TOKEN));
    assert_eq!(
        record(&first, "sessions", "1"),
        json!({"legacy_id": "1", "user_legacy_id": "1", "token_sha256": hash, "created_at": live.created,
               "expires_at": live.expires, "last_seen_at": live.seen, "revoked_at": null,
               "ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11)"})
    );
    assert!(
        live.seen.timestamp_subsec_micros() == 123_456
            && record(&first, "sessions", "1")["last_seen_at"].as_str().is_some_and(|t| t.ends_with(".123456Z"))
    );
    // Revoked at Raptor: sent all the same (auth decides what to skip).
    assert_eq!(record(&first, "sessions", "2")["revoked_at"], "2026-11-02T08:00:00Z");

    assert_eq!(
        record(&first, "backup-codes", "1"),
        json!({"legacy_id": "1", "user_legacy_id": "1", "werkzeug_hash": SCRYPT_HASH,
               "created_at": "2026-10-01T10:00:00Z", "used_at": null})
    );
    assert_eq!(record(&first, "backup-codes", "2")["used_at"], "2026-10-05T10:00:00Z");

    assert_eq!(
        record(&first, "passkeys", "1"),
        json!({"legacy_id": "1", "user_legacy_id": "1", "credential_id": "CgsMDQ", "public_key": b64(&unhex(ES256_KEY)),
               "sign_count": 7, "aaguid": "08987058-cadc-4b81-b6e1-30de50dcbe96", "device_type": "multi_device",
               "backed_up": true, "user_verified": true, "transports": ["internal", "hybrid"],
               "user_handle": "ABEiM0RVZneImaq7zN3u_w", "name": "MacBook", "created_at": "2025-01-01T10:00:00Z",
               "last_used_at": "2026-12-01T10:00:00Z"})
    );
    let second_key = record(&first, "passkeys", "2");
    assert_eq!(
        (&second_key["transports"], &second_key["aaguid"], &second_key["user_legacy_id"]),
        (&Value::Null, &Value::Null, &json!("3"))
    );

    assert_eq!(
        record(&first, "roles", "2"),
        json!({"legacy_id": "2", "tenant_id": TENANT_A, "name": "triage", "description": null,
               "permissions": ["ticket.read", "ticket.write"], "created_at": "2024-06-01T00:00:00Z"})
    );
    assert_eq!(record(&first, "roles", "1")["tenant_id"], Value::Null);
    assert_eq!(
        (&record(&first, "roles", "3")["tenant_id"], &record(&first, "roles", "3")["permissions"]),
        (&json!(TENANT_B), &json!([]))
    );

    // Grants name Queue users: the ids auth gave customers 3 (grantee) and 1 (granter).
    let vera = queue.auth.id_of("users", "3");
    let ada = queue.auth.id_of("users", "1");
    assert_eq!(
        record(&first, "grants", "1"),
        json!({"legacy_id": "1", "principal_id": vera, "role": "viewer", "role_tenant_id": null,
               "scope": {"type": "ticket", "tenant_id": TENANT_B, "ticket_id": "T-1002"}, "granted_by": ada,
               "granted_at": "2025-06-01T12:00:00Z", "expires_at": null, "reason": "on call for T-1002",
               "revoked_at": null, "revoked_by": null})
    );
    let expired = record(&first, "grants", "2");
    assert_eq!(
        (&expired["granted_by"], &expired["expires_at"], &expired["role_tenant_id"]),
        (&Value::Null, &json!("2025-02-01T00:00:00Z"), &json!(TENANT_A))
    );
    let revoked = record(&first, "grants", "3");
    assert_eq!((&revoked["revoked_at"], &revoked["revoked_by"]), (&json!("2025-04-01T00:00:00Z"), &json!(ada)));
    assert_eq!(record(&first, "grants", "4")["scope"], json!({"type": "global", "tenant_id": null, "ticket_id": null}));

    // The session token never left Raptor's database in the clear: not in a request, not printed.
    for r in &first {
        assert!(!r.raw.contains(TOKEN) && !r.raw.contains("AnotherRaptorToken"), "{}", r.raw);
    }
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN));

    // What the real services answered and kept: every user, code, passkey and grant created; the
    // live session created, the revoked one skipped; Raptor's built-in `viewer` is Queue's.
    let created = |kind: &str, ids: &[&str]| {
        let want: Vec<(String, String)> = ids.iter().map(|id| (id.to_string(), "created".to_string())).collect();
        assert_eq!(
            outcomes(&first, kind).into_iter().filter(|(_, o)| o == "created").collect::<Vec<_>>(),
            want,
            "{kind}"
        );
    };
    created("users", &["1", "2", "3"]);
    created("sessions", &["1"]);
    created("backup-codes", &["1", "2"]);
    created("passkeys", &["1", "2"]);
    created("roles", &["2", "3"]);
    created("grants", &["1", "2", "3", "4"]);
    assert_eq!(outcomes(&first, "sessions")[1], ("2".to_string(), "skipped".to_string()));
    assert_eq!(outcomes(&first, "roles")[0], ("1".to_string(), "unchanged".to_string()));
    for (kind, n) in [("users", 3), ("sessions", 1), ("backup-codes", 2), ("passkeys", 2), ("roles", 2), ("grants", 4)]
    {
        assert_eq!(queue.stored(kind).await, n, "{kind} kept by the service");
    }
    let (status, user) = queue.auth_user("1").await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(
        (&user["id"], &user["email"], &user["tenant_id"]),
        (&json!(ada), &json!("ada@acme.test"), &json!(TENANT_A))
    );
    let (status, alan) = queue.auth_user("2").await;
    assert_eq!((status, &alan["status"]), (200, &json!("disabled")), "{alan}");
    assert_eq!(queue.auth_user("4").await.0, 404);
    // The session is found by the browser's cookie as auth hashes it, and ends when Raptor's did.
    let session = format!(
        "SELECT count(*) FROM auth.queue_sessions WHERE legacy_id = '1' AND kind = 'full' AND revoked_at IS NULL \
         AND token_hash = decode('{}', 'hex') AND absolute_expires_at = '{}' AND idle_expires_at <= absolute_expires_at",
        sha2::Sha256::digest(TOKEN).iter().map(|b| format!("{b:02x}")).collect::<String>(),
        live.expires.to_rfc3339()
    );
    assert_eq!(queue.services.count(&queue.services.auth, &session).await, 1);
    // The browser's `raptor_session` cookie as it is: auth validates it, as the proxy asks.
    let v = queue.validate(TOKEN).await;
    assert_eq!((&v["valid"], &v["user_id"], &v["tenant_id"]), (&json!(true), &json!(ada), &json!(TENANT_A)), "{v}");
    assert_eq!(v["absolute_expires_at"], json!(live.expires), "never later than Raptor's");
    assert_eq!(queue.validate("AnotherRaptorTokenThatWasRevoked_0123456789").await["valid"], false);
    // One audit event per created record, by the operator: auth's in its outbox, rbac's in the
    // audit log (written before the row).
    let events = queue.audit_events().await;
    assert_eq!(events, [3, 1, 2, 2, 2, 4], "users, sessions, backup codes, passkeys, roles, grants");

    // Again, with nothing new at Raptor: everything unchanged, as JSON.
    queue.forget_received();
    let (code, out, err) = queue.import(&source, &["--json"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).expect("a JSON report");
    let mut unchanged = all_kinds(|rows| [rows, 0, 0, rows, 0, 0]);
    unchanged[1].1 = [2, 0, 0, 1, 1, 0]; // the revoked session is skipped again: it never was imported
    assert_eq!(counts(&report), unchanged, "{report}");
    assert_eq!((&report["complete"], &report["refused"], &report["dry_run"]), (&json!(true), &json!(0), &json!(false)));
    assert!(report["source"].as_str().is_some_and(|s| s.contains(&reader) && !s.contains("s3cret")), "{report}");
    assert_eq!(records(&queue.received(), "grants"), records(&first, "grants"), "the same grants, the same Queue ids");
    assert_eq!(queue.audit_events().await, events, "nothing changed, no audit event");

    // A revocation at Raptor since: the next run sends the changed record, reported `updated`.
    db.conn()
        .await
        .batch_execute("UPDATE customer_sessions SET revoked_at = now() - interval '1 minute' WHERE id = 1")
        .await
        .expect("revoke");
    let (code, out, _) = queue.import(&source, &["--json"]).await;
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).expect("a JSON report");
    assert_eq!(counts(&report)[1], ("sessions".to_string(), [2, 0, 1, 0, 1, 0]), "{report}");
    let reasons = report["kinds"][1]["reasons"].as_array().expect("reasons");
    assert!(
        reasons
            .contains(&json!({"outcome": "updated", "reason": "revoked at Raptor", "count": 1, "legacy_ids": ["1"]})),
        "{report}"
    );
    let revoked = "SELECT count(*) FROM auth.queue_sessions WHERE legacy_id = '1' AND revoked_reason = 'legacy'";
    assert_eq!(queue.services.count(&queue.services.auth, revoked).await, 1);
    assert_eq!(queue.validate(TOKEN).await["valid"], false, "revoked at Raptor, so at Queue");
    queue.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_passes_dry_run_writes_nothing_and_says_what_it_cannot_judge() {
    let (db, _) = raptor("").await;
    let queue = Queue::start().await;

    let (code, out, err) = queue.import(&db.url, &["--dry-run", "--json"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let dry: Value = serde_json::from_str(&out).expect("a JSON report");
    assert_eq!(dry["dry_run"], true);
    let received = queue.received();
    assert_eq!(received.len(), 6);
    assert!(received.iter().all(|r| r.body["dry_run"] == true), "{received:?}");
    for kind in ["users", "sessions", "backup-codes", "passkeys", "roles", "grants"] {
        assert_eq!(queue.stored(kind).await, 0, "{kind}: a dry run keeps nothing");
    }
    assert_eq!(queue.auth_user("1").await.0, 404, "no user");
    let rbac_rows = "SELECT (SELECT count(*) FROM rbac.rbac_roles) + (SELECT count(*) FROM rbac.rbac_grants)";
    assert_eq!(queue.services.count(&queue.services.rbac, rbac_rows).await, 5, "the five built-ins, nothing else");
    // Users the run would create have no Queue id yet: their grants are judged with a stand-in id.
    let grant = record(&received, "grants", "1");
    assert_eq!(
        (&grant["principal_id"], &grant["granted_by"]),
        (&json!("00000000-0000-4000-8000-000000000003"), &json!("00000000-0000-4000-8000-000000000001"))
    );

    // What names a user or role only this run creates cannot be judged by a dry run: auth refuses
    // it (it finds no such user), as rbac does a grant of a role only this run creates; queuectl
    // reports it skipped, saying why. rbac keeps no users: a grant of a built-in role to a
    // stand-in id is judged as the real run will judge it (created).
    assert_eq!(
        counts(&dry),
        [
            ("users".to_string(), [3, 3, 0, 0, 0, 0]),
            ("sessions".to_string(), [2, 0, 0, 0, 2, 0]),
            ("backup-codes".to_string(), [2, 0, 0, 0, 2, 0]),
            ("passkeys".to_string(), [2, 0, 0, 0, 2, 0]),
            ("roles".to_string(), [3, 2, 0, 1, 0, 0]),
            ("grants".to_string(), [4, 3, 0, 0, 1, 0]),
        ],
        "{dry}"
    );
    assert_eq!(
        dry["kinds"][1]["reasons"][0]["reason"],
        "dry run: its user is created or linked by this import, so auth can judge it only on the real run"
    );
    assert_eq!(
        dry["kinds"][5]["reasons"][0]["reason"],
        "dry run: its role is created or linked by this import, so rbac can judge it only on the real run"
    );

    queue.forget_received();
    let (code, out, _) = queue.import(&db.url, &["--json"]).await;
    assert_eq!(code, 0);
    let real: Value = serde_json::from_str(&out).expect("a JSON report");
    let mut created = all_kinds(|rows| [rows, rows, 0, 0, 0, 0]);
    created[1].1 = [2, 1, 0, 0, 1, 0]; // the revoked session is skipped
    created[4].1 = [3, 2, 0, 1, 0, 0]; // the built-in `viewer` is Queue's
    assert_eq!(counts(&real), created, "{real}");
    assert!(queue.received().iter().all(|r| r.body["dry_run"] == false));
    assert_eq!(queue.stored("grants").await, 4);

    // A dry run after it: everything unchanged, nothing written.
    let (code, out, _) = queue.import(&db.url, &["--dry-run", "--json"]).await;
    assert_eq!(code, 0);
    let again: Value = serde_json::from_str(&out).expect("a JSON report");
    let mut unchanged = all_kinds(|rows| [rows, 0, 0, rows, 0, 0]);
    unchanged[1].1 = [2, 0, 0, 1, 1, 0];
    assert_eq!(counts(&again), unchanged, "{again}");
    queue.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_reported_grouped_with_their_grants_and_exit_1() {
    // Real causes, each refused by the service that owns it: Vera's address already belongs at
    // Queue to another Raptor customer (9, imported before); her passkey is EdDSA, which Queue
    // cannot verify; role 2 carries a permission Queue does not have. And a grant made around
    // Raptor's API (which refuses it): Alan, of Acme, on a ticket of Beta.
    let (db, _) = raptor_with(
        "INSERT INTO rbac_permissions (name) VALUES ('ticket.delete'); \
         INSERT INTO rbac_role_permissions (role_id, permission) VALUES (2, 'ticket.delete'); \
         INSERT INTO rbac_grants (customer_id, role_id, scope_type, tenant_id, ticket_id, granted_at) \
         VALUES (2, 1, 'ticket', '5a3c0e1e-0000-4000-8000-00000000b0c2', 'T-9', '2025-01-01 00:00:00+00')",
        EDDSA_KEY,
    )
    .await;
    let queue = Queue::start().await;
    let other = json!({"legacy_id": "9", "tenant_id": TENANT_B, "email": "Vera@Beta.test", "email_verified_at": null,
                       "display_name": null, "active": true, "created_at": "2024-01-01T00:00:00Z"});
    let token = queue.keys.token("operator", "auth", &["users:import"]);
    let (status, body) = queue
        .services
        .auth
        .post_json_as("/internal/v1/import/users", &token, &json!({"records": [other], "dry_run": false}))
        .await;
    assert_eq!((status.as_u16(), &body["results"][0]["outcome"]), (200, &json!("created")), "{body}");
    let customer_9 = body["results"][0]["id"].as_str().expect("id").to_string();
    let taken = format!("the Queue user {customer_9} with this address in tenant {TENANT_B} is Raptor customer 9");

    let (code, out, err) = queue.import(&db.url, &[]).await;
    assert_eq!(code, 1, "{out}\n{err}");
    // Customer 3's rows still go to auth (it decides); its grant and the one of role 2 stop here.
    assert_eq!(record(&queue.received(), "passkeys", "2")["user_legacy_id"], "3");
    let sent: Vec<Value> = records(&queue.received(), "grants").iter().map(|g| g["legacy_id"].clone()).collect();
    assert_eq!(sent, [json!("3"), json!("4")]);
    for line in [
        format!("users refused x1: {taken} (legacy ids 3)"),
        "passkeys refused x1: unsupported COSE algorithm EdDSA (-8)".to_string(),
        "roles refused x1: unknown permission: ticket.delete (legacy ids 2)".to_string(),
        format!("grants refused x1: the grantee customer 3 was refused at auth: {taken} (legacy ids 1)"),
        "grants refused x1: role 2 (triage) was refused at rbac: unknown permission: ticket.delete (legacy ids 2)".to_string(),
        "grants refused x1: the grantee customer 2 is in tenant 5a3c0e1e-0000-4000-8000-00000000a0c1, not in the grant's tenant 5a3c0e1e-0000-4000-8000-00000000b0c2 (legacy ids 5)".to_string(),
        "done: 6 record(s) refused".to_string(),
    ] {
        assert!(out.contains(&line), "{line}\n{out}");
    }
    // Nothing of what was refused is kept; the rest is.
    assert_eq!(
        (queue.stored("users").await, queue.stored("passkeys").await),
        (3, 1),
        "customer 9, Ada, Alan; Ada's key"
    );
    assert_eq!((queue.stored("roles").await, queue.stored("grants").await), (1, 2), "role 3; grants 3 and 4");
    let row = out.lines().find(|l| l.starts_with("grants ")).expect("grants row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[..7], ["grants", "5", "2", "0", "0", "0", "3"], "{out}");

    let (code, out, _) = queue.import(&db.url, &["--json"]).await;
    assert_eq!(code, 1);
    let report: Value = serde_json::from_str(&out).expect("a JSON report");
    assert_eq!(report["refused"], 6);
    assert_eq!(report["kinds"][0]["reasons"][0]["legacy_ids"], json!(["3"]));
    queue.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_hold_at_most_1000_records_with_progress_on_stderr() {
    // 2,500 more backup codes for Ada: 2,502 rows in three batches.
    let (db, _) = raptor(
        "INSERT INTO customer_backup_codes (customer_id, code_hash, created_at) \
         SELECT 1, 'scrypt:32768:8:1$s' || n || '$' || repeat('0f', 64), '2026-10-01 10:00:00+00' \
         FROM generate_series(1, 2500) n",
    )
    .await;
    let queue = Queue::start().await;
    let (code, out, err) = queue.import(&db.url, &[]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let sizes: Vec<usize> = queue
        .received()
        .iter()
        .filter(|r| r.kind == "backup-codes")
        .map(|r| r.body["records"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [1000, 1000, 502]);
    let ids: std::collections::BTreeSet<String> = records(&queue.received(), "backup-codes")
        .iter()
        .map(|r| r["legacy_id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(ids.len(), 2502, "every row once");
    for n in 1..=3 {
        assert!(err.contains(&format!("backup-codes: batch {n} of 3")), "{err}");
    }
    assert!(err.contains("(2502 of 2502 rows)"), "{err}");
    assert_eq!(queue.stored("backup-codes").await, 2502, "auth kept every one");
    assert!(!err.contains("users: batch"), "one batch, no progress: {err}");
    queue.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_what_failed_and_exit_2() {
    let (db, _) = raptor("").await;
    let queue = Queue::start().await;

    // Usage.
    let (code, _, err) = queuectl_async(&["legacy", "import"], &[]).await;
    assert_eq!(code, 2);
    assert!(err.contains("--source-url"), "{err}");
    let (code, _, err) = queue.import("http://127.0.0.1:1/raptor", &[]).await;
    assert_eq!(code, 2);
    assert!(err.contains("must be a postgresql:// URL"), "{err}");
    let (code, _, err) =
        queuectl_async(&["legacy", "import", "--source-url", &db.url, "--batch-size", "1001"], &[]).await;
    assert_eq!(code, 2);
    assert!(err.contains("1001"), "{err}");

    // Raptor's database unreachable: named without its password.
    let (code, out, err) = queue.import("postgresql://queue:hunter2@127.0.0.1:1/raptor", &[]).await;
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains("cannot connect to Raptor's database at postgresql://queue:redacted@127.0.0.1:1/raptor"),
        "{err}"
    );
    assert!(!err.contains("hunter2") && !out.contains("hunter2"));

    // A database that is not Raptor's.
    let empty = TestDb::empty().await;
    let (code, _, err) = queue.import(&empty.url, &[]).await;
    assert_eq!(code, 2);
    assert!(err.contains("is this Raptor's database?") && err.contains("customers"), "{err}");

    // No key for the importer.
    let (code, _, err) =
        queuectl_async(&["legacy", "import", "--source-url", &db.url, "--keys-dir", "/nonexistent"], &[]).await;
    assert_eq!(code, 2);
    assert!(err.contains("cannot read the signing key /nonexistent/operator.pem"), "{err}");

    // A service refusing the caller: the service, the endpoint, the answer's code and message.
    let raptor_key = queue.keys.private("raptor").display().to_string();
    let args =
        ["legacy", "import", "--source-url", &db.url, "--auth-url", &queue.auth.url, "--rbac-url", &queue.rbac.url];
    let (code, out, err) =
        queuectl_async(&args, &[("QUEUE_OPERATOR", "raptor"), ("QUEUE_OPERATOR_KEY", &raptor_key)]).await;
    assert_eq!(code, 2, "{out}");
    let expected =
        format!("auth answered 403 Forbidden at POST {}/internal/v1/import/users: forbidden: ", queue.auth.url);
    assert!(err.contains(&expected) && err.contains("raptor"), "{err}");
    let refused = queue.received().pop().expect("the request reached the tap");
    assert_eq!((refused.status, &refused.claims["iss"]), (403, &json!("raptor")), "auth itself refused it");
    assert_eq!(queue.stored("users").await, 0, "the refused caller wrote nothing");
    assert!(out.contains("(stopped)") && out.contains("stopped: auth answered 403"), "{out}");

    // rbac down after auth's kinds went through: what was done is reported, then the error.
    let operator = queue.keys.private("operator").display().to_string();
    let args = [
        "legacy",
        "import",
        "--source-url",
        &db.url,
        "--auth-url",
        &queue.auth.url,
        "--rbac-url",
        "http://127.0.0.1:1",
        "--json",
    ];
    let (code, out, err) = queuectl_async(&args, &[("QUEUE_OPERATOR_KEY", &operator)]).await;
    assert_eq!(code, 2);
    assert!(err.contains("cannot reach rbac at POST http://127.0.0.1:1/internal/v1/import/roles"), "{err}");
    let report: Value = serde_json::from_str(&out).expect("a JSON report");
    assert_eq!(report["complete"], false);
    let done: Vec<(&str, &Value)> = report["kinds"]
        .as_array()
        .expect("kinds")
        .iter()
        .map(|k| (k["kind"].as_str().unwrap_or("?"), &k["finished"]))
        .collect();
    assert_eq!(
        done,
        [
            ("users", &json!(true)),
            ("sessions", &json!(true)),
            ("backup-codes", &json!(true)),
            ("passkeys", &json!(true)),
            ("roles", &json!(false))
        ]
    );
    queue.stop().await;
}

#[test]
fn help_explains_the_import_with_an_example() {
    let (code, out, _) = queuectl(&["--help"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("legacy"), "{out}");
    let (code, out, _) = queuectl(&["legacy", "import", "--help"], &[]);
    assert_eq!(code, 0);
    for s in [
        "--source-url",
        "--dry-run",
        "--json",
        "--auth-url",
        "--rbac-url",
        "--key",
        "queuectl legacy import --source-url postgresql://queue@127.0.0.1:54329/raptor",
        "docs/legacy-import.md",
    ] {
        assert!(out.contains(s), "{s}\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_raptors_own_data_imports_with_nothing_refused() {
    // Raptor itself creates its schema and seeds its built-in roles and demo customers.
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = repo.join("var/venv-raptor/bin/python");
    assert!(python.is_file(), "{} is missing: `make test-deps` builds Raptor's virtualenv", python.display());
    let db = TestDb::empty().await;
    let mail = tempfile::tempdir().expect("tmp");
    let mail_dir = mail.path().display().to_string();
    let env = [("RAPTOR_DATABASE_URL", db.url.as_str()), ("RAPTOR_MAIL_DIR", mail_dir.as_str())];
    // This tree's Python client (`queue_client.verify`, Raptor's write-back token check).
    let client = repo.join("clients/python/src").display().to_string();
    let env = [env[0], env[1], ("PYTHONPATH", client.as_str())];
    let out = queue_testkit::process::command(&python.display().to_string(), &env)
        .current_dir(repo.join("legacy/raptor"))
        .args(["-m", "raptor", "--init-only"])
        .output()
        .expect("python -m raptor --init-only");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let queue = Queue::start().await;

    let (code, out, err) = queue.import(&db.url, &["--json"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).expect("a JSON report");
    let by_kind: std::collections::BTreeMap<String, [u64; 6]> = counts(&report).into_iter().collect();
    assert_eq!(by_kind["users"], [3, 3, 0, 0, 0, 0], "{report}");
    assert_eq!(by_kind["roles"], [5, 0, 0, 5, 0, 0], "the five built-ins, Queue's own: {report}");
    assert_eq!(by_kind["grants"], [3, 3, 0, 0, 0, 0], "{report}");
    let received = queue.received();
    let ada = records(&received, "users").into_iter().find(|u| u["email"] == "admin@acme.test").expect("Ada");
    assert_eq!(ada["tenant_id"], "5a3c0e1e-0000-4000-8000-00000000a0c1");
    let vera = records(&received, "users").into_iter().find(|u| u["email"] == "viewer@acme.test").expect("Vera");
    let vera_id = queue.auth.id_of("users", vera["legacy_id"].as_str().expect("legacy id"));
    let ticket_grant =
        records(&received, "grants").into_iter().find(|g| g["scope"]["type"] == "ticket").expect("grant");
    assert_eq!(
        (&ticket_grant["principal_id"], &ticket_grant["role"], &ticket_grant["scope"]["ticket_id"]),
        (&json!(vera_id), &json!("viewer"), &json!("T-1002"))
    );
    let auditor = records(&received, "roles").into_iter().find(|r| r["name"] == "auditor").expect("auditor");
    assert_eq!(auditor["tenant_id"], Value::Null);
    assert!(auditor["permissions"].as_array().is_some_and(|p| !p.is_empty()), "{auditor}");
    let (status, user) = queue.auth_user(vera["legacy_id"].as_str().expect("legacy id")).await;
    assert_eq!((status, &user["id"], &user["email"]), (200, &json!(vera_id), &json!("viewer@acme.test")), "{user}");
    assert_eq!(queue.stored("grants").await, 3);

    // Again: the real services find nothing new.
    let (code, out, err) = queue.import(&db.url, &["--json"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).expect("a JSON report");
    for (kind, [rows, created, updated, unchanged, _, refused]) in counts(&report) {
        assert_eq!((created, updated, refused), (0, 0, 0), "{kind}: {report}");
        assert!(unchanged > 0 || rows == 0, "{kind}: {report}");
    }
    queue.stop().await;
}
