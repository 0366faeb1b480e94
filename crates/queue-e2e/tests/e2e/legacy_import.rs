//! Issue 19, item 1, end to end: people use the real Raptor through the proxy (a password
//! sign-in, a passkey registered, backup codes generated; grants as Raptor keeps them), then
//! `queuectl legacy import` (the binary, as an operator runs it) brings them into the real auth and
//! rbac. What a cutover owes them (../shared/legacy/LEGACY.md) is checked at Queue: the Raptor
//! session is accepted, the passkey (registered at Raptor with Raptor's own software authenticator,
//! a resident key) signs in by email and usernameless, a backup code redeems once,
//! grants are in force with their original granter and time (`?at=`), expired and revoked ones
//! deny; no Raptor session token is in Queue's database; a dry run before changes nothing; a second
//! run changes nothing (outcomes and audit chain).

use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use reqwest::StatusCode;
use reqwest::header::ORIGIN;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

use crate::raptor::{ADMIN, with_raptor};
use crate::support::{Stack, bin, repo_root};

pub(crate) const ACME: &str = "5a3c0e1e-0000-4000-8000-00000000a0c1";

/// `queuectl legacy import --json ARGS…` against the stack, as the operator: (exit code, report).
pub(crate) async fn import(stack: &Stack, args: &[&str]) -> (i32, Value) {
    let operator = stack.keys.private("operator").display().to_string();
    let out = tokio::process::Command::new(bin("queuectl"))
        .args(["legacy", "import", "--json", "--source-url", &stack.raptor().db.url])
        .args(["--auth-url", &stack.auth[0].base_url, "--rbac-url", &stack.rbac[0].base_url])
        .args(args)
        .env("QUEUE_OPERATOR_KEY", operator)
        .env_remove("DATABASE_URL")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run queuectl legacy import");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("a JSON report ({e}):\n{stdout}\n{}\n{}", String::from_utf8_lossy(&out.stderr), stack.logs())
    });
    (out.status.code().unwrap_or(-1), report)
}

/// Per kind: (created, updated, unchanged, skipped, refused).
pub(crate) fn outcomes(report: &Value) -> Vec<(String, [u64; 5])> {
    let kinds = report["kinds"].as_array().expect("kinds");
    let n = |k: &Value, f: &str| k[f].as_u64().expect("a count");
    kinds
        .iter()
        .map(|k| {
            let counts = [n(k, "created"), n(k, "updated"), n(k, "unchanged"), n(k, "skipped"), n(k, "refused")];
            (k["kind"].as_str().expect("kind").to_string(), counts)
        })
        .collect()
}

/// A browser at Raptor through the proxy, as far as cookies go: what Raptor sets (its session and
/// the passkey ceremony's cookie) goes back with the next request.
#[derive(Default)]
pub(crate) struct Browser {
    pub(crate) cookies: std::collections::BTreeMap<String, String>,
}

impl Browser {
    /// A JSON POST from Raptor's own origin: (status, body).
    pub(crate) async fn post(&mut self, stack: &Stack, path: &str, body: &Value) -> (StatusCode, Value) {
        let cookie: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let r = stack
            .client
            .post(format!("{}{path}", stack.proxy.base_url))
            .header(ORIGIN, &stack.browser_origin)
            .header(reqwest::header::COOKIE, cookie.join("; "))
            .json(body)
            .send()
            .await
            .expect("a call to Raptor");
        for set in r.headers().get_all(reqwest::header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok()) {
            if let Some((name, value)) = set.split(';').next().and_then(|p| p.split_once('=')) {
                self.cookies.insert(name.trim().to_string(), value.to_string());
            }
        }
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// Raptor's own software authenticator (`legacy/raptor/tests/raptor_passkey.py`, which keeps a
/// resident key and its user handle, as a browser's platform authenticator does), its state in
/// `state`: `create ORIGIN` or `get` over `options`, the credential it answers.
pub(crate) async fn passkey(state: &std::path::Path, args: &[&str], options: &Value) -> Value {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(repo_root().join("var/venv-raptor/bin/python"))
        .arg(repo_root().join("legacy/raptor/tests/raptor_passkey.py"))
        .arg(args[0])
        .arg(state)
        .args(&args[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("var/venv-raptor/bin/python (scripts/install-test-deps.sh builds it)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(options.to_string().as_bytes()).await.expect("options");
    drop(stdin);
    let out = child.wait_with_output().await.expect("raptor_passkey.py");
    assert!(out.status.success(), "raptor_passkey.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("a credential")
}

/// Ada signs in at Raptor (password), registers a passkey (its authenticator's state in `key`) and
/// generates backup codes: (her raptor_session value, the codes).
pub(crate) async fn ada_at_raptor(stack: &Stack, key: &std::path::Path) -> (String, Vec<String>) {
    let mut browser = Browser::default();
    let (s, v) = browser.post(stack, "/api/signin/password", &json!({"email": ADMIN.0, "password": ADMIN.1})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let session = browser.cookies.get("raptor_session").expect("a raptor_session cookie").clone();
    let (s, options) = browser.post(stack, "/api/passkeys/register/options", &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{options}");
    let credential = passkey(key, &["create", &stack.browser_origin], &options).await;
    let body = json!({"credential": credential, "name": "Ada's laptop"});
    let (s, v) = browser.post(stack, "/api/passkeys/register/verify", &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}\n{}", stack.raptor().stderr());
    let (s, v) = browser.post(stack, "/api/backup-codes", &json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let codes = v["codes"].as_array().expect("codes").iter().map(|c| c.as_str().expect("code").to_string()).collect();
    (session, codes)
}

/// A passkey login at Queue's auth with the authenticator in `key`: by `email` or, with none,
/// usernameless. The answer's body.
pub(crate) async fn login_at_queue(stack: &Stack, key: &std::path::Path, email: Option<&str>) -> (StatusCode, Value) {
    let auth = &stack.auth[0].base_url;
    let start = match email {
        Some(e) => json!({"email": e, "tenant_id": ACME}),
        None => json!({}),
    };
    let (s, v) = stack.post(auth, "/api/v1/auth/webauthn/login/start", None, &start).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let credential = passkey(key, &["get"], &v["options"]).await;
    let body = json!({"ceremony_id": v["ceremony_id"], "credential": credential});
    stack.post(auth, "/api/v1/auth/webauthn/login/finish", None, &body).await
}

/// Grants as Raptor keeps them, written in Raptor's own database, for Vera (who otherwise may read
/// T-1002 only): one made a year ago by Ada on T-1003 with a reason; one that expired last month;
/// one revoked last week.
async fn history_at_raptor(stack: &Stack) {
    let mut conn = stack.raptor().db.conn().await;
    diesel::sql_query(
        "INSERT INTO rbac_grants (customer_id, role_id, scope_type, tenant_id, ticket_id, granted_by, granted_at,
                                  expires_at, reason, revoked_at, revoked_by)
         SELECT vera.id, r.id, 'ticket', $1::uuid, t.ticket, admin.id, now() - t.granted_ago, now() + t.expires_in,
                t.reason, now() - t.revoked_ago, CASE WHEN t.revoked_ago IS NULL THEN NULL ELSE admin.id END
         FROM customers vera, customers admin, rbac_roles r,
              (VALUES ('T-1003', interval '365 days', interval '100 years', 'on call last winter', NULL::interval),
                      ('T-2001', interval '90 days', interval '-30 days', 'a month, ended', NULL),
                      ('T-2002', interval '60 days', NULL, 'until revoked', interval '7 days'))
                AS t (ticket, granted_ago, expires_in, reason, revoked_ago)
         WHERE vera.email = 'viewer@acme.test' AND admin.email = 'admin@acme.test'
           AND r.name = 'viewer' AND r.tenant_id IS NULL",
    )
    .bind::<Text, _>(ACME)
    .execute(&mut conn)
    .await
    .expect("Raptor's grant history");
}

/// Whether `text` appears in any text, jsonb or bytea column of Queue's schemas.
async fn queue_database_holds(stack: &Stack, text: &str) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Column {
        #[diesel(sql_type = Text)]
        at: String,
    }
    let mut conn = stack.db().conn().await;
    let columns: Vec<Column> = diesel::sql_query(
        "SELECT format('%I.%I.%I.%s', table_schema, table_name, column_name, data_type = 'bytea') AS at
         FROM information_schema.columns
         WHERE table_schema IN ('auth', 'rbac', 'audit') AND data_type IN ('text', 'jsonb', 'bytea', 'character varying')",
    )
    .load(&mut conn)
    .await
    .expect("Queue's columns");
    let mut found = Vec::new();
    for c in columns {
        let parts: Vec<&str> = c.at.split('.').collect();
        let [schema, table, column, bytes] = parts[..] else { panic!("schema.table.column.bool: {}", c.at) };
        let value = if bytes == "true" { format!("encode({column}, 'escape')") } else { format!("{column}::text") };
        let sql = format!("SELECT count(*)::text AS at FROM {schema}.{table} WHERE position($1 in {value}) > 0");
        let hits: Column = diesel::sql_query(sql).bind::<Text, _>(text).get_result(&mut conn).await.expect("search");
        if hits.at != "0" {
            found.push(format!("{schema}.{table}.{column}"));
        }
    }
    found
}

/// The Queue user of a Raptor customer id (auth's lookup by legacy id): (status, user).
pub(crate) async fn lookup(stack: &Stack, legacy_id: &str) -> (StatusCode, Value) {
    let token = stack.keys.token("raptor", "auth", &["users:read"]);
    let path = format!("/internal/v1/users?legacy_id={legacy_id}");
    stack.get(&stack.auth[0].base_url, &path, Some(&token)).await
}

/// Whether rbac lets `principal` read ticket `ticket` of Acme.
async fn may_read(stack: &Stack, principal: &str, ticket: &str) -> Value {
    let body = json!({"principal_id": principal, "permission": "ticket.read",
                      "resource": {"tenant_id": ACME, "ticket_id": ticket}});
    let (s, v) = stack.post(&stack.rbac[0].base_url, "/api/v1/rbac/check", Some(&stack.rbac_admin()), &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["allowed"].clone()
}

/// The audit chain of the tenant once auth's outbox has delivered (the count stops moving).
async fn settled_chain(stack: &Stack) -> usize {
    let mut last = usize::MAX;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = stack.audit_events(ACME).await.len();
        if n == last {
            return n;
        }
        assert!(Instant::now() < deadline, "the audit chain settles within 30 s");
        last = n;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raptors_people_arrive_at_queue_as_they_were() {
    let stack = Stack::start(with_raptor()).await;
    let dir = tempfile::tempdir().expect("tmp");
    let key = dir.path().join("ada-passkey.json");
    let (token, codes) = ada_at_raptor(&stack, &key).await;
    history_at_raptor(&stack).await;
    let auth = stack.auth[0].base_url.clone();
    let rbac = stack.rbac[0].base_url.clone();

    // A dry run first: the report says what would come; nothing is written.
    let (code, dry) = import(&stack, &["--dry-run"]).await;
    assert_eq!(code, 0, "{dry:#}");
    assert_eq!(dry["dry_run"], true);
    let users = outcomes(&dry).into_iter().find(|(k, _)| k == "users").expect("users").1;
    assert_eq!(users[0], 3, "three demo customers would be created: {dry:#}");
    let (s, _) = lookup(&stack, "1").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a dry run created no user");

    // The import.
    let (code, first) = import(&stack, &[]).await;
    assert_eq!(code, 0, "{first:#}\n{}", stack.logs());
    for (kind, [created, _, _, _, refused]) in outcomes(&first) {
        assert_eq!(refused, 0, "{kind}: nothing refused: {first:#}");
        assert!(created > 0 || kind == "roles", "{kind}: something created: {first:#}");
    }
    let (s, ada) = lookup(&stack, "1").await;
    assert_eq!(s, StatusCode::OK, "{ada}");
    assert_eq!((&ada["email"], &ada["tenant_id"]), (&json!(ADMIN.0), &json!(ACME)), "{ada}");
    let ada_id = ada["id"].as_str().expect("Ada's Queue id").to_string();
    let chain_after_first = settled_chain(&stack).await;

    // Nobody is signed out: Ada's raptor_session value is a session at Queue.
    let (s, me) = stack.get(&auth, "/api/v1/auth/session", Some(&token)).await;
    assert_eq!(s, StatusCode::OK, "Raptor's session at Queue: {me}");
    assert_eq!(me["user"]["id"], json!(ada_id), "{me}");
    // ... and Queue keeps only its hash.
    let held = queue_database_holds(&stack, &token).await;
    assert!(held.is_empty(), "Raptor's session token is in Queue's database at {held:?}");

    // Nobody re-enrolls: the passkey registered at Raptor signs in at Queue, by email and
    // usernameless (Raptor's user handle finds her).
    let (s, v) = login_at_queue(&stack, &key, Some(ADMIN.0)).await;
    assert_eq!(s, StatusCode::OK, "a Raptor passkey by email at Queue: {v}\n{}", stack.logs());
    assert_eq!(v["session"]["user_id"], json!(ada_id), "{v}");
    let (s, v) = login_at_queue(&stack, &key, None).await;
    assert_eq!(s, StatusCode::OK, "a Raptor passkey usernameless at Queue: {v}");
    assert_eq!(v["session"]["user_id"], json!(ada_id), "{v}");

    // Nothing that protects an account is lost: a Raptor backup code redeems at Queue, once.
    let redeem = json!({"email": ADMIN.0, "code": codes[0], "tenant_id": ACME});
    let (s, v) = stack.post(&auth, "/api/v1/auth/backup-codes/redeem", None, &redeem).await;
    assert_eq!(s, StatusCode::OK, "a Raptor code at Queue: {v}");
    let (s, v) = stack.post(&auth, "/api/v1/auth/backup-codes/redeem", None, &redeem).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the same code twice: {v}");

    // Access does not change: Vera's grant of last year checks allowed at Queue, with its original
    // granter and time; the expired and the revoked ones deny.
    let (_, vera) = lookup(&stack, "3").await;
    assert_eq!(vera["email"], "viewer@acme.test", "{vera}");
    let vera_id = vera["id"].as_str().expect("Vera's Queue id").to_string();
    assert_eq!(may_read(&stack, &vera_id, "T-1002").await, true, "the demo grant is in force at Queue");
    assert_eq!(may_read(&stack, &vera_id, "T-1001").await, false, "and only it");
    assert_eq!(may_read(&stack, &vera_id, "T-1003").await, true, "a Raptor grant is in force at Queue");
    assert_eq!(may_read(&stack, &vera_id, "T-2001").await, false, "an expired Raptor grant denies");
    assert_eq!(may_read(&stack, &vera_id, "T-2002").await, false, "a revoked Raptor grant denies");
    let at = (chrono::Utc::now() - chrono::Duration::days(30)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let path = format!("/api/v1/rbac/grants?principal_id={vera_id}&ticket_id=T-1003&at={at}");
    let (s, v) = stack.get(&rbac, &path, Some(&stack.rbac_admin())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let grant = &v["grants"][0];
    assert_eq!(grant["reason"], "on call last winter", "{v}");
    assert_eq!(grant["granted_by"], format!("user:{ada_id}"), "{v}");
    let granted_at =
        chrono::DateTime::parse_from_rfc3339(grant["granted_at"].as_str().expect("granted_at")).expect("time");
    let age = chrono::Utc::now().signed_duration_since(granted_at);
    assert!((364..=366).contains(&age.num_days()), "granted a year ago: {grant}");
    // A month ago the grant that expired since was still in force.
    let path = format!("/api/v1/rbac/grants?principal_id={vera_id}&ticket_id=T-2001&at={at}");
    let (_, v) = stack.get(&rbac, &path, Some(&stack.rbac_admin())).await;
    assert_eq!(v["grants"].as_array().map(Vec::len), Some(0), "expired 30 days ago, not in force at {at}: {v}");

    // Running it again changes nothing: every record unchanged, no new audit event.
    let chain_before_second = settled_chain(&stack).await;
    assert!(chain_before_second > chain_after_first, "the sign-ins at Queue were audited");
    let (code, second) = import(&stack, &[]).await;
    assert_eq!(code, 0, "{second:#}");
    for (kind, [created, updated, _, skipped, refused]) in outcomes(&second) {
        // Ada's passkey counter moved and her code was used at Queue since: Queue's news, which
        // Raptor's older values do not undo.
        assert_eq!((created, updated, refused), (0, 0, 0), "{kind} on the second run: {second:#}");
        assert_eq!(skipped, 0, "{kind} on the second run: {second:#}");
    }
    assert_eq!(settled_chain(&stack).await, chain_before_second, "the second run wrote no audit event");
}
