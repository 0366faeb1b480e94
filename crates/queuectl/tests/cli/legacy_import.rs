//! `queuectl legacy import` against a real Raptor database (raptor-schema.sql on the test cluster,
//! rows inserted as Raptor writes them) and the import endpoints of auth and rbac (for now the
//! stand-in of `legacy_standin`, answering BRIEF-19's JSON): every kind converted field by
//! field, the session token never leaving unhashed, batches of at most 1000, dry runs, the report
//! and its exit statuses, and errors that name what failed.

use diesel_async::SimpleAsyncConnection;
use queue_testkit::{TestDb, TestKeys};
use serde_json::{Value, json};
use sha2::Digest;

use crate::legacy_standin::{Received, Standin};
use crate::queuectl;

const SCHEMA: &str = include_str!("../../../../legacy/raptor/raptor-schema.sql");
/// Customer 1's session cookie at Raptor, stored there in plaintext.
const TOKEN: &str = "Rpt0rSessi0nT0ken-plaintext_0123456789abcde";
const TENANT_A: &str = "5a3c0e1e-0000-4000-8000-00000000a0c1";
const TENANT_B: &str = "5a3c0e1e-0000-4000-8000-00000000b0c2";

/// Raptor's tables with three customers and a few rows of every kind (see the comments).
const ROWS: &str = "
INSERT INTO tenants (id, name) VALUES ('5a3c0e1e-0000-4000-8000-00000000a0c1', 'Acme'),
  ('5a3c0e1e-0000-4000-8000-00000000b0c2', 'Beta');
INSERT INTO customers (id, tenant_id, email, email_verified_at, display_name, password_hash, is_active, created_at) VALUES
  (1, '5a3c0e1e-0000-4000-8000-00000000a0c1', '  Ada@Acme.TEST ', '2024-03-02 09:00:00+00', 'Ada Admin', 'pbkdf2:sha256:600000$x$y', true, '2024-03-01 10:00:00+00'),
  (2, '5a3c0e1e-0000-4000-8000-00000000a0c1', 'alan@acme.test', NULL, NULL, NULL, false, '2024-04-01 10:00:00+00'),
  (3, '5a3c0e1e-0000-4000-8000-00000000b0c2', 'vera@beta.test', '2024-05-01 10:00:00+00', 'Vera Viewer', NULL, true, '2024-05-01 10:00:00+00');
INSERT INTO customer_sessions (id, customer_id, token, created_at, expires_at, last_seen_at, revoked_at, ip, user_agent) VALUES
  (1, 1, 'Rpt0rSessi0nT0ken-plaintext_0123456789abcde', '2026-12-01 08:00:00+00', '2026-12-15 08:00:00+00', '2026-12-06 12:00:00.123456+00', NULL, '203.0.113.7', 'Mozilla/5.0 (X11)'),
  (2, 2, 'AnotherRaptorTokenThatWasRevoked_0123456789', '2026-11-01 08:00:00+00', '2026-11-15 08:00:00+00', NULL, '2026-11-02 08:00:00+00', NULL, NULL);
INSERT INTO customer_backup_codes (id, customer_id, code_hash, used_at, created_at) VALUES
  (1, 1, 'scrypt:32768:8:1$k3yS4lt$0123abcd', NULL, '2026-10-01 10:00:00+00'),
  (2, 1, 'pbkdf2:sha256:600000$s4lt$cafe', '2026-10-05 10:00:00+00', '2026-10-01 10:00:00+00');
INSERT INTO webauthn_credentials (id, customer_id, credential_id, public_key, sign_count, aaguid, device_type, backed_up,
  user_verified, transports, user_handle, name, created_at, last_used_at) VALUES
  (1, 1, '\\x0a0b0c0d', '\\xa501020326200121582001', 7, '08987058-cadc-4b81-b6e1-30de50dcbe96', 'multi_device', true, true,
   '{internal,hybrid}', '\\x00112233445566778899aabbccddeeff', 'MacBook', '2025-01-01 10:00:00+00', '2026-12-01 10:00:00+00'),
  (2, 3, '\\x01', '\\xa4', 0, NULL, 'single_device', false, false, NULL, '\\xffeeddccbbaa99887766554433221100', NULL,
   '2025-02-01 10:00:00+00', NULL);
INSERT INTO rbac_permissions (name) VALUES ('ticket.read'), ('ticket.write'), ('rbac.grant');
INSERT INTO rbac_roles (id, tenant_id, name, description, created_at) VALUES
  (1, NULL, 'viewer', 'Reads tickets', '2023-01-01 00:00:00+00'),
  (2, '5a3c0e1e-0000-4000-8000-00000000a0c1', 'triage', NULL, '2024-06-01 00:00:00+00'),
  (3, NULL, 'nothing', NULL, '2023-01-01 00:00:00+00');
INSERT INTO rbac_role_permissions (role_id, permission) VALUES (1, 'ticket.read'), (2, 'ticket.write'), (2, 'ticket.read');
INSERT INTO rbac_grants (id, customer_id, role_id, scope_type, tenant_id, ticket_id, granted_by, granted_at, expires_at,
  reason, revoked_at, revoked_by) VALUES
  -- granted last year by another customer, with a reason
  (1, 3, 1, 'ticket', '5a3c0e1e-0000-4000-8000-00000000b0c2', 'T-1002', 1, '2025-06-01 12:00:00+00', NULL, 'on call for T-1002', NULL, NULL),
  -- by the system, expired
  (2, 2, 2, 'tenant', '5a3c0e1e-0000-4000-8000-00000000a0c1', NULL, NULL, '2025-01-01 00:00:00+00', '2025-02-01 00:00:00+00', NULL, NULL, NULL),
  -- revoked
  (3, 1, 1, 'tenant', '5a3c0e1e-0000-4000-8000-00000000a0c1', NULL, 1, '2025-03-01 00:00:00+00', NULL, 'temp', '2025-04-01 00:00:00+00', 1),
  (4, 1, 3, 'global', NULL, NULL, NULL, '2023-01-01 00:00:00+00', NULL, NULL, NULL, NULL);
SELECT setval('customers_id_seq', 3), setval('customer_sessions_id_seq', 2), setval('customer_backup_codes_id_seq', 2),
  setval('webauthn_credentials_id_seq', 2), setval('rbac_roles_id_seq', 3), setval('rbac_grants_id_seq', 4);
";

/// A Raptor database with `ROWS` (and `more` after them).
async fn raptor(more: &str) -> TestDb {
    let db = TestDb::empty().await;
    let mut conn = db.conn().await;
    conn.batch_execute(SCHEMA).await.expect("raptor-schema.sql");
    conn.batch_execute(ROWS).await.expect("rows");
    conn.batch_execute(more).await.expect("more rows");
    db
}

/// Auth's and rbac's import endpoints.
struct Queue {
    auth: Standin,
    rbac: Standin,
    keys: TestKeys,
}

impl Queue {
    fn start() -> Self {
        Self {
            auth: Standin::start("auth", &["users", "sessions", "backup-codes", "passkeys"], "operator"),
            rbac: Standin::start("rbac", &["roles", "grants"], "operator"),
            keys: TestKeys::new(),
        }
    }

    /// `queuectl legacy import --source-url SOURCE ARGS…` as the operator, against these endpoints.
    async fn import(&self, source: &str, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["legacy", "import", "--source-url", source, "--auth-url", &self.auth.url];
        all.extend(["--rbac-url", &self.rbac.url]);
        all.extend(args);
        let operator = self.keys.private("operator").display().to_string();
        run(&all, &[("QUEUE_OPERATOR_KEY", &operator)]).await
    }

    fn received(&self) -> Vec<Received> {
        let mut all = self.auth.received();
        all.extend(self.rbac.received());
        all
    }

    async fn stop(&self) {
        self.auth.stop().await;
        self.rbac.stop().await;
    }
}

/// Runs queuectl off the async runtime (the stand-ins answer on it).
async fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        queuectl(&args, &env)
    })
    .await
    .expect("run")
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
    let db = raptor("").await;
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
    let queue = Queue::start();

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
        json!({"legacy_id": "1", "user_legacy_id": "1", "token_sha256": hash, "created_at": "2026-12-01T08:00:00Z",
               "expires_at": "2026-12-15T08:00:00Z", "last_seen_at": "2026-12-06T12:00:00.123456Z", "revoked_at": null,
               "ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11)"})
    );
    // Revoked at Raptor: sent all the same (auth decides what to skip).
    assert_eq!(record(&first, "sessions", "2")["revoked_at"], "2026-11-02T08:00:00Z");

    assert_eq!(
        record(&first, "backup-codes", "1"),
        json!({"legacy_id": "1", "user_legacy_id": "1", "werkzeug_hash": "scrypt:32768:8:1$k3yS4lt$0123abcd",
               "created_at": "2026-10-01T10:00:00Z", "used_at": null})
    );
    assert_eq!(record(&first, "backup-codes", "2")["used_at"], "2026-10-05T10:00:00Z");

    assert_eq!(
        record(&first, "passkeys", "1"),
        json!({"legacy_id": "1", "user_legacy_id": "1", "credential_id": "CgsMDQ", "public_key": "pQECAyYgASFYIAE",
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
    assert_eq!(record(&first, "roles", "3")["permissions"], json!([]));

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

    // Again, with nothing new at Raptor: everything unchanged, as JSON.
    queue.auth.forget_received();
    queue.rbac.forget_received();
    let (code, out, err) = queue.import(&source, &["--json"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).expect("a JSON report");
    assert_eq!(counts(&report), all_kinds(|rows| [rows, 0, 0, rows, 0, 0]), "{report}");
    assert_eq!((&report["complete"], &report["refused"], &report["dry_run"]), (&json!(true), &json!(0), &json!(false)));
    assert!(report["source"].as_str().is_some_and(|s| s.contains(&reader) && !s.contains("s3cret")), "{report}");
    assert_eq!(records(&queue.received(), "grants"), records(&first, "grants"), "the same grants, the same Queue ids");

    // A revocation at Raptor since: the next run sends the changed record, reported `updated`.
    db.conn()
        .await
        .batch_execute("UPDATE customer_sessions SET revoked_at = '2026-12-07 10:00:00+00' WHERE id = 1")
        .await
        .expect("revoke");
    let (code, out, _) = queue.import(&source, &["--json"]).await;
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).expect("a JSON report");
    assert_eq!(counts(&report)[1], ("sessions".to_string(), [2, 0, 1, 1, 0, 0]), "{report}");
    assert_eq!(
        report["kinds"][1]["reasons"],
        json!([{"outcome": "updated", "reason": "revoked_at", "count": 1, "legacy_ids": ["1"]}])
    );
    queue.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_passes_dry_run_writes_nothing_and_says_what_it_cannot_judge() {
    let db = raptor("").await;
    let queue = Queue::start();

    let (code, out, err) = queue.import(&db.url, &["--dry-run", "--json"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let dry: Value = serde_json::from_str(&out).expect("a JSON report");
    assert_eq!(dry["dry_run"], true);
    let received = queue.received();
    assert_eq!(received.len(), 6);
    assert!(received.iter().all(|r| r.body["dry_run"] == true), "{received:?}");
    for kind in ["users", "sessions", "backup-codes", "passkeys", "roles", "grants"] {
        assert_eq!(queue.auth.stored(kind) + queue.rbac.stored(kind), 0, "{kind}: a dry run keeps nothing");
    }
    // Users the run would create have no Queue id yet: their grants are judged with a stand-in id.
    let grant = record(&received, "grants", "1");
    assert_eq!(
        (&grant["principal_id"], &grant["granted_by"]),
        (&json!("00000000-0000-4000-8000-000000000003"), &json!("00000000-0000-4000-8000-000000000001"))
    );

    // What names a user or role only this run creates cannot be judged by a dry run: auth and
    // rbac refuse it (they find no such user or role), queuectl reports it skipped, saying why.
    assert_eq!(
        counts(&dry),
        [
            ("users".to_string(), [3, 3, 0, 0, 0, 0]),
            ("sessions".to_string(), [2, 0, 0, 0, 2, 0]),
            ("backup-codes".to_string(), [2, 0, 0, 0, 2, 0]),
            ("passkeys".to_string(), [2, 0, 0, 0, 2, 0]),
            ("roles".to_string(), [3, 3, 0, 0, 0, 0]),
            ("grants".to_string(), [4, 0, 0, 0, 4, 0]),
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

    queue.auth.forget_received();
    queue.rbac.forget_received();
    let (code, out, _) = queue.import(&db.url, &["--json"]).await;
    assert_eq!(code, 0);
    let real: Value = serde_json::from_str(&out).expect("a JSON report");
    assert_eq!(counts(&real), all_kinds(|rows| [rows, rows, 0, 0, 0, 0]));
    assert!(queue.received().iter().all(|r| r.body["dry_run"] == false));
    assert_eq!(queue.rbac.stored("grants"), 4);

    // A dry run after it: everything unchanged, nothing written.
    let (code, out, _) = queue.import(&db.url, &["--dry-run", "--json"]).await;
    assert_eq!(code, 0);
    let again: Value = serde_json::from_str(&out).expect("a JSON report");
    assert_eq!(counts(&again), all_kinds(|rows| [rows, 0, 0, rows, 0, 0]));
    queue.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_reported_grouped_with_their_grants_and_exit_1() {
    // A grant made around Raptor's API (which refuses it): Alan, of Acme, on a ticket of Beta.
    let db = raptor(
        "INSERT INTO rbac_grants (customer_id, role_id, scope_type, tenant_id, ticket_id, granted_at) \
         VALUES (2, 1, 'ticket', '5a3c0e1e-0000-4000-8000-00000000b0c2', 'T-9', '2025-01-01 00:00:00+00')",
    )
    .await;
    let queue = Queue::start();
    queue.auth.refuse("users", "3", "a Queue user has this email with another legacy id (9)");
    queue.auth.refuse("passkeys", "2", "unsupported COSE algorithm -8 (EdDSA)");
    queue.rbac.refuse("roles", "2", "unknown permission ticket.write");

    let (code, out, err) = queue.import(&db.url, &[]).await;
    assert_eq!(code, 1, "{out}\n{err}");
    // Customer 3's rows still go to auth (it decides); its grant and the one of role 2 stop here.
    assert_eq!(record(&queue.received(), "passkeys", "2")["user_legacy_id"], "3");
    let sent: Vec<Value> = records(&queue.received(), "grants").iter().map(|g| g["legacy_id"].clone()).collect();
    assert_eq!(sent, [json!("3"), json!("4")]);
    for line in [
        "users refused x1: a Queue user has this email with another legacy id (9) (legacy ids 3)",
        "passkeys refused x1: unsupported COSE algorithm -8 (EdDSA) (legacy ids 2)",
        "roles refused x1: unknown permission ticket.write (legacy ids 2)",
        "grants refused x1: the grantee customer 3 was refused at auth: a Queue user has this email with another legacy id (9) (legacy ids 1)",
        "grants refused x1: role 2 (triage) was refused at rbac: unknown permission ticket.write (legacy ids 2)",
        "grants refused x1: the grantee customer 2 is in tenant 5a3c0e1e-0000-4000-8000-00000000a0c1, not in the grant's tenant 5a3c0e1e-0000-4000-8000-00000000b0c2 (legacy ids 5)",
        "done: 6 record(s) refused",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
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
    let db = raptor(
        "INSERT INTO customer_backup_codes (customer_id, code_hash, created_at) \
         SELECT 1, 'scrypt:32768:8:1$s' || n || '$00', '2026-10-01 10:00:00+00' FROM generate_series(1, 2500) n",
    )
    .await;
    let queue = Queue::start();
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
    assert!(!err.contains("users: batch"), "one batch, no progress: {err}");
    queue.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_what_failed_and_exit_2() {
    let db = raptor("").await;
    let queue = Queue::start();

    // Usage.
    let (code, _, err) = run(&["legacy", "import"], &[]).await;
    assert_eq!(code, 2);
    assert!(err.contains("--source-url"), "{err}");
    let (code, _, err) = queue.import("http://127.0.0.1:1/raptor", &[]).await;
    assert_eq!(code, 2);
    assert!(err.contains("must be a postgresql:// URL"), "{err}");
    let (code, _, err) = run(&["legacy", "import", "--source-url", &db.url, "--batch-size", "1001"], &[]).await;
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
    let (code, _, err) = run(&["legacy", "import", "--source-url", &db.url, "--keys-dir", "/nonexistent"], &[]).await;
    assert_eq!(code, 2);
    assert!(err.contains("cannot read the signing key /nonexistent/operator.pem"), "{err}");

    // A service refusing the caller: the service, the endpoint, the answer's code and message.
    let raptor_key = queue.keys.private("raptor").display().to_string();
    let args =
        ["legacy", "import", "--source-url", &db.url, "--auth-url", &queue.auth.url, "--rbac-url", &queue.rbac.url];
    let (code, out, err) = run(&args, &[("QUEUE_OPERATOR", "raptor"), ("QUEUE_OPERATOR_KEY", &raptor_key)]).await;
    assert_eq!(code, 2, "{out}");
    let expected = format!(
        "auth answered 403 Forbidden at POST {}/internal/v1/import/users: forbidden: \"raptor\" is not an importer here",
        queue.auth.url
    );
    assert!(err.contains(&expected), "{err}");
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
    let (code, out, err) = run(&args, &[("QUEUE_OPERATOR_KEY", &operator)]).await;
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
    let out = queue_testkit::process::command(&python.display().to_string(), &env)
        .current_dir(repo.join("legacy/raptor"))
        .args(["-m", "raptor", "--init-only"])
        .output()
        .expect("python -m raptor --init-only");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let queue = Queue::start();

    let (code, out, err) = queue.import(&db.url, &["--json"]).await;
    assert_eq!(code, 0, "{out}\n{err}");
    let report: Value = serde_json::from_str(&out).expect("a JSON report");
    let by_kind: std::collections::BTreeMap<String, [u64; 6]> = counts(&report).into_iter().collect();
    assert_eq!(by_kind["users"], [3, 3, 0, 0, 0, 0], "{report}");
    assert_eq!(by_kind["roles"], [5, 5, 0, 0, 0, 0], "the five built-ins: {report}");
    assert_eq!(by_kind["grants"], [3, 3, 0, 0, 0, 0], "{report}");
    let received = queue.received();
    let ada = records(&received, "users").into_iter().find(|u| u["email"] == "admin@acme.test").expect("Ada");
    assert_eq!(ada["tenant_id"], "5a3c0e1e-0000-4000-8000-00000000a0c1");
    let vera_id = {
        let vera = records(&received, "users").into_iter().find(|u| u["email"] == "viewer@acme.test").expect("Vera");
        queue.auth.id_of("users", vera["legacy_id"].as_str().expect("legacy id"))
    };
    let ticket_grant =
        records(&received, "grants").into_iter().find(|g| g["scope"]["type"] == "ticket").expect("grant");
    assert_eq!(
        (&ticket_grant["principal_id"], &ticket_grant["role"], &ticket_grant["scope"]["ticket_id"]),
        (&json!(vera_id), &json!("viewer"), &json!("T-1002"))
    );
    let auditor = records(&received, "roles").into_iter().find(|r| r["name"] == "auditor").expect("auditor");
    assert_eq!(auditor["tenant_id"], Value::Null);
    assert!(auditor["permissions"].as_array().is_some_and(|p| !p.is_empty()), "{auditor}");
    queue.stop().await;
}
