//! Issue 16 at the proxy's edge, through real sockets: slow clients cannot starve an upstream
//! (item 2), the route is decided on the canonical path (item 3), Queue's session does not reach
//! the legacy side, and random session cookies cannot flush or flip the canary identity cache
//! (item 8). Tests that open many sockets need `ulimit -n 20000`.

use crate::support::{Options, Proxy, auth_standin, standin, table};
use futures_util::StreamExt;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const IN_FLIGHT: &str = "queue_proxy_client_requests_in_flight";

/// A connection to the proxy from `from` (any 127/8 address is loopback).
async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind");
    socket.connect(to).await.expect("connect")
}

/// A reqwest client whose requests come from `from`.
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(from.parse::<IpAddr>().expect("ip")).build().expect("client")
}

/// Sends a POST's head and 10 of its 100 body bytes, then nothing more.
async fn start_slow_post(mut s: TcpStream, path: &str) -> TcpStream {
    let head =
        format!("POST {path} HTTP/1.1\r\nhost: proxy\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n");
    s.write_all(head.as_bytes()).await.expect("head");
    s.write_all(b"{\"partial\"").await.expect("partial body");
    s
}

/// Everything the server sends until it closes (an empty answer when it just closes).
async fn read_to_close(mut s: TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).to_string()
}

/// Waits until the proxy counts at least `n` requests in flight (heads received).
async fn wait_in_flight(p: &Proxy, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = p.metric(IN_FLIGHT).await;
        if n >= at_least {
            return;
        }
        assert!(Instant::now() < deadline, "only {n} requests reached the proxy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One request written by hand (reqwest would normalise the path first): status and JSON body.
async fn raw_get(addr: SocketAddr, target: &str, extra: &str) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {target} HTTP/1.1\r\nhost: proxy\r\nconnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let answer = read_to_close(s).await;
    let status = answer.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| serde_json::from_str(b).unwrap_or(Value::Null));
    (status, body.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eleven_hundred_slow_clients_on_a_shadowed_route_do_not_starve_other_clients() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    // Raptor takes the default 1,024 requests at once; the route is shadowed, POST included.
    let t = table(1, &legacy.url(), &auth.url(), "shadow = { primary = \"legacy\", methods = [\"GET\", \"POST\"] }");
    let o = Options { client_body_timeout_ms: 20_000, ..Default::default() };
    let p = Proxy::start_with(&t, o).await;

    // 1,100 connections from 20 addresses (55 each, under the per-client cap) send a head and a
    // partial body, and hang.
    let slow: Vec<TcpStream> = futures_util::stream::iter(0..1100u32)
        .map(|i| {
            let from = IpAddr::from([127, 0, 1, (i % 20 + 1) as u8]);
            let to = p.addr;
            async move { start_slow_post(connect_from(from, to).await, "/api/v1/auth/backup-codes/redeem").await }
        })
        .buffer_unordered(100)
        .collect()
        .await;
    // At least as many as Raptor has slots have reached the proxy (were they to take a slot
    // each, none would be left).
    wait_in_flight(&p, 1024.0).await;

    // Another client is answered normally, on the shadowed route and elsewhere.
    let other = client_from("127.0.0.2");
    for i in 0..10 {
        let r = other.get(p.url(&format!("/api/v1/auth/backup-codes/{i}"))).send().await.expect("get");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        assert_eq!(r.json::<Value>().await.expect("json")["server"], "raptor");
        let r = other.post(p.url("/api/v1/auth/backup-codes/redeem")).body("{}").send().await.expect("post");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        let r = other.get(p.url("/api/v1/auth/session")).send().await.expect("get");
        assert_eq!(r.status(), 200);
    }

    // The slow ones are cut off by the body timeout: a JSON 408, or just closed.
    let answers: Vec<String> =
        futures_util::stream::iter(slow).map(read_to_close).buffer_unordered(200).collect().await;
    for a in &answers {
        assert!(a.is_empty() || (a.starts_with("HTTP/1.1 408") && a.contains("body_timeout")), "{a}");
    }
    assert!(answers.iter().any(|a| a.contains("body_timeout")), "the proxy answers 408");
    // And every slot they held is given back.
    let deadline = Instant::now() + Duration::from_secs(60);
    while p.metric(IN_FLIGHT).await > 0.0 {
        assert!(Instant::now() < deadline, "client slots were not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_cap_gets_429_while_other_clients_are_served() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let o = Options { max_in_flight_per_client: 3, client_body_timeout_ms: 600_000, ..Default::default() };
    let p = Proxy::start_with(&table(1, &legacy.url(), &auth.url(), ""), o).await;
    let me: IpAddr = "127.0.0.1".parse().expect("ip");
    let mut slow = Vec::new();
    for _ in 0..3 {
        slow.push(start_slow_post(connect_from(me, p.addr).await, "/api/v1/auth/backup-codes/redeem").await);
    }
    wait_in_flight(&p, 3.0).await;

    let r = client_from("127.0.0.1").get(p.url("/api/v1/auth/backup-codes")).send().await.expect("get");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["code"], "too_many_requests", "{e}");
    assert_eq!(e["error"]["side"], "proxy");
    // Another client is not affected.
    let r = client_from("127.0.0.2").get(p.url("/api/v1/auth/backup-codes")).send().await.expect("get");
    assert_eq!(r.status(), 200);

    // Once the slow requests end, the client is served again.
    drop(slow);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client_from("127.0.0.1").get(p.url("/api/v1/auth/backup-codes")).send().await.expect("get");
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 429);
        assert!(Instant::now() < deadline, "the slots were not given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_gives_its_upstream_slot_back() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    // One request at a time to Raptor.
    let t = table(1, &legacy.url(), &auth.url(), "").replace(
        "response_timeout_ms = 2000\n\n[services.auth]",
        "response_timeout_ms = 2000\nmax_in_flight = 1\n\n[services.auth]",
    );
    let o = Options { client_write_timeout_ms: 500, ..Default::default() };
    let p = Proxy::start_with(&t, o).await;

    // An 8 MiB body, echoed back: more than the socket buffers between the proxy and a client
    // with a small receive window that never reads.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stalled = socket.connect(p.addr).await.expect("connect");
    let body = vec![b'a'; 8 * 1024 * 1024];
    let head = format!(
        "POST /api/v1/auth/backup-codes/redeem HTTP/1.1\r\nhost: proxy\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stalled.write_all(head.as_bytes()).await.expect("head");
    stalled.write_all(&body).await.expect("body");
    // Raptor's answer head has reached the proxy: from here the response holds the slot while
    // its body goes to the client.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !metrics_text(&p).await.lines().any(|l| {
        l.starts_with("queue_proxy_requests_total{")
            && l.contains("route=\"backup-codes\"")
            && l.contains("status=\"2xx\"")
    }) {
        assert!(Instant::now() < deadline, "the stalled client's request did not reach Raptor");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Raptor's one slot comes back once the write timeout ends the stalled connection.
    loop {
        let r = client_from("127.0.0.2").get(p.url("/api/v1/auth/backup-codes")).send().await.expect("get");
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 503);
        assert!(Instant::now() < deadline, "the stalled client kept Raptor's only slot");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stalled);
}

async fn metrics_text(p: &Proxy) -> String {
    p.admin_text("/metrics").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_encoded_path_variant_lands_with_the_canonical_path_or_is_refused() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    // Phase 3: `/api/v1/auth/session` goes to Queue (rewritten to `/api/v2/session`).
    let p = Proxy::start(&table(3, &legacy.url(), &auth.url(), "")).await;
    let (status, reference) = raw_get(p.addr, "/api/v1/auth/session", "").await;
    assert_eq!((status, reference["server"].as_str()), (200, Some("queue-auth")));
    assert_eq!(reference["path"], "/api/v2/session");

    for same in [
        "/api/v1/auth/%73ession",
        "/api/v1/auth/sessio%6E",
        "/api/v1/auth/sessio%6e",
        "/api/v1/%61uth/session",
        "/%61pi/v1/auth/%73%65%73%73%69%6F%6E",
    ] {
        let (status, echo) = raw_get(p.addr, same, "").await;
        assert_eq!((status, echo["server"].as_str()), (200, Some("queue-auth")), "{same}: {echo}");
        assert_eq!(echo["path"], "/api/v2/session", "{same}");
    }
    // Under the prefix: other escapes keep their meaning, in upper-case hex; the query is untouched.
    let (status, echo) = raw_get(p.addr, "/api/v1/auth/sessio%6E/a%2a%7e?x=%73&y=%2f", "").await;
    assert_eq!((status, echo["server"].as_str()), (200, Some("queue-auth")), "{echo}");
    assert_eq!(echo["path"], "/api/v2/session/a%2A~");
    assert_eq!(echo["query"], "x=%73&y=%2f");

    for refused in [
        "/api/v1/AUTH/session",
        "/api/v1/auth/SESSION",
        "/api/v1/auth/Sessio%6E",
        "/api/v1/auth%2fsession",
        "/api/v1/auth%2Fsession",
        "/api/v1/auth%5csession",
        "/api/v1/auth%5Csession",
        "/api/v1/auth/session;x",
        "/api/v1/auth;x/session",
        "/api/v1/auth/session%3Bx",
        "/api/v1/auth/session%00",
        "/api/v1/auth/session%0d%0aX-Injected:%201",
        "/api/v1/auth/x/%2e%2e/session",
        "/api/v1/auth/x/%2E./session",
        "/api/v1/auth/x/../session",
        "/api/v1/auth/./session",
        "/api/v1//auth/session",
        "/api/v1/auth/sessio%6",
    ] {
        let (status, e) = raw_get(p.addr, refused, "").await;
        assert_eq!((status, e["error"]["code"].as_str()), (400, Some("bad_path")), "{refused}: {e}");
    }
    // A raw `\`: refused, by the proxy or already by the HTTP parser.
    let (status, e) = raw_get(p.addr, "/api/v1/auth\\session", "").await;
    assert_eq!(status, 400, "{e}");
    assert!(e.is_null() || e["error"]["code"] == "bad_path", "{e}");

    // The legacy side also gets the canonical path (the default route here).
    let (status, echo) = raw_get(p.addr, "/api/v1/tickets/%41%62c/x%2a", "").await;
    assert_eq!((status, echo["server"].as_str()), (200, Some("raptor")), "{echo}");
    assert_eq!(echo["path"], "/api/v1/tickets/Abc/x%2A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_sessions_are_not_forwarded_to_the_legacy_side() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    // A Queue session token: 43 base64url characters (auth's `new_token`).
    let session = "Qs3ss10n_t0ken-0123456789abcdefghijklmnopqr";
    assert_eq!(session.len(), 43);
    let cookies = format!("theme=dark; queue_session={session}; lang=en");
    let send = |p: &Proxy, bearer: String| {
        p.client
            .get(p.url("/api/v1/auth/session"))
            .header("cookie", cookies.clone())
            .header("authorization", bearer)
            .send()
    };
    // Phase 1: the session route goes to Raptor.
    let p = Proxy::start(&table(1, &legacy.url(), &auth.url(), "")).await;
    let echo: Value = send(&p, format!("Bearer {session}")).await.expect("get").json().await.expect("json");
    assert_eq!(echo["server"], "raptor");
    assert_eq!(echo["headers"]["cookie"], "theme=dark; lang=en", "other cookies are kept");
    assert!(echo["headers"].get("authorization").is_none(), "{echo}");
    // A bearer that is not a Queue session (Raptor's own, a JWT) goes through.
    let echo: Value = send(&p, "Bearer raptor.issued.jwt".into()).await.expect("get").json().await.expect("json");
    assert_eq!(echo["headers"]["authorization"], "Bearer raptor.issued.jwt");
    assert_eq!(echo["headers"]["cookie"], "theme=dark; lang=en");

    // Phase 3: the same request goes to Queue, which gets its session.
    std::fs::write(&p.table, table(3, &legacy.url(), &auth.url(), "")).expect("write");
    assert_eq!(p.admin_post("/admin/reload", serde_json::json!({})).await.0, 200);
    let echo: Value = send(&p, format!("Bearer {session}")).await.expect("get").json().await.expect("json");
    assert_eq!(echo["server"], "queue-auth");
    assert_eq!(echo["headers"]["cookie"], cookies);
    assert_eq!(echo["headers"]["authorization"], format!("Bearer {session}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_session_cookies_neither_flush_the_identity_cache_nor_flip_a_users_cohort() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let sessions = auth_standin();
    let t = table(1, &legacy.url(), &auth.url(), "canary = { percent = 50, cohort = \"user\" }");
    let o = Options { auth_url: Some(sessions.upstream.url()), identity_cache_entries: 64, ..Default::default() };
    let p = Proxy::start_with(&t, o).await;
    let side = |cookie: String| {
        let p = &p;
        async move {
            let r = p
                .client
                .get(p.url("/api/v1/auth/backup-codes"))
                .header("cookie", cookie)
                .send()
                .await
                .expect("request");
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.expect("json")["server"].as_str().expect("server").to_string()
        }
    };
    let users = 40;
    let mut before = Vec::new();
    for i in 0..users {
        before.push(side(format!("queue_session=sess-u{i}")).await);
    }
    assert!(before.iter().any(|s| s == "raptor") && before.iter().any(|s| s == "queue-auth"), "{before:?}");

    // A client sprays 1,000 made-up session cookies, many times the cache's size.
    let sprayed: Vec<String> = futures_util::stream::iter(0..1000)
        .map(|i| side(format!("queue_session=made-up-{i}-{}", uuid_like(i))))
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(sprayed.len(), 1000);
    assert_eq!(sessions.calls.load(Ordering::SeqCst), users as u64 + 1000, "each made-up token asked once");

    // auth is now overwhelmed (or down): the real users keep their side, from the cache.
    sessions.down.store(true, Ordering::SeqCst);
    for (i, was) in before.iter().enumerate() {
        assert_eq!(&side(format!("queue_session=sess-u{i}")).await, was, "user {i} changed side");
    }
}

/// A few hex digits that differ per `i` (no extra dependency for random tokens).
fn uuid_like(i: u64) -> String {
    format!("{:016x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The internal APIs behind the proxy (Raptor's write-back API, the services' `/internal/v1/…`)
/// are not reachable through the front door, however the path is spelled; the proxy's own
/// platform endpoint `/internal/v1/caller` still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_paths_are_not_forwarded_however_spelled() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let p = Proxy::start(&table(3, &legacy.url(), &auth.url(), "")).await;
    for blocked in [
        "/internal/queue/v1/passkeys",
        "/internal/v1/import/users",
        "/%69nternal/queue/v1/health",
        "/internal/queue/v1/grants/1/revoke?x=1",
    ] {
        let (status, e) = raw_get(p.addr, blocked, "").await;
        assert_eq!((status, e["error"]["code"].as_str()), (404, Some("not_found")), "{blocked}: {e}");
        assert_eq!(e["error"]["message"], "this path is not served through the front door", "{blocked}: {e}");
    }
    // A look-alike prefix is forwarded (the stand-in answers it).
    let (_, e) = raw_get(p.addr, "/internalx/page", "").await;
    assert_eq!(e["error"]["message"], "the legacy stand-in does not serve this path", "{e}");
    let (status, _) = raw_get(p.addr, "/internal/v1/caller", "").await;
    assert_ne!(status, 404, "the platform's own endpoint is served by the proxy itself");
}
