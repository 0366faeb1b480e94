//! Traces across services: one request through the proxy to rbac (a grant, which rbac writes to
//! audit first) gives spans from the proxy, rbac and audit under one trace id, exported over
//! OTLP/HTTP to a local receiver. No traceparent is sent: the trace starts at the proxy.

use reqwest::StatusCode;
use std::time::{Duration, Instant};

use crate::support::{Options, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_through_the_proxy_has_spans_from_proxy_rbac_and_audit_in_one_trace() {
    let stack = Stack::start(Options { otlp: true, ..Options::default() }).await;
    let otlp = stack.otlp.as_ref().expect("collector");
    let r = stack.grant(&stack.proxy.base_url, "traced", "TR", None).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // rbac's trace id, as it answered: the proxy's trace when the proxy passed its context on.
    let trace = r.headers().get("x-trace-id").and_then(|v| v.to_str().ok()).expect("x-trace-id").to_string();
    assert_eq!(trace.len(), 32, "{trace}");

    let services = ["proxy", "rbac", "audit"];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let missing: Vec<&str> = services.iter().copied().filter(|s| !otlp.exported_trace(s, &trace)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no span of trace {trace} from {missing:?} within 20 s ({} exports)\n{}",
            otlp.exports().len(),
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each export names its service in its resource, so the receiver's paths are not lying.
    for s in services {
        let name = format!("queue-{s}");
        assert!(
            otlp.exports()
                .iter()
                .any(|(p, b)| p.starts_with(&format!("/{s}/")) && b.windows(name.len()).any(|w| w == name.as_bytes())),
            "{s}'s exports carry service.name {name}"
        );
    }
    // And the trace is that one request's: the audit event rbac wrote carries it too.
    let events = stack.audit_events("TR").await;
    assert!(events.iter().any(|e| e["trace_id"] == trace.as_str()), "{events:?}");

    // The check tells traces apart: a grant sent to rbac directly starts its own trace, which
    // rbac and audit export and the proxy, never involved, does not.
    let r = stack.grant(&stack.rbac[0].base_url, "direct", "TR", None).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let direct = r.headers().get("x-trace-id").and_then(|v| v.to_str().ok()).expect("x-trace-id").to_string();
    assert_ne!(direct, trace);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(otlp.exported_trace("rbac", &direct) && otlp.exported_trace("audit", &direct)) {
        assert!(Instant::now() < deadline, "rbac and audit export the direct request's trace\n{}", stack.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!otlp.exported_trace("proxy", &direct), "the proxy has no span in a trace it never saw");
}

/// A grant through the proxy from a client whose connections come from `ip`, with `traceparent`;
/// the trace id rbac answered with and the grant's audit event id.
async fn grant_from(stack: &Stack, ip: [u8; 4], principal: &str, traceparent: &str) -> (String, serde_json::Value) {
    let client = reqwest::Client::builder().local_address(std::net::IpAddr::from(ip)).build().expect("client");
    let body = serde_json::json!({"principal_id": principal, "role": "agent",
                                  "scope": {"type": "tenant", "tenant_id": "TP"}, "reason": "e2e"});
    let r = client
        .post(format!("{}/api/v1/rbac/grants", stack.proxy.base_url))
        .bearer_auth(stack.rbac_admin())
        .header("traceparent", traceparent)
        .json(&body)
        .send()
        .await
        .expect("grant");
    assert_eq!(r.status(), StatusCode::CREATED);
    let trace = r.headers().get("x-trace-id").and_then(|v| v.to_str().ok()).expect("x-trace-id").to_string();
    let grant: serde_json::Value = r.json().await.expect("json");
    (trace, grant["audit_event_id"].clone())
}

/// Item 8 of issue 16: a client cannot choose the trace its requests (and the audit events they
/// cause) are filed under. Here 127.0.0.1 plays a load balancer in front of the proxy
/// (`forwarding.trusted_proxies`); 127.0.0.2 is an ordinary client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_continues_a_traceparent_only_from_a_trusted_proxy() {
    let stack = Stack::start(Options { proxy_trusted_proxies: r#"["127.0.0.1"]"#, ..Options::default() }).await;
    let trusted = "0af7651916cd43dd8448eb211c80319c";
    let (trace, _) = grant_from(&stack, [127, 0, 0, 1], "from-lb", &format!("00-{trusted}-b7ad6b7169203331-01")).await;
    assert_eq!(trace, trusted, "the load balancer's trace runs on through the proxy and rbac");

    let chosen = "feedfacefeedfacefeedfacefeedface";
    let (trace, event_id) =
        grant_from(&stack, [127, 0, 0, 2], "from-client", &format!("00-{chosen}-b7ad6b7169203331-01")).await;
    assert_eq!(trace.len(), 32, "{trace}");
    assert_ne!(trace, chosen, "a client's traceparent starts a new trace at the proxy");
    let events = stack.audit_events("TP").await;
    let event = events.iter().find(|e| e["id"] == event_id).unwrap_or_else(|| panic!("{event_id} in {events:?}"));
    assert_eq!(event["trace_id"], trace.as_str(), "the audit event is filed under the proxy's trace: {event}");
    assert!(!events.iter().any(|e| e["trace_id"] == chosen), "nothing under the client's chosen trace");
}
