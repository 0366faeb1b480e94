//! Nobody is signed out when a route moves (issue 19, item 2): a request to a route on Queue with
//! only Raptor's `raptor_session` is signed in at Queue when auth (here its validation stand-in)
//! knows the value as a live session: Queue gets `queue_session=<the value>`, never Raptor's
//! cookie, and the answer sets `queue_session` with the session's absolute expiry. Everything
//! else changes nothing: an unknown or malformed value, auth down or busy, a request with a Queue
//! session of its own, a legacy route. Random values cost auth at most one call each, and at most
//! 32 at a time.

use actix_web::{App, HttpResponse, HttpServer, web};
use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::atomic::Ordering;

use crate::support::{
    AuthStandin, Options, Proxy, Upstream, auth_standin, closed_port_url, gated_upstream, standin, table,
};

/// A session token of the real shape (43 base64url characters) that the stand-in knows as
/// `user`'s (until 2030-01-01).
fn session_of(user: &str) -> String {
    let t = format!("sess-{user}_");
    format!("{t}{}", "x".repeat(43 - t.len()))
}

/// A token of the real shape the stand-in does not know.
fn unknown(i: usize) -> String {
    format!("{:x<43}", format!("nope{i}-"))
}

struct Answer {
    status: StatusCode,
    set_cookies: Vec<String>,
    cache_control: Option<String>,
    echo: Value,
}

impl Answer {
    /// The `Cookie` header the upstream received (`None`: no such header).
    fn upstream_cookie(&self) -> Option<&str> {
        self.echo["headers"]["cookie"].as_str()
    }
}

async fn get(p: &Proxy, path: &str, cookie: &str) -> Answer {
    let r = p.client.get(p.url(path)).header("cookie", cookie).send().await.expect("request");
    let status = r.status();
    let set_cookies = r.headers().get_all("set-cookie").iter().map(|v| v.to_str().expect("text").to_string()).collect();
    let cache_control = r.headers().get("cache-control").map(|v| v.to_str().expect("text").to_string());
    let echo = r.json().await.unwrap_or(Value::Null);
    Answer { status, set_cookies, cache_control, echo }
}

/// `queue_proxy_legacy_sessions_refused_total{reason}`.
async fn refused(p: &Proxy, reason: &str) -> f64 {
    let text = p.admin_text("/metrics").await;
    let label = format!("reason=\"{reason}\"");
    text.lines()
        .filter(|l| l.starts_with("queue_proxy_legacy_sessions_refused_total{") && l.contains(&label))
        .find_map(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().expect("a number"))
}

/// Raptor (the echo stand-in, legacy paths), auth's service echoing as `queue-auth`, the
/// validation stand-in, and the proxy in phase 3 (`/api/v1/auth/session` on Queue).
async fn world() -> (Upstream, Upstream, AuthStandin, Proxy) {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let sessions = auth_standin();
    let o = Options { auth_url: Some(sessions.upstream.url()), ..Default::default() };
    let p = Proxy::start_with(&table(3, &legacy.url(), &auth.url(), ""), o).await;
    (legacy, auth, sessions, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raptor_session_is_signed_in_at_queue_and_the_answer_swaps_the_cookie() {
    let (_legacy, _auth, sessions, p) = world().await;
    let ada = session_of("ada");

    let a = get(&p, "/api/v1/auth/session", &format!("theme=dark; raptor_session={ada}")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.echo);
    assert_eq!(a.echo["server"], "queue-auth");
    assert_eq!(a.echo["path"], "/api/v2/session");
    assert_eq!(
        a.upstream_cookie(),
        Some(format!("theme=dark; queue_session={ada}").as_str()),
        "Queue gets its own session cookie and never Raptor's"
    );
    assert_eq!(a.set_cookies.len(), 1, "{:?}", a.set_cookies);
    let set = &a.set_cookies[0];
    assert!(
        set.starts_with(&format!("queue_session={ada}; Path=/; HttpOnly; SameSite=Lax; Max-Age=")),
        "auth's attributes: {set}"
    );
    assert!(set.ends_with("; Expires=Tue, 01 Jan 2030 00:00:00 GMT"), "the session's absolute expiry: {set}");
    assert!(!set.contains("Secure"), "the public scheme is http: {set}");
    let max_age: i64 = set.split("Max-Age=").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    let until_expiry = (chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().timestamp()
        - chrono::Utc::now().timestamp())
    .max(0);
    assert!(max_age <= until_expiry && max_age > until_expiry - 60, "Max-Age {max_age}, expiry in {until_expiry}");
    assert_eq!(a.cache_control.as_deref(), Some("no-store"), "an answer with a session token is not stored");
    assert_eq!(sessions.calls.load(Ordering::SeqCst), 1);
    assert_eq!(p.metric("queue_proxy_legacy_sessions_carried_total").await, 1.0);

    // Again before the browser took the cookie: answered from the cache, carried again.
    let a = get(&p, "/api/v1/auth/backup-codes", &format!("raptor_session={ada}")).await;
    assert_eq!(a.upstream_cookie(), Some(format!("queue_session={ada}").as_str()));
    assert_eq!(a.set_cookies.len(), 1);
    assert_eq!(sessions.calls.load(Ordering::SeqCst), 1, "the validation is cached");

    // The swapped cookie alone: forwarded as it is, nothing to carry, no call.
    let a = get(&p, "/api/v1/auth/session", &format!("queue_session={ada}")).await;
    assert_eq!(a.upstream_cookie(), Some(format!("queue_session={ada}").as_str()));
    assert!(a.set_cookies.is_empty(), "{:?}", a.set_cookies);

    // Both cookies (the browser after the swap): Queue's wins, auth is not asked, Raptor's
    // cookie still does not reach Queue.
    let other = session_of("bob");
    let a = get(&p, "/api/v1/auth/session", &format!("raptor_session={other}; queue_session={ada}")).await;
    assert_eq!(a.upstream_cookie(), Some(format!("queue_session={ada}").as_str()));
    assert!(a.set_cookies.is_empty(), "{:?}", a.set_cookies);
    // An Authorization header is a credential of the caller's choosing: kept, nothing carried.
    let r = p
        .client
        .get(p.url("/api/v1/auth/session"))
        .header("cookie", format!("raptor_session={other}"))
        .bearer_auth("some.service.token")
        .send()
        .await
        .expect("request");
    assert!(r.headers().get("set-cookie").is_none());
    let echo: Value = r.json().await.expect("json");
    assert_eq!(echo["headers"]["authorization"], "Bearer some.service.token");
    assert!(echo["headers"]["cookie"].is_null(), "{echo}");
    assert_eq!(sessions.calls.load(Ordering::SeqCst), 1, "no validation when Queue's session is there");
    assert_eq!(p.metric("queue_proxy_legacy_sessions_carried_total").await, 2.0);

    // A legacy route is untouched by the carry-over: Raptor keeps its cookie and never sees
    // Queue's.
    let a = get(&p, "/api/v1/tickets/T-1", &format!("theme=dark; raptor_session={ada}; queue_session={ada}")).await;
    assert_eq!(a.echo["server"], "raptor");
    assert_eq!(a.upstream_cookie(), Some(format!("theme=dark; raptor_session={ada}").as_str()));
    assert!(a.set_cookies.is_empty(), "{:?}", a.set_cookies);
    assert_eq!(sessions.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_auth_does_not_know_change_nothing_and_cost_at_most_one_call_each() {
    let (_legacy, _auth, sessions, p) = world().await;

    // Unknown (not imported, revoked, expired or forged: auth says not valid): the request goes on
    // without any session, and the answer sets no cookie.
    let forged = unknown(0);
    for _ in 0..3 {
        let a = get(&p, "/api/v1/auth/session", &format!("theme=dark; raptor_session={forged}")).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.upstream_cookie(), Some("theme=dark"), "no session reaches Queue");
        assert!(a.set_cookies.is_empty(), "{:?}", a.set_cookies);
    }
    assert_eq!(sessions.calls.load(Ordering::SeqCst), 1, "a refusal is cached too");
    assert_eq!(refused(&p, "unknown").await, 3.0);

    // Not the shape of a session token (a truncated one, a huge one): auth is not asked.
    let truncated = &session_of("ada")[..42];
    let huge = "A".repeat(16 * 1024);
    for value in [truncated, huge.as_str(), "", "sess-ada"] {
        let a = get(&p, "/api/v1/auth/session", &format!("raptor_session={value}")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", value.len());
        assert_eq!(a.upstream_cookie(), None, "{}", a.echo);
        assert!(a.set_cookies.is_empty());
    }
    assert_eq!(sessions.calls.load(Ordering::SeqCst), 1, "malformed values cost no call");
    assert_eq!(refused(&p, "malformed").await, 4.0);

    // Many random values: one call each at most, and each again costs nothing more.
    let round = || {
        futures_util::stream::iter(1..=500)
            .map(|i| {
                let p = &p;
                async move {
                    let a = get(p, "/api/v1/auth/session", &format!("raptor_session={}", unknown(i))).await;
                    assert_eq!(a.status, StatusCode::OK);
                    assert!(a.set_cookies.is_empty());
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
    };
    round().await;
    let calls = sessions.calls.load(Ordering::SeqCst);
    assert!(calls <= 501, "{calls} calls for 500 new values");
    round().await;
    assert_eq!(sessions.calls.load(Ordering::SeqCst), calls, "known refusals cost no call");
    assert_eq!(p.metric("queue_proxy_legacy_sessions_carried_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_down_or_busy_means_no_carry_over_and_never_a_failure() {
    // Down: nothing listens at auth_url.
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let o = Options { auth_url: Some(closed_port_url()), ..Default::default() };
    let p = Proxy::start_with(&table(3, &legacy.url(), &auth.url(), ""), o).await;
    let ada = session_of("ada");
    for _ in 0..2 {
        let a = get(&p, "/api/v1/auth/session", &format!("raptor_session={ada}")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.echo);
        assert_eq!(a.upstream_cookie(), None, "Raptor's cookie never reaches Queue: {}", a.echo);
        assert!(a.set_cookies.is_empty());
    }
    assert_eq!(refused(&p, "unavailable").await, 2.0, "the second within the back-off, not asked");
    drop(p);

    // Busy: auth holds every validation. At most 32 wait on it; the others go on at once
    // without a Queue session.
    let gate = gated_upstream();
    let o = Options { auth_url: Some(gate.upstream.url()), ..Default::default() };
    let p = Proxy::start_with(&table(3, &legacy.url(), &auth.url(), ""), o).await;
    let started = std::time::Instant::now();
    let answers: Vec<Answer> =
        futures_util::stream::iter(0..100)
            .map(|i| {
                let p = &p;
                async move {
                    get(p, "/api/v1/auth/session", &format!("raptor_session={}", session_of(&format!("u{i}")))).await
                }
            })
            .buffer_unordered(100)
            .collect()
            .await;
    let received = gate.received.load(Ordering::SeqCst);
    gate.release();
    assert!(received <= 32, "{received} validations waited on auth at once");
    assert!(answers.iter().all(|a| a.status == StatusCode::OK && a.set_cookies.is_empty()));
    assert!(answers.iter().all(|a| a.upstream_cookie().is_none()));
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(refused(&p, "unavailable").await, 100.0);
}

/// An auth service whose every answer signs the caller in anew (a login answer).
fn signing_in_upstream() -> Upstream {
    let server = HttpServer::new(|| {
        App::new().default_service(web::to(|| async {
            HttpResponse::Ok()
                .insert_header(("set-cookie", "queue_session=fresh; Path=/; HttpOnly; SameSite=Lax; Max-Age=60"))
                .json(serde_json::json!({"server": "login"}))
        }))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .expect("bind");
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    Upstream::new(addr, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_sets_queues_session_wins_and_the_carry_over_can_be_turned_off() {
    let legacy = standin("raptor", false);
    let login = signing_in_upstream();
    let sessions = auth_standin();
    let o = Options { auth_url: Some(sessions.upstream.url()), ..Default::default() };
    let p = Proxy::start_with(&table(3, &legacy.url(), &login.url(), ""), o).await;
    let a = get(&p, "/api/v1/auth/session", &format!("raptor_session={}", session_of("ada"))).await;
    assert_eq!(a.set_cookies, ["queue_session=fresh; Path=/; HttpOnly; SameSite=Lax; Max-Age=60"]);
    assert_eq!(p.metric("queue_proxy_legacy_sessions_carried_total").await, 1.0);
    drop(p);

    // `legacy_session_cookie = ""`: nothing is carried, auth is not asked, and the cookie (any
    // name now) is forwarded as any other.
    let auth = standin("queue-auth", true);
    let o = Options {
        auth_url: Some(sessions.upstream.url()),
        legacy_session_cookie: Some(String::new()),
        ..Default::default()
    };
    let calls = sessions.calls.load(Ordering::SeqCst);
    let p = Proxy::start_with(&table(3, &legacy.url(), &auth.url(), ""), o).await;
    let cookie = format!("raptor_session={}", session_of("ada"));
    let a = get(&p, "/api/v1/auth/session", &cookie).await;
    assert!(a.set_cookies.is_empty());
    assert_eq!(a.upstream_cookie(), Some(cookie.as_str()));
    assert_eq!(sessions.calls.load(Ordering::SeqCst), calls);
}
