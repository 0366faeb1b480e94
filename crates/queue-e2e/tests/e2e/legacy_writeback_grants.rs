//! Issue 19, item 3 (rbac's half), end to end with the real Raptor: after the import, Ada (signed
//! in at Raptor, carried over) grants Raptor's role `triage` to Vera on a ticket at Queue through
//! the proxy; the grant appears at Raptor with its granter, reason and time and checks allowed
//! there; a second import recognises it (nothing duplicated); revoked at Queue, it is revoked at
//! Raptor. With Raptor stopped, a new grant waits and `queuectl proxy rollback --wait 2` refuses
//! naming it; Raptor back, the rollback proceeds and Raptor has the grant.

use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

use crate::legacy_import::{ACME, Browser, import, lookup, outcomes};
use crate::raptor::ADMIN;
use crate::support::{Options, RaptorOptions, Stack, bin};

/// A grant row at Raptor, as the write-back left it.
#[derive(diesel::QueryableByName, Debug)]
struct AtRaptor {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    granted_by: Option<i64>,
    #[diesel(sql_type = Timestamptz)]
    granted_at: chrono::DateTime<chrono::Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    reason: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    #[diesel(sql_type = Nullable<BigInt>)]
    revoked_by: Option<i64>,
}

async fn raptor_id(stack: &Stack, email: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let mut conn = stack.raptor().db.conn().await;
    let found: Id = diesel::sql_query("SELECT id FROM customers WHERE email = $1")
        .bind::<Text, _>(email)
        .get_result(&mut conn)
        .await
        .expect("a customer");
    found.id
}

/// Raptor's tenant role `triage` (reads tickets): the role the grants below name. Its id.
async fn triage_at_raptor(stack: &Stack) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let mut conn = stack.raptor().db.conn().await;
    let role: Id = diesel::sql_query(
        "INSERT INTO rbac_roles (tenant_id, name, description, created_at)
         VALUES ($1::uuid, 'triage', 'first line', now() - interval '30 days') RETURNING id",
    )
    .bind::<Text, _>(ACME)
    .get_result(&mut conn)
    .await
    .expect("a role");
    diesel::sql_query("INSERT INTO rbac_role_permissions (role_id, permission) VALUES ($1, 'ticket.read')")
        .bind::<BigInt, _>(role.id)
        .execute(&mut conn)
        .await
        .expect("its permission");
    role.id
}

/// Vera's grants at Raptor on `ticket`.
async fn at_raptor(stack: &Stack, vera: i64, ticket: &str) -> Vec<AtRaptor> {
    let mut conn = stack.raptor().db.conn().await;
    diesel::sql_query(
        "SELECT id, granted_by, granted_at, reason, revoked_at, revoked_by FROM rbac_grants
         WHERE customer_id = $1 AND ticket_id = $2 ORDER BY id",
    )
    .bind::<BigInt, _>(vera)
    .bind::<Text, _>(ticket)
    .load(&mut conn)
    .await
    .expect("Raptor's grants")
}

/// Waits until Raptor holds `n` grants of Vera on `ticket`, the last one revoked or not.
async fn until_at_raptor(stack: &Stack, vera: i64, ticket: &str, revoked: bool) -> AtRaptor {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut found = at_raptor(stack, vera, ticket).await;
        if let Some(g) = found.pop()
            && g.revoked_at.is_some() == revoked
        {
            assert!(found.is_empty(), "one grant at Raptor, not {}: {found:?}", found.len() + 1);
            return g;
        }
        assert!(Instant::now() < deadline, "Vera's grant on {ticket} (revoked: {revoked}) at Raptor\n{}", stack.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Raptor's own check (`raptor.rbac.may`'s query): whether Vera may read `ticket` of Acme.
async fn raptor_allows(stack: &Stack, vera: i64, ticket: &str) -> bool {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let mut conn = stack.raptor().db.conn().await;
    let n: N = diesel::sql_query(
        "SELECT count(*) AS n FROM rbac_grants g JOIN rbac_role_permissions rp ON rp.role_id = g.role_id
         JOIN customers c ON c.id = g.customer_id
         WHERE g.customer_id = $1 AND rp.permission = 'ticket.read' AND c.is_active
           AND g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > now())
           AND (g.scope_type = 'global' OR (g.scope_type = 'tenant' AND g.tenant_id = $2::uuid)
                OR (g.scope_type = 'ticket' AND g.tenant_id = $2::uuid AND g.ticket_id = $3))",
    )
    .bind::<BigInt, _>(vera)
    .bind::<Text, _>(ACME)
    .bind::<Text, _>(ticket)
    .get_result(&mut conn)
    .await
    .expect("Raptor's check");
    n.n > 0
}

/// A grant of `triage` on `ticket` to `principal`, by `session` through the proxy.
async fn grant_through_proxy(stack: &Stack, session: &str, principal: &str, ticket: &str) -> Value {
    let body = json!({"principal_id": principal, "role": "triage",
                      "scope": {"type": "ticket", "tenant_id": ACME, "ticket_id": ticket},
                      "reason": format!("covers {ticket} while Alan is away")});
    let (s, v) = stack.post(&stack.proxy.base_url, "/api/v1/rbac/grants", Some(session), &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}\n{}", stack.logs());
    v["grant"].clone()
}

/// `queuectl proxy ARGS…` against the stack, as the operator: (exit code, stdout, stderr).
async fn queuectl_proxy(stack: &Stack, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(bin("queuectl"))
        .arg("proxy")
        .args(args)
        .args(["--admin-url", &stack.admin, "--auth-url", &stack.auth[0].base_url])
        .args(["--rbac-url", &stack.rbac[0].base_url])
        .env("QUEUE_OPERATOR_KEY", stack.keys.private("operator"))
        .env_remove("DATABASE_URL")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run queuectl proxy");
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_made_at_queue_reaches_raptor_and_a_rollback_waits_for_it() {
    let raptor = RaptorOptions { write_back: true, ..RaptorOptions::default() };
    let mut stack = Stack::start(Options { raptor: Some(raptor), ..Options::default() }).await;
    let triage = triage_at_raptor(&stack).await;
    let mut browser = Browser::default();
    let (s, v) = browser.post(&stack, "/api/signin/password", &json!({"email": ADMIN.0, "password": ADMIN.1})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let ada_session = browser.cookies.get("raptor_session").expect("a raptor_session cookie").clone();
    let (ada, vera) = (raptor_id(&stack, ADMIN.0).await, raptor_id(&stack, "viewer@acme.test").await);

    let (code, report) = import(&stack, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    let (s, vera_at_queue) = lookup(&stack, &vera.to_string()).await;
    assert_eq!(s, StatusCode::OK, "{vera_at_queue}");
    let vera_id = vera_at_queue["id"].as_str().expect("Vera's Queue id").to_string();
    assert!(!raptor_allows(&stack, vera, "T-1005").await, "not before the grant");

    // Ada, still signed in from Raptor, grants at Queue through the proxy: it reaches Raptor with
    // her as the granter, the reason and Queue's time, and Raptor's check allows it.
    let granted = grant_through_proxy(&stack, &ada_session, &vera_id, "T-1005").await;
    let row = until_at_raptor(&stack, vera, "T-1005", false).await;
    assert_eq!(row.granted_by, Some(ada), "{row:?}");
    assert_eq!(row.reason.as_deref(), Some("covers T-1005 while Alan is away"));
    let queue_time: chrono::DateTime<chrono::Utc> = granted["granted_at"].as_str().expect("t").parse().expect("time");
    assert_eq!(row.granted_at, queue_time, "Queue's time, to the microsecond");
    assert!(raptor_allows(&stack, vera, "T-1005").await, "Raptor's own check allows it");
    let raptor_role: Vec<i64> = {
        #[derive(diesel::QueryableByName)]
        struct R {
            #[diesel(sql_type = BigInt)]
            role_id: i64,
        }
        let mut conn = stack.raptor().db.conn().await;
        let r: Vec<R> = diesel::sql_query("SELECT role_id FROM rbac_grants WHERE id = $1")
            .bind::<BigInt, _>(row.id)
            .load(&mut conn)
            .await
            .expect("role");
        r.into_iter().map(|r| r.role_id).collect()
    };
    assert_eq!(raptor_role, vec![triage]);

    // The next import recognises it: nothing created, nothing refused.
    let (code, again) = import(&stack, &[]).await;
    assert_eq!(code, 0, "{again:#}");
    let grants = outcomes(&again).into_iter().find(|(k, _)| k == "grants").expect("grants").1;
    assert_eq!((grants[0], grants[4]), (0, 0), "no grant created or refused: {again:#}");

    // Revoked at Queue → revoked at Raptor, by Ada; Raptor's check denies.
    let id = granted["id"].as_str().expect("grant id");
    let (s, v) = stack
        .call(
            reqwest::Method::DELETE,
            format!("{}/api/v1/rbac/grants/{id}", stack.proxy.base_url),
            Some(&ada_session),
            Some(&json!({"reason": "Alan is back"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let revoked = until_at_raptor(&stack, vera, "T-1005", true).await;
    assert_eq!((revoked.id, revoked.revoked_by), (row.id, Some(ada)), "{revoked:?}");
    assert!(!raptor_allows(&stack, vera, "T-1005").await);

    // Raptor down: a new grant waits, and the rollback refuses, naming it.
    let (code, _, err) = queuectl_proxy(&stack, &["phase", "2"]).await;
    assert_eq!(code, 0, "{err}");
    stack.raptor.as_mut().expect("Raptor").stop();
    grant_through_proxy(&stack, &ada_session, &vera_id, "T-1006").await;
    let (code, out, err) = queuectl_proxy(&stack, &["rollback", "--wait", "2"]).await;
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("refusing to move routes back to Raptor"), "{err}");
    assert!(err.contains("rbac: 1 pending") && err.contains("grant.create 1 pending"), "{err}");
    assert!(err.contains("last error: POST http://"), "Raptor's outage named: {err}");
    assert_eq!(stack.admin_get("/admin/routes").await["phase"], 2, "nothing moved");

    // Raptor back: the grant goes, the rollback proceeds.
    let raptor = stack.raptor.take().expect("Raptor").restart().await;
    stack.raptor = Some(raptor);
    let (code, out, err) = queuectl_proxy(&stack, &["rollback", "--wait", "60"]).await;
    assert_eq!(code, 0, "{out}\n{err}\n{}", stack.logs());
    assert!(out.contains("nothing pending at auth or rbac; rolling back"), "{out}");
    assert_eq!(stack.admin_get("/admin/routes").await["phase"], 1);
    let late = until_at_raptor(&stack, vera, "T-1006", false).await;
    assert_eq!(late.granted_by, Some(ada), "{late:?}");
    assert!(raptor_allows(&stack, vera, "T-1006").await, "after the rollback, Raptor has it");
}
