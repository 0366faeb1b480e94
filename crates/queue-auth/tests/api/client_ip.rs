//! Who the client is (issue 16, item 1): behind a trusted proxy, the right-most
//! `X-Forwarded-For` address that is not a trusted proxy; from anyone else, the TCP peer. Per-IP
//! limits count by it, an IPv6 client by its /64; audit events record it. The test client is on
//! 127.0.0.1, playing the proxy when the config trusts loopback.

use queue_platform::net::TrustedNetworks;
use reqwest::StatusCode;
use serde_json::json;

use crate::support::Auth;

const LOGIN_START: &str = "/api/v1/auth/webauthn/login/start";
const CAP: i32 = 3;

/// An anonymous login start on behalf of `xff` (as the proxy sends it); the status.
async fn login_start(auth: &Auth, xff: &str) -> StatusCode {
    let r = auth
        .app
        .client
        .post(auth.app.url(LOGIN_START))
        .header("x-forwarded-for", xff)
        .json(&json!({}))
        .send()
        .await
        .expect("request");
    r.status()
}

async fn behind_the_proxy() -> Auth {
    Auth::start_with(|c| {
        c.auth.trusted_proxies = TrustedNetworks::parse(&["127.0.0.0/8", "::1"]).expect("valid");
        c.limits.per_ip_attempts = CAP;
    })
    .await
}

#[tokio::test]
async fn per_ip_limits_count_the_forwarded_client_not_the_proxy() {
    let auth = behind_the_proxy().await;
    for i in 0..CAP {
        assert_eq!(login_start(&auth, "203.0.113.9").await, StatusCode::OK, "attempt {i}");
    }
    assert_eq!(login_start(&auth, "203.0.113.9").await, StatusCode::TOO_MANY_REQUESTS, "past the cap");
    // The same proxy, another client: served.
    assert_eq!(login_start(&auth, "203.0.113.10").await, StatusCode::OK);
    // Left entries are the client's own words: forging them does not make it someone else.
    assert_eq!(login_start(&auth, "198.51.100.1, 203.0.113.9").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(login_start(&auth, "198.51.100.2, 203.0.113.9").await, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn an_ipv6_client_counts_by_its_64() {
    let auth = behind_the_proxy().await;
    // One host picks a new address of its /64 for every attempt.
    for i in 0..CAP {
        assert_eq!(login_start(&auth, &format!("2001:db8:1:2::{:x}", i + 1)).await, StatusCode::OK, "attempt {i}");
    }
    assert_eq!(
        login_start(&auth, "2001:db8:1:2:ffff::77").await,
        StatusCode::TOO_MANY_REQUESTS,
        "another address of the same /64 is the same client"
    );
    assert_eq!(login_start(&auth, "2001:db8:1:3::1").await, StatusCode::OK, "the next /64 is another client");
    // An IPv4 client written as IPv4-mapped IPv6 is the IPv4 client.
    for _ in 0..CAP {
        assert_eq!(login_start(&auth, "198.51.100.7").await, StatusCode::OK);
    }
    assert_eq!(login_start(&auth, "::ffff:198.51.100.7").await, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn from_an_untrusted_peer_the_forwarded_header_is_ignored() {
    // auth.trusted_proxies does not name 127.0.0.1: the test client is just a client.
    let auth = Auth::start_with(|c| {
        c.auth.trusted_proxies = TrustedNetworks::parse(&["10.0.0.0/8"]).expect("valid");
        c.limits.per_ip_attempts = CAP;
    })
    .await;
    for i in 0..CAP {
        assert_eq!(login_start(&auth, &format!("203.0.113.{i}")).await, StatusCode::OK, "attempt {i}");
    }
    // A new forged address every time, still the same client (the TCP peer).
    assert_eq!(login_start(&auth, "203.0.113.99").await, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn audit_events_record_the_forwarded_client() {
    let auth = behind_the_proxy().await;
    let r = auth
        .app
        .client
        .post(auth.app.url("/api/v1/auth/email/verification"))
        .header("x-forwarded-for", "198.51.100.1, 203.0.113.9")
        .json(&json!({"email": "who@example.com"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let sent = "SELECT count(*) AS n FROM auth.audit_outbox WHERE event->>'action' = 'auth.email.verification_sent'";
    assert_eq!(auth.scalar(&format!("{sent} AND event->>'ip' = '203.0.113.9'")).await, 1, "the client, not the proxy");
}
