//! Raptor, the legacy app, behind the proxy in phase 1, as its people meet it and as an attacker
//! does: the journey `tests/browser/raptor.mjs` in headless Chromium (password and passkey
//! sign-in, the tickets page by permission; screenshots in
//! `<target>/browser-screenshots/raptor/`), checked from outside the browser in Raptor's database
//! and against what the proxy forwarded; then cross-origin writes, a forged session cookie and
//! forged forwarding headers, sent through the proxy; and audit stopped and brought back.

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::RunQueryDsl;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, ORIGIN, SET_COOKIE};
use serde_json::{Value, json};

use crate::headless::run_journey;
use crate::support::{Options, RaptorOptions, Stack};

pub(crate) const ADMIN: (&str, &str) = ("admin@acme.test", "raptor-admin-demo");

pub(crate) fn with_raptor() -> Options {
    Options { raptor: Some(RaptorOptions::default()), ..Options::default() }
}

/// The stack's route table is at phase 1 (the admin API says so), and the proxy's front door
/// answers with Raptor's home page.
async fn assert_phase_1_and_raptor_behind_the_proxy(stack: &Stack) {
    let table = stack.admin_get("/admin/routes").await;
    assert_eq!(table["phase"], 1, "{table}");
    let r = stack.client.get(format!("{}/", stack.proxy.base_url)).send().await.expect("GET /");
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.expect("the home page");
    assert!(page.contains("<title>Home · Raptor</title>"), "Raptor's home page through the proxy: {page}");
}

/// Requests the proxy forwarded to the legacy side, from its metrics (`queue_proxy_requests_total`,
/// `side="legacy"`, every route and status).
async fn proxy_legacy_requests(stack: &Stack) -> u64 {
    let token = stack.keys.token("operator", "proxy", &["proxy:admin"]);
    let text = stack
        .client
        .get(format!("{}/metrics", stack.admin))
        .bearer_auth(token)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("queue_proxy_requests_total{") && l.contains("side=\"legacy\""))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, n)| n.parse::<f64>().ok()))
        .map(|n| n as u64)
        .sum()
}

/// Requests Raptor served, from werkzeug's request lines in its log (`werkzeug INFO 127.0.0.1 - -
/// [...] "GET /path HTTP/1.1" 200 -`, the request coloured by status), except the stack's own
/// readiness checks of `/healthz`, which go to Raptor directly.
fn raptor_served(stack: &Stack) -> usize {
    stack
        .raptor()
        .stderr()
        .lines()
        .filter(|l| l.contains(" werkzeug INFO ") && l.contains(" HTTP/1.1") && !l.contains(" /healthz HTTP/1.1"))
        .count()
}

#[derive(diesel::QueryableByName, Debug)]
struct Passkey {
    #[diesel(sql_type = Nullable<Text>)]
    name: Option<String>,
    #[diesel(sql_type = BigInt)]
    sign_count: i64,
    #[diesel(sql_type = Text)]
    device_type: String,
    #[diesel(sql_type = Nullable<Text>)]
    last_used_at: Option<String>,
}

#[derive(diesel::QueryableByName, Debug)]
struct Session {
    #[diesel(sql_type = Text)]
    ip: String,
    #[diesel(sql_type = Nullable<Text>)]
    revoked_at: Option<String>,
}

#[derive(diesel::QueryableByName, Debug)]
struct Grant {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    revoked_at: Option<String>,
}

async fn passkeys_of(stack: &Stack, email: &str) -> Vec<Passkey> {
    let mut conn = stack.raptor().db.conn().await;
    diesel::sql_query(
        "SELECT w.name, w.sign_count, w.device_type, w.last_used_at::text AS last_used_at \
         FROM webauthn_credentials w JOIN customers c ON c.id = w.customer_id WHERE c.email = $1 ORDER BY w.id",
    )
    .bind::<Text, _>(email)
    .load(&mut conn)
    .await
    .expect("Raptor's webauthn_credentials")
}

async fn sessions_of(stack: &Stack, email: &str) -> Vec<Session> {
    let mut conn = stack.raptor().db.conn().await;
    diesel::sql_query(
        "SELECT host(s.ip) AS ip, s.revoked_at::text AS revoked_at \
         FROM customer_sessions s JOIN customers c ON c.id = s.customer_id WHERE c.email = $1 ORDER BY s.id",
    )
    .bind::<Text, _>(email)
    .load(&mut conn)
    .await
    .expect("Raptor's customer_sessions")
}

async fn grants_of(stack: &Stack, email: &str) -> Vec<Grant> {
    let mut conn = stack.raptor().db.conn().await;
    diesel::sql_query(
        "SELECT g.id, g.revoked_at::text AS revoked_at \
         FROM rbac_grants g JOIN customers c ON c.id = g.customer_id WHERE c.email = $1 ORDER BY g.id",
    )
    .bind::<Text, _>(email)
    .load(&mut conn)
    .await
    .expect("Raptor's rbac_grants")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raptor_in_headless_chromium_through_the_proxy_in_phase_1() {
    let stack = Stack::start(with_raptor()).await;
    assert_phase_1_and_raptor_behind_the_proxy(&stack).await;

    let (forwarded, served) = (proxy_legacy_requests(&stack).await, raptor_served(&stack));
    let journey = run_journey("raptor", &[stack.browser_origin.clone().into()], &stack, 13).await;

    // What the journey did, seen from outside the browser. The admin's passkey is in Raptor's
    // table, named as she named it, used for both passkey sign-ins.
    let keys = passkeys_of(&stack, ADMIN.0).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].name.as_deref(), Some("Ada’s laptop"), "{keys:?}");
    assert!(keys[0].sign_count >= 2 && keys[0].last_used_at.is_some(), "used at two sign-ins: {keys:?}");
    assert_eq!(keys[0].device_type, "single_device", "{keys:?}");
    // Three sign-ins (password, passkey, passkey), each ended by signing out.
    let sessions = sessions_of(&stack, ADMIN.0).await;
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    assert!(sessions.iter().all(|s| s.revoked_at.is_some()), "every session revoked at sign-out: {sessions:?}");
    // The agent's grant was revoked from the page.
    let grants = grants_of(&stack, "agent@acme.test").await;
    assert!(grants.len() == 1 && grants[0].revoked_at.is_some(), "{grants:?}");

    // Every request of the journey went through the proxy: the browser sent all of them to the
    // proxy's origin (the journey checks), the proxy forwarded as many to the legacy side, and
    // Raptor served as many, no more.
    let made: u64 = journey
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("requests: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the journey says how many requests it made");
    let forwarded = proxy_legacy_requests(&stack).await - forwarded;
    let served = raptor_served(&stack) - served;
    assert!(made >= 30, "the journey made {made} requests");
    assert_eq!(
        (forwarded, served as u64),
        (made, made),
        "requests the browser made, the proxy forwarded to legacy, Raptor served\n{}",
        stack.logs()
    );
    println!("Raptor journey: {made} requests in {:.1?}", journey.took);
}

/// The `raptor_session` cookie a response sets (name=value), if any.
pub(crate) fn session_cookie(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("raptor_session=") && !v.starts_with("raptor_session=;"))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raptor_through_the_proxy_refuses_cross_origin_writes_forged_cookies_and_forged_addresses() {
    let stack = Stack::start(with_raptor()).await;
    assert_phase_1_and_raptor_behind_the_proxy(&stack).await;
    let proxy = &stack.proxy.base_url;
    let own = stack.browser_origin.as_str();
    let evil = "http://evil.example";
    let post = |path: &str, origin: &str, cookie: Option<&str>, body: &Value| {
        let mut r = stack.client.post(format!("{proxy}{path}")).header(ORIGIN, origin).json(body);
        if let Some(c) = cookie {
            r = r.header(COOKIE, c);
        }
        r.send()
    };
    let me = |cookie: String| stack.client.get(format!("{proxy}/api/me")).header(COOKIE, cookie).send();
    let signin = json!({"email": ADMIN.0, "password": ADMIN.1});

    // A sign-in from another origin: refused, no session made, no cookie set.
    let r = post("/api/signin/password", evil, None, &signin).await.expect("sign in");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(session_cookie(&r), None);
    assert!(sessions_of(&stack, ADMIN.0).await.is_empty(), "no session from a cross-origin sign-in");

    // The client names another address in every forwarding header it can: Raptor records the
    // address the proxy saw (loopback, this test's socket), never the client's claim. The proxy
    // trusts nobody in front of it here (as deploy/local ships), so it replaces X-Forwarded-For
    // with the peer's address and drops Forwarded and X-Real-IP; Raptor, one proxy behind
    // (`RAPTOR_PROXY_HOPS=1`), takes the client's address from X-Forwarded-For.
    let forged = "203.0.113.66";
    let r = stack
        .client
        .post(format!("{proxy}/api/signin/password"))
        .header(ORIGIN, own)
        .header("X-Forwarded-For", forged)
        .header("X-Real-IP", forged)
        .header("Forwarded", format!("for={forged};proto=https"))
        .json(&signin)
        .send()
        .await
        .expect("sign in");
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = session_cookie(&r).expect("a raptor_session cookie");
    let sessions = sessions_of(&stack, ADMIN.0).await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].ip, "127.0.0.1", "Raptor saw the proxy, not the client's claim: {sessions:?}");
    let r = me(cookie.clone()).await.expect("me");
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["customer"]["email"], ADMIN.0, "{body}");

    // A write from another origin with the admin's own cookie (what a cross-site form or fetch
    // would carry): refused, and nothing changed.
    let agent = grants_of(&stack, "agent@acme.test").await;
    assert!(agent.len() == 1 && agent[0].revoked_at.is_none(), "{agent:?}");
    let revoke = format!("/api/rbac/grants/{}/revoke", agent[0].id);
    let r = post(&revoke, evil, Some(&cookie), &json!({"reason": "csrf"})).await.expect("revoke");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"], format!("cross-origin request from {evil} refused"), "{v}");
    assert!(grants_of(&stack, "agent@acme.test").await[0].revoked_at.is_none(), "the grant stands");
    let r = post("/api/signout", evil, Some(&cookie), &json!({})).await.expect("sign out");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(me(cookie.clone()).await.expect("me").status(), StatusCode::OK, "still signed in");
    assert!(sessions_of(&stack, ADMIN.0).await[0].revoked_at.is_none(), "the session stands");
    // A form post from another origin (the page's own sign-out form, from elsewhere) too.
    let r = stack
        .client
        .post(format!("{proxy}/signout"))
        .header(ORIGIN, evil)
        .header(COOKIE, &cookie)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("x=1")
        .send()
        .await
        .expect("sign out form");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(me(cookie.clone()).await.expect("me").status(), StatusCode::OK, "still signed in");
    // The same write from Raptor's own origin goes through (the refusal was the origin's doing).
    let r = post(&revoke, own, Some(&cookie), &json!({"reason": "e2e"})).await.expect("revoke");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(grants_of(&stack, "agent@acme.test").await[0].revoked_at.is_some(), "revoked from Raptor's origin");

    // A forged raptor_session (the right shape: 43 URL-safe base64 characters) signs nobody in:
    // the API says 401, the pages send the visitor to sign in.
    let forged_cookie = "raptor_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_string();
    let r = me(forged_cookie.clone()).await.expect("me");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    for page in ["/account", "/tickets"] {
        let r = no_redirect.get(format!("{proxy}{page}")).header(COOKIE, &forged_cookie).send().await.expect("page");
        assert_eq!(r.status(), StatusCode::FOUND, "{page}");
        assert_eq!(r.headers()["location"], "/signin", "{page}");
    }
    let home = no_redirect.get(format!("{proxy}/")).header(COOKIE, &forged_cookie).send().await.expect("home");
    assert!(home.text().await.expect("home").contains("You are not signed in."), "the home page knows nobody");
    // The real session, signed out from Raptor's origin, is dead too (its row revoked).
    let r = post("/api/signout", own, Some(&cookie), &json!({})).await.expect("sign out");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(me(cookie.clone()).await.expect("me").status(), StatusCode::UNAUTHORIZED, "signed out");
    assert!(sessions_of(&stack, ADMIN.0).await[0].revoked_at.is_some(), "the session is revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_audit_stopped_raptor_keeps_serving_and_audit_comes_back_on_its_address() {
    let mut stack = Stack::start(with_raptor()).await;
    let proxy = stack.proxy.base_url.clone();
    let audit = stack.audit.base_url.clone();
    let signin = || {
        stack
            .client
            .post(format!("{proxy}/api/signin/password"))
            .header(ORIGIN, &stack.browser_origin)
            .json(&json!({"email": ADMIN.0, "password": ADMIN.1}))
            .send()
    };

    stack.audit.stop();
    assert!(stack.client.get(format!("{audit}/healthz")).send().await.is_err(), "audit is down");
    // Queue's own writes that must be audited first now fail; Raptor still signs people in.
    let r = stack.grant(&proxy, "agent-9", "T9", None).await;
    assert!(r.status().is_server_error(), "a grant with audit down: {}", r.status());
    let r = signin().await.expect("sign in");
    assert_eq!(r.status(), StatusCode::OK, "Raptor works with audit down\n{}", stack.logs());

    // Back on the same address with the same config and keys: the chain goes on.
    stack.audit.restart().await;
    assert_eq!(stack.audit.base_url, audit);
    let r = stack.grant(&proxy, "agent-9", "T9", None).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", stack.logs());
    let events = stack.audit_events("T9").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(stack.verify_chain("T9").await["ok"], true);
    assert_eq!(signin().await.expect("sign in").status(), StatusCode::OK);
}

/// What the proxy tells the legacy side about the client, seen by the echo stand-in (the same
/// forwarding path as Raptor's; Raptor reads X-Forwarded-For as the proxy set it, which the test
/// above checks in the session's `ip`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarding_headers_do_not_reach_the_legacy_side_as_the_clients_address() {
    let stack = Stack::start(Options::default()).await;
    let forged = "203.0.113.66";
    let r = stack
        .client
        .get(format!("{}/api/v1/tickets", stack.proxy.base_url))
        .header("X-Forwarded-For", forged)
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "evil.example")
        .header("Forwarded", format!("for={forged};proto=https;host=evil.example"))
        .header("X-Real-IP", forged)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
    let echo: Value = r.json().await.expect("the echo");
    let h = &echo["headers"];
    // Replaced, not extended: the proxy trusts nobody in front of it (as deploy/local ships).
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{echo}");
    assert_eq!(h["x-forwarded-proto"], "http", "{echo}");
    let host = stack.proxy.base_url.trim_start_matches("http://");
    assert_eq!(h["x-forwarded-host"], host, "{echo}");
    assert!(h.get("forwarded").is_none(), "Forwarded is dropped: {echo}");
    assert!(h.get("x-real-ip").is_none(), "a client's X-Real-IP is dropped: {echo}");
}
