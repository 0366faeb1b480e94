//! The admin API is locked (issue 16, item 6): every endpoint but `/healthz` needs an operator's
//! service token with scope `proxy:admin`; requests shaped like a browser's and foreign `Host`s
//! are refused before anything else, even with a good token; the front door never serves the
//! proxy's own metrics or OpenAPI document; a change the audit service did not record is not
//! applied.

use actix_web::{App, HttpResponse, HttpServer, web};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::support::{Options, Proxy, standin, table};

/// Every endpoint the admin token guards, with a body for the POSTs.
fn endpoints() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "/admin/routes", None),
        (Method::POST, "/admin/reload", Some(json!({}))),
        (Method::POST, "/admin/phase", Some(json!({"phase": 2}))),
        (Method::POST, "/admin/rollback", Some(json!({}))),
        (Method::GET, "/admin/shadow", None),
        (Method::GET, "/metrics", None),
        (Method::GET, "/openapi.json", None),
    ]
}

/// One admin call with whatever headers a case adds.
async fn call(
    p: &Proxy,
    (method, path, body): &(Method, &'static str, Option<Value>),
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut r = p.client.request(method.clone(), p.admin_url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(b);
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The table in force: its version and phase.
async fn in_force(p: &Proxy) -> (String, u64) {
    let (status, t) = p.admin_get("/admin/routes").await;
    assert_eq!(status, 200, "{t}");
    (t["version"].as_str().expect("version").to_string(), t["phase"].as_u64().expect("phase"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_endpoint_needs_an_operator_token_with_the_admin_scope() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let p = Proxy::start(&table(1, &legacy.url(), &auth.url(), "")).await;
    let before = in_force(&p).await;
    let wrong_scope = p.keys.token("operator", "proxy", &["proxy:read"]);
    let wrong_issuer = p.keys.token("raptor", "proxy", &["proxy:admin"]);
    let wrong_audience = p.keys.token("operator", "auth", &["proxy:admin"]);
    for e in endpoints() {
        let (status, body) = call(&p, &e, None, &[]).await;
        assert_eq!(status, 401, "{} without a token: {body}", e.1);
        assert_eq!(body["error"]["code"], "unauthorized", "{}", e.1);
        let (status, body) = call(&p, &e, Some("not-a-token"), &[]).await;
        assert_eq!(status, 401, "{} with garbage: {body}", e.1);
        let (status, body) = call(&p, &e, Some(&wrong_audience), &[]).await;
        assert_eq!(status, 401, "{} with a token for auth: {body}", e.1);
        let (status, body) = call(&p, &e, Some(&wrong_scope), &[]).await;
        assert_eq!(status, 403, "{} with the wrong scope: {body}", e.1);
        assert!(body["error"]["message"].as_str().expect("msg").contains("proxy:admin"), "{body}");
        let (status, body) = call(&p, &e, Some(&wrong_issuer), &[]).await;
        assert_eq!(status, 403, "{} from a service that is no operator: {body}", e.1);
        assert!(body["error"]["message"].as_str().expect("msg").contains("raptor"), "{body}");
    }
    assert_eq!(in_force(&p).await, before, "nothing changed");

    // /healthz stays open for probes: it says only that the process is up.
    let r = p.client.get(p.admin_url("/healthz")).send().await.expect("healthz");
    assert_eq!(r.status(), 200);

    // With the operator's token each endpoint works (a fresh token per call: a change spends
    // its token, `an_admin_token_is_one_use`).
    let mut answers = Vec::new();
    for e in endpoints() {
        let r = p.client.request(e.0.clone(), p.admin_url(e.1)).bearer_auth(p.admin_token());
        let r = match &e.2 {
            Some(b) => r.json(b),
            None => r,
        };
        let resp = r.send().await.expect("request");
        assert_eq!(resp.status(), 200, "{} with a good token", e.1);
        answers.push(resp.text().await.expect("text"));
    }
    let phase: Value = serde_json::from_str(&answers[2]).expect("json");
    assert_eq!((phase["changed"].as_bool(), phase["phase"].as_u64()), (Some(true), Some(2)), "{phase}");
    let rollback: Value = serde_json::from_str(&answers[3]).expect("json");
    assert_eq!(rollback["phase"], 1, "{rollback}");
    assert!(answers[5].contains("queue_proxy_"), "the proxy's metrics: {}", answers[5]);
    let doc: Value = serde_json::from_str(&answers[6]).expect("json");
    assert_eq!(doc["info"]["title"], "queue-proxy");
}

/// A captured admin token cannot be replayed: a change spends it (issue 16, item 10), so the
/// same token a second time is 401 `token_replayed` and the table stays where the first call
/// put it; reads may reuse a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_is_one_use() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let p = Proxy::start(&table(1, &legacy.url(), &auth.url(), "")).await;
    let token = p.admin_token();
    let phase = |n: u64| (Method::POST, "/admin/phase", Some(json!({"phase": n})));
    let (status, body) = call(&p, &phase(2), Some(&token), &[]).await;
    assert_eq!(status, 200, "{body}");
    let after_first = in_force(&p).await;
    assert_eq!(after_first.1, 2);
    for (e, what) in [(phase(3), "phase 3"), ((Method::POST, "/admin/rollback", Some(json!({}))), "rollback")] {
        let (status, body) = call(&p, &e, Some(&token), &[]).await;
        assert_eq!(status, 401, "{what} with a spent token: {body}");
        assert_eq!(body["error"]["code"], "token_replayed", "{body}");
    }
    assert_eq!(in_force(&p).await, after_first, "a replayed token changed nothing");
    let read = p.admin_token();
    for _ in 0..2 {
        let (status, _) = call(&p, &(Method::GET, "/admin/routes", None), Some(&read), &[]).await;
        assert_eq!(status, 200, "reads may reuse a token");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_shaped_requests_are_refused_even_with_a_good_token() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let p = Proxy::start(&table(1, &legacy.url(), &auth.url(), "")).await;
    let before = in_force(&p).await;
    let good = p.admin_token();
    let browser_headers: [&[(&str, &str)]; 5] = [
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
        &[("origin", &format!("http://{}", p.admin))],
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-origin")],
    ];
    for headers in browser_headers {
        for e in endpoints() {
            let (status, body) = call(&p, &e, Some(&good), headers).await;
            assert_eq!(status, 403, "{} with {headers:?}: {body}", e.1);
            assert_eq!(body["error"]["code"], "forbidden");
            assert!(body["error"]["message"].as_str().expect("msg").contains("browser"), "{body}");
        }
        // Refused before anything else: also the open health check.
        let r = p.client.get(p.admin_url("/healthz")).header(headers[0].0, headers[0].1).send().await.expect("h");
        assert_eq!(r.status(), 403);
    }
    assert_eq!(in_force(&p).await, before, "no browser-shaped request changed the table");
    // A navigation the operator typed (`Sec-Fetch-Site: none`) is not a cross-site request.
    let (status, _) = call(&p, &endpoints()[0], Some(&good), &[("sec-fetch-site", "none")]).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_is_refused_even_with_a_good_token() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let p = Proxy::start_with(
        &table(1, &legacy.url(), &auth.url(), ""),
        Options { admin_hosts: vec!["proxy-admin.internal".into()], ..Options::default() },
    )
    .await;
    let before = in_force(&p).await;
    let good = p.admin_token();
    let port = p.admin.port();
    // DNS rebinding: a page's name that resolves to 127.0.0.1 arrives as its own Host.
    for host in [format!("evil.example:{port}"), "evil.example".into(), format!("127.0.0.1.evil.example:{port}")] {
        for e in endpoints() {
            let (status, body) = call(&p, &e, Some(&good), &[("host", &host)]).await;
            assert_eq!(status, 403, "{} with Host {host}: {body}", e.1);
            assert!(body["error"]["message"].as_str().expect("msg").contains("Host"), "{body}");
        }
    }
    assert_eq!(in_force(&p).await, before, "no foreign Host changed the table");
    // No Host at all (HTTP/1.0): refused too.
    let mut s = std::net::TcpStream::connect(p.admin).expect("connect");
    write!(s, "GET /admin/routes HTTP/1.0\r\nAuthorization: Bearer {good}\r\n\r\n").expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.0 403") || answer.starts_with("HTTP/1.1 403"), "{answer}");
    // Its own names work: loopback's, the bound address (reqwest's default) and configured ones.
    for host in [format!("localhost:{port}"), format!("LOCALHOST:{port}"), format!("proxy-admin.internal:{port}")] {
        let (status, body) = call(&p, &endpoints()[0], Some(&good), &[("host", &host)]).await;
        assert_eq!(status, 200, "Host {host}: {body}");
    }
    let (status, _) = call(&p, &endpoints()[0], Some(&good), &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_door_never_serves_the_proxys_metrics_or_openapi() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let p = Proxy::start(&table(1, &legacy.url(), &auth.url(), "")).await;
    // Some traffic, so the metrics have the proxy's series.
    assert_eq!(p.get("/api/v1/auth/backup-codes").await.0, 200);
    for path in ["/metrics", "/openapi.json"] {
        let r = p.client.get(p.url(path)).send().await.expect("request");
        let status = r.status();
        let body = r.text().await.expect("text");
        // Forwarded like any other path: Raptor's stand-in does not serve it.
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body.contains("legacy stand-in"), "{path} went to Raptor: {body}");
        assert!(!body.contains("queue_proxy_") && !body.contains("openapi"), "{path}: {body}");
    }
    // They are on the admin listener, behind the token.
    assert!(p.admin_text("/metrics").await.contains("queue_proxy_requests_total"));
}

/// The proxy's document describes the admin listener, where it is served: exactly its paths and
/// methods, each guarded one with the operator's scope; an undeclared method is answered 405
/// with `Allow` (after the browser check), a platform path of the public listener 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_document_is_what_the_admin_listener_serves() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let p = Proxy::start(&table(1, &legacy.url(), &auth.url(), "")).await;
    let (status, doc) = p.admin_get("/openapi.json").await;
    assert_eq!(status, 200, "{doc}");
    let mut served: Vec<String> = endpoints().iter().map(|(m, path, _)| format!("{m} {path}")).collect();
    served.push("GET /healthz".into());
    let mut declared = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("item") {
            declared.push(format!("{} {path}", method.to_uppercase()));
            let security = &op["security"];
            if path == "/healthz" {
                assert!(security.is_null(), "/healthz is open: {security}");
            } else {
                assert_eq!(security, &json!([{"service_token": ["proxy:admin"]}]), "{method} {path}");
            }
        }
    }
    served.sort();
    declared.sort();
    assert_eq!(declared, served);

    for (method, path, allow) in [(Method::PUT, "/admin/routes", "GET"), (Method::DELETE, "/admin/phase", "POST")] {
        let r = p.client.request(method, p.admin_url(path)).bearer_auth(p.admin_token()).send().await.expect("request");
        assert_eq!(r.status(), 405, "{path}");
        assert_eq!(r.headers().get("allow").and_then(|v| v.to_str().ok()), Some(allow), "{path}");
    }
    let (status, _) =
        call(&p, &(Method::PUT, "/admin/routes", None), None, &[("Origin", "https://evil.example")]).await;
    assert_eq!(status, 403, "a browser learns nothing, not even the methods");
    for path in ["/readyz", "/.well-known/jwks.json", "/internal/v1/caller"] {
        let (status, body) = p.admin_get(path).await;
        assert_eq!((status.as_u16(), body["error"]["code"].as_str()), (404, Some("not_found")), "{path}: {body}");
    }
}

/// A stand-in of the audit service's `POST /api/v1/audit/events` that can be taken down: up, it
/// keeps each event and answers 201; down, it answers 503.
struct AuditStandin {
    upstream: crate::support::Upstream,
    up: Arc<AtomicBool>,
    events: Arc<Mutex<Vec<Value>>>,
}

fn audit_standin() -> AuditStandin {
    let up = Arc::new(AtomicBool::new(true));
    let events = Arc::new(Mutex::new(Vec::new()));
    let (u, ev) = (up.clone(), events.clone());
    let server = HttpServer::new(move || {
        let (u, ev) = (u.clone(), ev.clone());
        App::new().route(
            "/api/v1/audit/events",
            web::post().to(move |req: actix_web::HttpRequest, body: web::Json<Value>| {
                let (u, ev) = (u.clone(), ev.clone());
                async move {
                    let bearer = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
                    if bearer.strip_prefix("Bearer ").is_none_or(|t| t.split('.').count() != 3) {
                        return HttpResponse::Unauthorized().finish();
                    }
                    if !u.load(Ordering::SeqCst) {
                        return HttpResponse::ServiceUnavailable().finish();
                    }
                    let id = body["id"].clone();
                    let mut events = ev.lock().expect("lock");
                    events.push(body.into_inner());
                    HttpResponse::Created().json(json!({"id": id, "seq": events.len(), "mac": "00"}))
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .expect("bind");
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    AuditStandin { upstream: crate::support::Upstream::new(addr, handle), up, events }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_admin_change_is_audited_first_and_refused_while_audit_is_down() {
    let legacy = standin("raptor", false);
    let auth = standin("queue-auth", true);
    let audit = audit_standin();
    let p = Proxy::start_with(
        &table(1, &legacy.url(), &auth.url(), ""),
        Options { audit_url: Some(audit.upstream.url()), ..Options::default() },
    )
    .await;
    let (v1, _) = in_force(&p).await;

    // Up: the phase change is recorded (who, from, to), then applied.
    let (status, body) = p.admin_post("/admin/phase", json!({"phase": 2})).await;
    assert_eq!(status, 200, "{body}");
    let (v2, _) = in_force(&p).await;
    {
        let events = audit.events.lock().expect("lock");
        assert_eq!(events.len(), 1, "{events:?}");
        let e = &events[0];
        assert_eq!(e["action"], "proxy.phase.changed");
        assert_eq!(e["actor"], json!({"type": "service", "id": "operator"}));
        assert_eq!(e["payload"]["from"]["version"], v1.as_str());
        assert_eq!(e["payload"]["from"]["phase"], 1);
        assert_eq!(e["payload"]["to"]["version"], v2.as_str());
        assert_eq!(e["payload"]["to"]["phase"], 2);
    }
    // Down: no phase change, reload or rollback applies; the table and its file stay.
    audit.up.store(false, Ordering::SeqCst);
    let file_before = std::fs::read_to_string(&p.table).expect("read");
    let (status, body) = p.admin_post("/admin/phase", json!({"phase": 3})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(body["error"]["message"].as_str().expect("msg").contains("nothing was changed"), "{body}");
    assert_eq!(in_force(&p).await, (v2.clone(), 2));
    let (status, body) = p.admin_post("/admin/rollback", json!({})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(in_force(&p).await, (v2.clone(), 2));
    assert_eq!(std::fs::read_to_string(&p.table).expect("read"), file_before, "the file is untouched");
    std::fs::write(&p.table, table(4, &legacy.url(), &auth.url(), "")).expect("write");
    let (status, body) = p.admin_post("/admin/reload", json!({})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(in_force(&p).await, (v2.clone(), 2));
    assert_eq!(p.get("/api/v1/auth/backup-codes").await.1["server"], "queue-auth", "still phase 2");
    let (_, t) = p.admin_get("/admin/routes").await;
    assert_eq!(t["history"][0]["version"], v1.as_str(), "the rollback target is still there");
    assert_eq!(audit.events.lock().expect("lock").len(), 1);

    // Up again: reload and rollback are recorded too.
    audit.up.store(true, Ordering::SeqCst);
    let (status, body) = p.admin_post("/admin/reload", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let (v4, _) = in_force(&p).await;
    let (status, body) = p.admin_post("/admin/rollback", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(in_force(&p).await, (v2.clone(), 2));
    let events = audit.events.lock().expect("lock").clone();
    let summary: Vec<(String, Value, Value)> = events
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or("").to_string(),
                e["payload"]["from"]["phase"].clone(),
                e["payload"]["to"]["phase"].clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("proxy.phase.changed".into(), json!(1), json!(2)),
            ("proxy.table.reloaded".into(), json!(2), json!(4)),
            ("proxy.table.rolled_back".into(), json!(4), json!(2)),
        ]
    );
    assert_eq!(events[2]["payload"]["from"]["version"], v4.as_str());
    assert_eq!(events[2]["payload"]["to"]["version"], v2.as_str());
}
