//! The flood (issue 16, item 1), through the real proxy: one client address floods anonymous
//! sign-in endpoints until auth answers 429, and another client is still served. The proxy names
//! each client in `X-Forwarded-For` (replacing whatever the client sent: it trusts nobody in front
//! of it, as in deploy/local/proxy.toml); auth believes the proxy (`auth.trusted_proxies` as in
//! deploy/local/auth.toml). Clients are told apart by their source address: each binds its socket
//! to its own loopback address (127.0.0.0/8 is all loopback).

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::IpAddr;

use crate::support::{Options, Stack};

const LOGIN_START: &str = "/api/v1/auth/webauthn/login/start";
const CONFIRM: &str = "/api/v1/auth/email/verification/confirm";
/// Login starts per client per window, and failed confirms per client before its lockout (low,
/// so the flood is short; the progressive delay is out of the way, so nothing depends on time).
const CAP: usize = 10;
const LIMITS: &str = "per_ip_attempts = 10\nip_delay_after_failures = 1000\nip_lockout_after_failures = 10\n";

/// A client whose connections come from `ip`.
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder().local_address(IpAddr::from(ip)).build().expect("client")
}

/// POSTs `body` to the proxy, with `X-Forwarded-For: xff` when given; the status and body.
async fn post(
    stack: &Stack,
    client: &reqwest::Client,
    path: &str,
    body: &Value,
    xff: Option<&str>,
) -> (StatusCode, Value) {
    let mut r = client.post(format!("{}{path}", stack.proxy.base_url)).json(body);
    if let Some(x) = xff {
        r = r.header("x-forwarded-for", x);
    }
    let r = r.send().await.expect("request");
    let status = r.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        assert!(r.headers().contains_key("retry-after"), "a 429 says when to retry");
    }
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Sends `n` requests from `client`, each made by `body(i)` (with `xff(i)`), expecting `each`.
async fn flood(
    stack: &Stack,
    client: &reqwest::Client,
    path: &str,
    n: usize,
    body: impl Fn(usize) -> Value,
    xff: impl Fn(usize) -> Option<String>,
    each: StatusCode,
) {
    for i in 0..n {
        let (s, v) = post(stack, client, path, &body(i), xff(i).as_deref()).await;
        assert_eq!(s, each, "{path} request {i}: {v}\n{}", stack.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_through_the_proxy_limits_that_client_and_nobody_else() {
    let stack = Stack::start(Options { auth_limits: LIMITS, ..Options::default() }).await;
    let flooder = client_from([127, 0, 0, 2]);
    let bystander = client_from([127, 0, 0, 3]);
    let forger = client_from([127, 0, 0, 4]);
    let anonymous = |_| json!({});

    // Passkey login starts (discoverable: no email, so only the client's address counts).
    flood(&stack, &flooder, LOGIN_START, CAP, anonymous, |_| None, StatusCode::OK).await;
    let (s, v) = post(&stack, &flooder, LOGIN_START, &json!({}), None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "the flooder is limited: {v}");
    assert_eq!(v["error"]["code"], "rate_limited", "{v}");
    let (s, v) = post(&stack, &bystander, LOGIN_START, &json!({}), None).await;
    assert_eq!(s, StatusCode::OK, "another client is still served: {v}\n{}", stack.logs());

    // A client that forges X-Forwarded-For, a new address (or chain) every time, is still itself.
    let forged = |i: usize| Some(format!("198.51.100.{i}, 203.0.113.{i}"));
    flood(&stack, &forger, LOGIN_START, CAP, anonymous, forged, StatusCode::OK).await;
    let (s, v) = post(&stack, &forger, LOGIN_START, &json!({}), Some("192.0.2.77")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "forging the header does not dodge the limit: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_code_flood_through_the_proxy_locks_out_that_client_and_nobody_else() {
    let stack = Stack::start(Options { auth_limits: LIMITS, ..Options::default() }).await;
    let flooder = client_from([127, 0, 0, 2]);
    let bystander = client_from([127, 0, 0, 3]);
    let none = |_| None;
    // Email verification confirms with wrong codes (401 each), each for another address (so no
    // account limit is reached): the client's failures lock the client out, and only it.
    let wrong = |i: usize| json!({"email": format!("flood-{i}@example.com"), "code": "00000000"});
    flood(&stack, &flooder, CONFIRM, CAP, wrong, none, StatusCode::UNAUTHORIZED).await;
    let (s, v) = post(&stack, &flooder, CONFIRM, &wrong(CAP), None).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "the flooder is locked out: {v}");
    let (s, v) = post(&stack, &bystander, CONFIRM, &wrong(CAP + 1), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "another client may still try: {v}");
    // And the bystander can still start a login after all of it.
    let (s, v) = post(&stack, &bystander, LOGIN_START, &json!({}), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}
