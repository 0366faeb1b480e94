//! Issue 19, item 2 (first half), end to end: nobody is signed out when a route moves. Ada signs
//! in at the real Raptor through the proxy (twice: two browsers), `queuectl legacy import` brings
//! her sessions into the real auth, and a request to a route the table sends to Queue with only
//! her `raptor_session` is signed in at Queue: the proxy swaps in `queue_session` (Expires no
//! later than Raptor's `expires_at`), the swapped cookie alone works next, and Raptor still takes
//! its own cookie. A session signed out at Raptor (and synced by a second import) and a forged
//! value are 401 from auth with no cookie set.

use diesel::sql_types::{Text, Timestamptz};
use diesel_async::RunQueryDsl;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::legacy_import::{Browser, import, lookup, outcomes};
use crate::raptor::{ADMIN, with_raptor};
use crate::support::Stack;

/// A GET through the proxy with `cookie`: (status, its `Set-Cookie` values, body).
async fn through_proxy(stack: &Stack, path: &str, cookie: &str) -> (StatusCode, Vec<String>, Value) {
    call(stack, reqwest::Method::GET, path, cookie).await
}

/// A call through the proxy from the browser's origin with `cookie`: (status, its `Set-Cookie`
/// values, body).
async fn call(stack: &Stack, method: reqwest::Method, path: &str, cookie: &str) -> (StatusCode, Vec<String>, Value) {
    let r = stack
        .client
        .request(method, format!("{}{path}", stack.proxy.base_url))
        .header(reqwest::header::ORIGIN, &stack.browser_origin)
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .expect("a request through the proxy");
    let status = r.status();
    let set = r.headers().get_all(reqwest::header::SET_COOKIE).iter().map(|v| v.to_str().expect("text").to_string());
    let set = set.collect();
    (status, set, r.json().await.unwrap_or(Value::Null))
}

/// Ada signed in at Raptor (password, through the proxy): the browser, with its `raptor_session`.
async fn ada_signs_in(stack: &Stack) -> (Browser, String) {
    let mut browser = Browser::default();
    let (s, v) = browser.post(stack, "/api/signin/password", &json!({"email": ADMIN.0, "password": ADMIN.1})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let session = browser.cookies.get("raptor_session").expect("a raptor_session cookie").clone();
    (browser, session)
}

/// Raptor's `expires_at` of the session whose token is `token` (Raptor keeps it in plaintext).
async fn raptor_expiry(stack: &Stack, token: &str) -> chrono::DateTime<chrono::Utc> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Timestamptz)]
        expires_at: chrono::DateTime<chrono::Utc>,
    }
    let mut conn = stack.raptor().db.conn().await;
    let row: Row = diesel::sql_query("SELECT expires_at FROM customer_sessions WHERE token = $1")
        .bind::<Text, _>(token)
        .get_result(&mut conn)
        .await
        .expect("Raptor's session row");
    row.expires_at
}

/// A proxy metric's value (the sum of its series matching `labels`), from the admin listener.
async fn proxy_metric(stack: &Stack, name: &str, labels: &str) -> f64 {
    let token = stack.keys.token("operator", "proxy", &["proxy:admin"]);
    let r = stack.client.get(format!("{}/metrics", stack.admin)).bearer_auth(token).send().await.expect("metrics");
    let text = r.text().await.expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']) && l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, n)| n.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raptor_session_is_signed_in_at_queue_through_the_proxy() {
    let stack = Stack::start(with_raptor()).await;
    let (_ada, token) = ada_signs_in(&stack).await;
    let (mut other_browser, signed_out) = ada_signs_in(&stack).await;
    assert_ne!(token, signed_out);

    let (code, report) = import(&stack, &[]).await;
    assert_eq!(code, 0, "{report:#}\n{}", stack.logs());
    let (s, ada) = lookup(&stack, "1").await;
    assert_eq!(s, StatusCode::OK, "{ada}");
    let ada_id = ada["id"].as_str().expect("Ada's Queue id").to_string();

    // The session route is on Queue (auth); the browser has only Raptor's cookie.
    let (s, set, me) = through_proxy(&stack, "/api/v1/auth/session", &format!("raptor_session={token}")).await;
    assert_eq!(s, StatusCode::OK, "signed in at Queue with Raptor's session: {me}\n{}", stack.logs());
    assert_eq!(me["user"]["id"], json!(ada_id), "{me}");
    assert_eq!(set.len(), 1, "{set:?}");
    let cookie = &set[0];
    assert!(cookie.starts_with(&format!("queue_session={token}; Path=/; HttpOnly; SameSite=Lax;")), "{cookie}");
    let expires = cookie.split("; Expires=").nth(1).expect("Expires").split(';').next().expect("a date");
    let expires = chrono::DateTime::parse_from_rfc2822(&expires.replace("GMT", "+0000")).expect("an HTTP date");
    let at_raptor = raptor_expiry(&stack, &token).await;
    assert!(expires <= at_raptor, "the cookie ends at {expires}, Raptor's session at {at_raptor}");
    assert!(at_raptor.signed_duration_since(expires).num_seconds() < 2, "and not much earlier: {expires}");
    assert_eq!(proxy_metric(&stack, "queue_proxy_legacy_sessions_carried_total", "").await, 1.0);

    // The swapped cookie alone, the next request: signed in, nothing more to set.
    let (s, set, me) = through_proxy(&stack, "/api/v1/auth/session", &format!("queue_session={token}")).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert_eq!(me["user"]["id"], json!(ada_id), "{me}");
    assert!(set.is_empty(), "{set:?}");
    // Raptor still takes its own cookie beside Queue's (its routes are untouched).
    let both = format!("raptor_session={token}; queue_session={token}");
    let (s, _, me) = through_proxy(&stack, "/api/me", &both).await;
    assert_eq!(s, StatusCode::OK, "Raptor signs her in with its cookie: {me}");
    assert_eq!(me["customer"]["email"], ADMIN.0, "{me}");

    // Signed out at Raptor, then synced: auth knows it as revoked; nothing is carried.
    let (s, v) = other_browser.post(&stack, "/api/signout", &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (code, report) = import(&stack, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    let sessions = outcomes(&report).into_iter().find(|(k, _)| k == "sessions").expect("sessions").1;
    assert!(sessions[1] >= 1, "the sign-out at Raptor reached Queue: {report:#}");
    let (s, set, v) = through_proxy(&stack, "/api/v1/auth/session", &format!("raptor_session={signed_out}")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a session signed out at Raptor: {v}");
    assert!(set.is_empty(), "{set:?}");

    // A forged value of the right shape, and one of the wrong shape: 401 from auth, no cookie.
    let forged = "A".repeat(43);
    for value in [forged.as_str(), "not-a-session"] {
        let (s, set, v) = through_proxy(&stack, "/api/v1/auth/session", &format!("raptor_session={value}")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{value}: {v}");
        assert!(set.is_empty(), "{set:?}");
    }
    assert_eq!(proxy_metric(&stack, "queue_proxy_legacy_sessions_refused_total", "reason=\"unknown\"").await, 2.0);
    assert_eq!(proxy_metric(&stack, "queue_proxy_legacy_sessions_refused_total", "reason=\"malformed\"").await, 1.0);
    assert_eq!(proxy_metric(&stack, "queue_proxy_legacy_sessions_carried_total", "").await, 1.0);
}

/// The names of the cookies a `Set-Cookie` list removes (an empty value and `Max-Age=0`).
fn removed(set: &[String]) -> Vec<&str> {
    let mut names: Vec<&str> = set
        .iter()
        .filter(|c| c.contains("Max-Age=0"))
        .filter_map(|c| c.split_once('=').filter(|(_, rest)| rest.starts_with(';')).map(|(name, _)| name))
        .collect();
    names.sort_unstable();
    names
}

/// Item 2's second half at the browser: a sign-out on either side clears the browser's other
/// cookie when it holds the same (carried-over) session, and a Queue session cookie auth refuses
/// gives way to a live Raptor session instead of winning over it; a live one still wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_out_on_either_side_ends_both_cookies_and_a_stale_queue_cookie_gives_way() {
    let stack = Stack::start(with_raptor()).await;
    let (_first, a) = ada_signs_in(&stack).await;
    let (mut second, b) = ada_signs_in(&stack).await;
    let (code, report) = import(&stack, &[]).await;
    assert_eq!(code, 0, "{report:#}\n{}", stack.logs());
    let (s, ada) = lookup(&stack, "1").await;
    assert_eq!(s, StatusCode::OK, "{ada}");

    // Carried over, then signed out at Raptor through the proxy with both cookies: Raptor clears
    // its cookie and the proxy clears Queue's, the same session.
    let (s, set, _) = through_proxy(&stack, "/api/v1/auth/session", &format!("raptor_session={a}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(set[0].starts_with(&format!("queue_session={a};")), "{set:?}");
    let both = format!("raptor_session={a}; queue_session={a}");
    let (s, set, v) = call(&stack, reqwest::Method::POST, "/api/signout", &both).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(removed(&set), ["queue_session", "raptor_session"], "{set:?}");

    // The second browser kept an old Queue cookie (its session was carried and then signed out
    // at Raptor, which the sync brought to Queue) and signed in at Raptor again: the stale Queue
    // cookie gives way, the new Raptor session is carried over and replaces it.
    let (s, v) = second.post(&stack, "/api/signout", &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_third, c) = ada_signs_in(&stack).await;
    let (code, report) = import(&stack, &[]).await;
    assert_eq!(code, 0, "{report:#}");
    let stale = format!("queue_session={b}; raptor_session={c}");
    let (s, set, me) = through_proxy(&stack, "/api/v1/auth/session", &stale).await;
    assert_eq!(s, StatusCode::OK, "the new Raptor session signs her in: {me}\n{}", stack.logs());
    assert_eq!(me["user"]["id"], ada["id"], "{me}");
    assert!(set.len() == 1 && set[0].starts_with(&format!("queue_session={c};")), "{set:?}");

    // A live Queue session of her own wins over a Raptor cookie that differs: nothing carried.
    let own = format!("queue_session={c}; raptor_session={b}");
    let (s, set, me) = through_proxy(&stack, "/api/v1/auth/session", &own).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    assert!(set.is_empty(), "{set:?}");

    // Signed out at Queue with the carried session: auth clears its cookie, the proxy Raptor's.
    let both = format!("raptor_session={c}; queue_session={c}");
    let (s, set, v) = call(&stack, reqwest::Method::DELETE, "/api/v1/auth/session", &both).await;
    assert!(s.is_success(), "{s} {v}");
    assert_eq!(removed(&set), ["queue_session", "raptor_session"], "{set:?}");
    let (s, _, v) = through_proxy(&stack, "/api/v1/auth/session", &format!("queue_session={c}")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "the session ended at Queue: {v}");
    assert_eq!(proxy_metric(&stack, "queue_proxy_legacy_sessions_carried_total", "").await, 2.0);
}
