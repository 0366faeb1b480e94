//! The contract through the proxy, as a hostile client would try it: a method a Queue path does
//! not declare is answered 405 by the service behind the proxy, with `Allow` from its OpenAPI
//! document and the JSON error body; TRACE echoes nothing back (no cross-site tracing).

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::support::{Options, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_methods_through_the_proxy_get_405_with_allow_and_trace_echoes_nothing() {
    let stack = Stack::start(Options::default()).await;
    let proxy = stack.proxy.base_url.clone();
    let token = stack.rbac_admin();
    let cases = [
        (Method::PUT, "/api/v1/rbac/grants", "GET, POST"),
        (Method::PATCH, "/api/v1/rbac/check", "POST"),
        (Method::DELETE, "/api/v1/auth/email/verification", "POST"),
        (Method::TRACE, "/api/v1/rbac/grants", "GET, POST"),
        (Method::GET, "/api/v1/rbac/grants/6f1c2d7e-0000-4000-8000-000000000001", "DELETE"),
    ];
    for (method, path, allow) in cases {
        let response = stack
            .client
            .request(method.clone(), format!("{proxy}{path}"))
            .bearer_auth(&token)
            .header("x-secret-probe", "do-not-echo")
            .send()
            .await
            .expect("request");
        let status = response.status();
        let allowed = response.headers().get("allow").and_then(|v| v.to_str().ok()).map(str::to_string);
        let text = response.text().await.expect("body");
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {text}");
        assert_eq!(allowed.as_deref(), Some(allow), "{method} {path}");
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text:?}"));
        assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
        assert!(!text.contains("do-not-echo") && !text.contains(&token), "{method} echoed the request: {text}");
    }
}
