//! Forwarding: headers in and out, bodies streamed, upstream failures answered with a JSON
//! 502/504 that names the side while other routes keep serving, and bad requests.

use crate::support::{Proxy, closed_port_url, standin, table};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_headers_and_bodies_like_a_reverse_proxy() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let p = Proxy::start(&table(1, &legacy.url(), &auth.url(), "")).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = p
        .client
        .get(p.url("/api/v1/auth/backup-codes/list?page=2&x=%20y"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-request-id", "req-123")
        .header("traceparent", traceparent)
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("te", "trailers")
        .header("x-app", "kept")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "req-123");
    let echo: Value = r.json().await.expect("json");
    assert_eq!(echo["server"], "raptor");
    assert_eq!(echo["path"], "/api/v1/auth/backup-codes/list");
    assert_eq!(echo["query"], "page=2&x=%20y");
    let h = &echo["headers"];
    // A client that is not a trusted proxy cannot choose its own address or scheme.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], p.addr.to_string());
    assert_eq!(h["x-request-id"], "req-123");
    assert!(h.get("traceparent").is_none(), "an untrusted client's trace context is dropped: {h}");
    assert_eq!(h["x-app"], "kept");
    for hop in ["x-hop", "keep-alive", "proxy-authorization", "te"] {
        assert!(h.get(hop).is_none(), "{hop} was forwarded: {h}");
    }
    assert_eq!(h["host"], legacy.addr.to_string(), "Host is the upstream's");

    // Without an incoming request id the proxy makes one and returns it.
    let r = p.client.get(p.url("/api/v1/auth/backup-codes")).send().await.expect("request");
    let id = r.headers()["x-request-id"].to_str().expect("ascii").to_string();
    let echo: Value = r.json().await.expect("json");
    assert_eq!(echo["headers"]["x-request-id"], id.as_str());
    assert_eq!(id.len(), 32);

    // A 3 MiB body goes through whole (read before the upstream slot, under `max_body_bytes`).
    let big = vec![b'a'; 3 * 1024 * 1024];
    let r = p.client.post(p.url("/api/v1/auth/backup-codes/redeem")).body(big).send().await.expect("request");
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.expect("json");
    assert_eq!(echo["body_bytes"], 3 * 1024 * 1024);
    assert_eq!(echo["method"], "POST");

    // HEAD answers without a body; other methods pass through as they are.
    let r = p.client.head(p.url("/api/v1/auth/backup-codes")).send().await.expect("head");
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.expect("body").is_empty());
    let r = p.client.delete(p.url("/api/v1/auth/backup-codes/7")).send().await.expect("delete");
    assert_eq!(r.json::<Value>().await.expect("json")["method"], "DELETE");

    // Unmatched paths go to the default legacy upstream; the platform endpoints stay the proxy's.
    let (status, echo) = p.get("/login").await;
    assert_eq!((status.as_u16(), echo["server"].as_str()), (200, Some("raptor")));
    let (status, health) = p.get("/healthz").await;
    assert_eq!((status.as_u16(), health["service"].as_str()), (200, Some("queue-proxy")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_a_trusted_proxy_are_extended() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let trusted = queue_platform::net::TrustedNetworks::parse(&["127.0.0.1"]).expect("valid");
    let o = crate::support::Options { trusted_proxies: trusted, ..Default::default() };
    let p = Proxy::start_with(&table(1, &legacy.url(), &auth.url(), ""), o).await;
    let r = p
        .client
        .get(p.url("/api/v1/auth/backup-codes"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "console.example")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .send()
        .await
        .expect("request");
    let echo: Value = r.json().await.expect("json");
    assert_eq!(echo["headers"]["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(
        echo["headers"]["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "a trusted proxy's trace context passes on"
    );
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
    assert_eq!(echo["headers"]["x-forwarded-host"], "console.example");
}

/// An upstream that accepts connections and closes them at once, mid-request.
async fn resetting_upstream() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            drop(s);
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_json_naming_the_side_and_other_routes_keep_serving() {
    let legacy = standin("raptor", false);
    let reset = resetting_upstream().await;
    // Queue's auth is down (nothing listens); Raptor is up but slow on demand.
    let mut t = table(2, &legacy.url(), &closed_port_url(), "")
        .replace("response_timeout_ms = 2000\n\n[services", "response_timeout_ms = 300\n\n[services");
    t.push_str(&format!(
        "\n[legacy.flaky]\nurl = \"{reset}\"\n\n[[routes]]\nname = \"flaky\"\nprefix = \"/api/v1/tickets\"\nlegacy = \"flaky\"\nqueue = {{ service = \"auth\" }}\ncutover_phase = 4\n"
    ));
    let p = Proxy::start(&t).await;

    let (status, body) = p.get("/api/v1/auth/backup-codes").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    assert_eq!(body["error"]["side"], "queue");
    assert_eq!(body["error"]["upstream"], "auth");
    assert_eq!(body["error"]["route"], "backup-codes");
    assert!(body["error"]["message"].as_str().expect("msg").contains("queue upstream (auth)"), "{body}");

    let (status, body) = p.get("/api/v1/auth/session?delay_ms=3000").await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert_eq!(body["error"]["side"], "legacy");
    assert!(body["error"]["message"].as_str().expect("msg").contains("within 300 ms"), "{body}");

    let (status, body) = p.get("/api/v1/tickets/42").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_failed");
    assert_eq!(body["error"]["upstream"], "flaky");

    // Other routes (and the failing ones' neighbours) keep serving.
    let (status, echo) = p.get("/api/v1/auth/session").await;
    assert_eq!((status.as_u16(), echo["server"].as_str()), (200, Some("raptor")));
    let (status, health) = p.get("/healthz").await;
    assert_eq!(status, 200, "{health}");
    let metrics = p.admin_text("/metrics").await;
    assert!(
        metrics.contains(
            "queue_proxy_upstream_errors_total{kind=\"upstream_unavailable\",route=\"backup-codes\",side=\"queue\""
        ),
        "{metrics}"
    );
}

/// An upstream that sends its response headers and the start of a 100-byte body, then stalls
/// (it holds the connection until the proxy closes it).
async fn stalling_upstream() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\nthe start";
                let _ = s.write_all(head.as_bytes()).await;
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_body_that_stalls_past_the_read_timeout_aborts_only_that_response() {
    let stalling = stalling_upstream().await;
    let auth = standin("queue-auth", true);
    let o = crate::support::Options { read_timeout_ms: 300, ..Default::default() };
    let p = Proxy::start_with(&table(2, &stalling, &auth.url(), ""), o).await;

    // The headers came in time, so the status is already the upstream's; the body then breaks off.
    let r = p.client.get(p.url("/login")).send().await.expect("response headers");
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err(), "a stalled body must not end as if it were complete");

    // The proxy and the other routes keep serving.
    let (status, echo) = p.get("/api/v1/auth/backup-codes").await;
    assert_eq!((status.as_u16(), echo["server"].as_str()), (200, Some("queue-auth")));
}

/// Sends raw bytes and returns the start of the answer.
async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(bytes).await.expect("write");
    let mut out = vec![0u8; 512];
    let n = s.read(&mut out).await.unwrap_or(0);
    String::from_utf8_lossy(&out[..n]).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_and_oversized_headers_are_refused_and_the_proxy_keeps_serving() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let p = Proxy::start(&table(1, &legacy.url(), &auth.url(), "")).await;

    let answer = raw(p.addr, b"GARBAGE \x01\x02 NOT-HTTP\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let answer = raw(p.addr, b"GET /api/v1/auth/backup-codes HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // Dot segments could match one route here and reach another upstream: refused.
    for path in
        ["/api/v1/auth/backup-codes/../../users", "/api/v1/auth/backup-codes/%2E%2e/x", "/api/v1/auth/./backup-codes"]
    {
        let answer = raw(p.addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("bad_path"), "{answer}");
    }
    // A chunked body is forwarded whole, at its decoded length.
    let chunked = b"POST /api/v1/auth/backup-codes/redeem HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let mut s = tokio::net::TcpStream::connect(p.addr).await.expect("connect");
    s.write_all(chunked).await.expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"body\":\"hello world\""), "{answer}");
    assert!(answer.contains("\"body_bytes\":11"), "{answer}");

    // Headers over the proxy's limit (32 KiB in all) are refused before anything is forwarded.
    let huge = "a".repeat(40 * 1024);
    let r = p.client.get(p.url("/api/v1/auth/backup-codes")).header("x-huge", huge).send().await;
    match r {
        Ok(r) => {
            assert_eq!(r.status(), 431);
            let body: Value = r.json().await.expect("json");
            assert_eq!(body["error"]["code"], "headers_too_large");
        }
        // The HTTP layer may close the connection before the client has finished sending.
        Err(e) => assert!(e.is_request() || e.is_connect() || e.is_body(), "{e}"),
    }
    let many: Vec<String> = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let answer =
        raw(p.addr, format!("GET /api/v1/auth/backup-codes HTTP/1.1\r\nHost: x\r\n{}\r\n", many.concat()).as_bytes())
            .await;
    assert!(answer.starts_with("HTTP/1.1 431") || answer.starts_with("HTTP/1.1 400"), "{answer}");

    let (status, echo) = p.get("/api/v1/auth/backup-codes").await;
    assert_eq!((status.as_u16(), echo["server"].as_str()), (200, Some("raptor")));
}
