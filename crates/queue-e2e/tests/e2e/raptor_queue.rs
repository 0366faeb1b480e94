//! Raptor as Queue's client (issue 18, "Raptor uses it"): its security events reach Queue's audit
//! chain through its outbox, once, across an audit outage; Queue trusts it through its JWKS and a
//! key rotation needs no restart and causes no 401; a Raptor page shows Queue's permission check.
//! Everything through the proxy in phase 1, as a person signed in at Raptor reaches it.

use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, ORIGIN};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

use crate::raptor::{ADMIN, session_cookie, with_raptor};
use crate::support::{Options, RaptorOptions, RaptorTrust, Stack};

/// The demo tenant Raptor seeds (legacy/raptor/README.md).
const ACME: &str = "5a3c0e1e-0000-4000-8000-00000000a0c1";

/// Signs the demo admin in at Raptor through the proxy; the `raptor_session` cookie.
async fn admin_cookie(stack: &Stack) -> String {
    let r = stack
        .client
        .post(format!("{}/api/signin/password", stack.proxy.base_url))
        .header(ORIGIN, &stack.browser_origin)
        .json(&json!({"email": ADMIN.0, "password": ADMIN.1}))
        .send()
        .await
        .expect("sign in");
    assert_eq!(r.status(), StatusCode::OK, "{}", stack.logs());
    session_cookie(&r).expect("a raptor_session cookie")
}

/// A JSON call to Raptor through the proxy with the session cookie (and Raptor's own origin).
async fn at_raptor(
    stack: &Stack,
    cookie: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut r = stack
        .client
        .request(method, format!("{}{path}", stack.proxy.base_url))
        .header(COOKIE, cookie)
        .header(ORIGIN, &stack.browser_origin);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.expect("a call to Raptor");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Raptor's `/healthz` (directly: the stack's own look at it).
async fn raptor_health(stack: &Stack) -> Value {
    let r = stack.client.get(format!("{}/healthz", stack.raptor().url)).send().await.expect("healthz");
    r.json().await.expect("healthz json")
}

#[derive(diesel::QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// A demo customer's id, from Raptor's database.
async fn customer_id(stack: &Stack, email: &str) -> i64 {
    let mut conn = stack.raptor().db.conn().await;
    let found: Id = diesel::sql_query("SELECT id FROM customers WHERE lower(btrim(email)) = $1")
        .bind::<Text, _>(email)
        .get_result(&mut conn)
        .await
        .expect("the customer");
    found.id
}

/// Waits until Queue's audit holds the events `want` says it should for the demo tenant.
async fn audit_until(stack: &Stack, what: &str, want: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = stack.audit_events(ACME).await;
        if want(&events) {
            return events;
        }
        assert!(Instant::now() < deadline, "{what} within 60 s; the chain has {events:#?}\n{}", stack.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn grant_events<'a>(events: &'a [Value], action: &str, grant_id: i64) -> Vec<&'a Value> {
    let key = if action.ends_with("created") { "/payload/grant/id" } else { "/payload/grant_id" };
    events.iter().filter(|e| e["action"] == action && e.pointer(key) == Some(&json!(grant_id))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_made_in_raptor_reaches_queues_audit_once_across_an_audit_outage() {
    let mut stack = Stack::start(with_raptor()).await;
    let cookie = admin_cookie(&stack).await;
    let admin = customer_id(&stack, ADMIN.0).await;
    let viewer = customer_id(&stack, "viewer@acme.test").await;
    let grant = |ticket: &str, reason: &str| {
        json!({"customer_id": viewer, "role": "viewer", "scope_type": "ticket", "tenant_id": ACME,
               "ticket_id": ticket, "reason": reason})
    };

    // A grant made in Raptor, by the admin, lands in Queue's chain for the tenant.
    let (s, made) =
        at_raptor(&stack, &cookie, reqwest::Method::POST, "/api/rbac/grants", Some(grant("T-1003", "on call"))).await;
    assert_eq!(s, StatusCode::CREATED, "{made}");
    let first = made["grant"]["id"].as_i64().expect("grant id");
    let events =
        audit_until(&stack, "the grant's event", |e| grant_events(e, "raptor.rbac.grant.created", first).len() == 1)
            .await;
    let event = grant_events(&events, "raptor.rbac.grant.created", first)[0];
    assert_eq!(event["actor"], json!({"type": "customer", "id": admin.to_string()}), "{event}");
    assert_eq!(event["target"], json!({"type": "customer", "id": viewer.to_string()}), "{event}");
    assert_eq!(event["payload"]["grant"]["ticket_id"], "T-1003", "{event}");
    assert_eq!(event["payload"]["grant"]["reason"], "on call", "{event}");
    // Only issuer `raptor` may write `raptor.*` (audit's `limits.writers`): another service's
    // token is refused, so these events can only have come from Raptor.
    let forged = json!({"id": uuid::Uuid::new_v4(), "action": "raptor.rbac.grant.created", "tenant_id": ACME,
        "actor": {"type": "customer", "id": "1"}, "target": {"type": "customer", "id": "2"},
        "occurred_at": "2026-12-07T00:00:00Z", "payload": {}});
    let rbac_token = stack.keys.token("rbac", "audit", &["audit:write"]);
    let (s, v) = stack.post(&stack.audit.base_url, "/api/v1/audit/events", Some(&rbac_token), &forged).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // Audit stops. Raptor goes on: a grant, a revocation and a sign-in all work, their events
    // wait in Raptor's outbox.
    stack.audit.stop();
    let (s, during) = at_raptor(
        &stack,
        &cookie,
        reqwest::Method::POST,
        "/api/rbac/grants",
        Some(grant("T-1001", "during the outage")),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "Raptor grants with audit down: {during}");
    let second = during["grant"]["id"].as_i64().expect("grant id");
    let path = format!("/api/rbac/grants/{first}/revoke");
    let (s, v) =
        at_raptor(&stack, &cookie, reqwest::Method::POST, &path, Some(json!({"reason": "rotation ended"}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    admin_cookie(&stack).await;
    let pending = raptor_health(&stack).await["outbox_pending"].as_i64().expect("outbox_pending");
    assert!(pending >= 3, "the outage's events wait in the outbox: {pending}");

    // Audit returns: every event arrives, once, and the chain verifies.
    stack.audit.restart().await;
    audit_until(&stack, "the outage's events", |e| {
        grant_events(e, "raptor.rbac.grant.created", second).len() == 1
            && grant_events(e, "raptor.rbac.grant.revoked", first).len() == 1
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while raptor_health(&stack).await["outbox_pending"] != 0 {
        assert!(Instant::now() < deadline, "Raptor's outbox empties within 30 s\n{}", stack.raptor().stderr());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let chain = stack.audit_events(ACME).await;
    let mut ids: Vec<&str> = chain.iter().filter_map(|e| e["id"].as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), chain.len(), "each event in the chain once");
    assert_eq!(grant_events(&chain, "raptor.rbac.grant.created", first).len(), 1, "the first grant's event once");
    let revoked = grant_events(&chain, "raptor.rbac.grant.revoked", first);
    assert_eq!(revoked[0]["payload"]["reason"], "rotation ended", "{:?}", revoked);
    let sessions = chain.iter().filter(|e| e["action"] == "raptor.session.created").count();
    assert!(sessions >= 2, "both sign-ins, before and during the outage: {sessions}");
    assert_eq!(stack.verify_chain(ACME).await["ok"], true);
}

/// `queue_http_requests_total` with status 401 at a service (its `/metrics`).
async fn unauthorized(stack: &Stack, base: &str) -> u64 {
    let text = stack.client.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("text");
    text.lines()
        .filter(|l| l.starts_with("queue_http_requests_total{") && l.contains("status=\"401\""))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, n)| n.parse::<f64>().ok()))
        .map(|n| n as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raptors_key_rotation_needs_no_restart_and_causes_no_401() {
    // Queue's services trust Raptor through its JWKS; a new key is published 3 s before it signs
    // (more than the services' 1 s minimum between refetches).
    let raptor = RaptorOptions {
        trust: RaptorTrust::Jwks { refetch_min_secs: 1 },
        key_publish_lead_secs: 3,
        key_check_secs: 1,
        ..RaptorOptions::default()
    };
    let stack = Stack::start(Options { raptor: Some(raptor), ..Options::default() }).await;
    let cookie = admin_cookie(&stack).await;
    let check = "/api/queue/check?permission=ticket.read&ticket_id=T-1001";
    // Each check is two signed calls from Raptor: auth (provision, the first time) and rbac.
    let (s, v) = at_raptor(&stack, &cookie, reqwest::Method::GET, check, None).await;
    assert_eq!(s, StatusCode::OK, "{v}\n{}", stack.logs());
    let before =
        (unauthorized(&stack, &stack.auth[0].base_url).await, unauthorized(&stack, &stack.rbac[0].base_url).await);
    let old = raptor_health(&stack).await["signing_kid"].as_str().expect("kid").to_string();

    let (ok, out, err) = stack.raptor().run(&["rotate-key"]).await;
    assert!(ok, "rotate-key: {err}");
    let new = out.trim().to_string();
    assert_ne!(new, old);

    // Keep calling through the switch, and for a while after it.
    let (mut calls, mut after_switch, mut published_both) = (0, 0, false);
    let deadline = Instant::now() + Duration::from_secs(60);
    while after_switch < 30 {
        assert!(Instant::now() < deadline, "the new key signs within 60 s\n{}", stack.raptor().stderr());
        let (s, v) = at_raptor(&stack, &cookie, reqwest::Method::GET, check, None).await;
        assert_eq!(s, StatusCode::OK, "call {calls} during the rotation: {v}\n{}", stack.raptor().stderr());
        assert_eq!(v["raptor"], true, "{v}");
        calls += 1;
        let health = raptor_health(&stack).await;
        if health["signing_kid"] == new.as_str() {
            after_switch += 1;
        } else {
            let jwks: Value = stack
                .client
                .get(format!("{}/.well-known/jwks.json", stack.raptor().url))
                .send()
                .await
                .expect("jwks")
                .json()
                .await
                .expect("json");
            let kids: Vec<&str> =
                jwks["keys"].as_array().expect("keys").iter().filter_map(|k| k["kid"].as_str()).collect();
            published_both |= kids.contains(&old.as_str()) && kids.contains(&new.as_str());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(published_both, "the new key was published beside the old one before it signed");
    let after =
        (unauthorized(&stack, &stack.auth[0].base_url).await, unauthorized(&stack, &stack.rbac[0].base_url).await);
    assert_eq!(after, before, "no 401 at auth or rbac during {calls} checks across the rotation");
    println!("Raptor key rotation: {calls} checks through the proxy ({after_switch} signed with the new key), no 401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_at_raptor_shows_queues_permission_check() {
    let stack = Stack::start(with_raptor()).await;
    let cookie = admin_cookie(&stack).await;
    let ask = |ticket: &'static str| {
        let path = format!("/api/queue/check?permission=ticket.read&ticket_id={ticket}");
        let stack = &stack;
        let cookie = cookie.clone();
        async move { at_raptor(stack, &cookie, reqwest::Method::GET, &path, None).await }
    };
    // Raptor lets its admin read every ticket; Queue has granted her nothing yet.
    let (s, v) = ask("T-1002").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!((&v["raptor"], &v["queue"]), (&json!(true), &json!(false)), "{v}");
    let user = v["queue_user_id"].as_str().expect("the admin's Queue user").to_string();

    // A grant in Queue's rbac for her Queue user, at one ticket: Queue now says yes there only.
    let body = json!({"principal_id": user, "role": "viewer",
                      "scope": {"type": "ticket", "tenant_id": ACME, "ticket_id": "T-1002"}, "reason": "e2e"});
    let (s, v) = stack.post(&stack.rbac[0].base_url, "/api/v1/rbac/grants", Some(&stack.rbac_admin()), &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, v) = ask("T-1002").await;
    assert_eq!((&v["queue"], &v["queue_user_id"]), (&json!(true), &json!(user)), "{v}");
    let (_, v) = ask("T-1001").await;
    assert_eq!(v["queue"], false, "{v}");

    // The page, as the browser gets it through the proxy.
    let r = stack
        .client
        .get(format!("{}/access", stack.proxy.base_url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("/access");
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.expect("page");
    let row = |ticket: &str| {
        let at = page.find(&format!("data-ticket=\"{ticket}\"")).expect("the ticket's row");
        page[at..].split("</tr>").next().expect("row").to_string()
    };
    assert!(row("T-1002").contains(r#"class="queue">allowed"#), "{}", row("T-1002"));
    assert!(row("T-1001").contains(r#"class="queue">denied"#), "{}", row("T-1001"));
    assert!(row("T-1001").contains(r#"class="raptor">allowed"#), "{}", row("T-1001"));
    assert!(page.contains(&user), "the page names the Queue user");
}
