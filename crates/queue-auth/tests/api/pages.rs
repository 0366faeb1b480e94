//! The account pages (`/auth/…`): served with a strict policy, scripts as files, every page's
//! references resolvable; registration asks for a discoverable credential (usernameless login).
//! The pages at work in a browser: crates/queue-e2e/tests/e2e/browser.rs.

use reqwest::StatusCode;
use serde_json::json;

use crate::support::Auth;

const PAGES: [&str; 5] = ["/auth/login", "/auth/verify", "/auth/enroll", "/auth/account", "/auth/recover"];

#[tokio::test]
async fn every_page_is_served_with_a_strict_policy_and_no_inline_script() {
    let auth = Auth::start().await;
    for path in PAGES {
        let r = auth.app.client.get(auth.app.url(path)).send().await.expect("request");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers().clone();
        assert_eq!(h["content-type"], "text/html; charset=utf-8", "{path}");
        let csp = h["content-security-policy"].to_str().expect("ascii");
        for directive in ["default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"] {
            assert!(csp.contains(directive), "{path}: {csp} lacks {directive}");
        }
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{path}: {csp}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        let html = r.text().await.expect("body");
        // No inline script, handler or style: every <script> has a src on this origin.
        assert_eq!(html.matches("<script").count(), html.matches("<script src=\"/auth/assets/").count(), "{path}");
        assert!(!html.contains(" onclick=") && !html.contains(" style=") && !html.contains("<style"), "{path}");
        assert!(!html.contains("http://") && !html.contains("https://"), "{path}: no third-party references");
        // Every asset the page names is served.
        for asset in html.split('"').filter(|s| s.starts_with("/auth/assets/")) {
            let r = auth.app.client.get(auth.app.url(asset)).send().await.expect("asset");
            assert_eq!(r.status(), StatusCode::OK, "{path} names {asset}");
        }
    }
    let login =
        auth.app.client.get(auth.app.url("/auth/login")).send().await.expect("login").text().await.expect("body");
    assert!(login.contains("autocomplete=\"username webauthn\""), "passkey autofill on the email field");

    let r = auth.app.client.get(auth.app.url("/auth/assets/app.js")).send().await.expect("js");
    assert_eq!(r.headers()["content-type"], "text/javascript; charset=utf-8");
    let js = r.text().await.expect("js");
    for helper in ["parseCreationOptionsFromJSON", "parseRequestOptionsFromJSON", "toJSON()", "mediation"] {
        assert!(js.contains(helper), "app.js uses {helper}");
    }

    let r = auth.app.client.get(auth.app.url("/auth/nope")).send().await.expect("request");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn registration_asks_for_a_discoverable_credential() {
    let auth = Auth::start().await;
    let enrollment = auth.enroll("pages@example.com").await;
    let (s, v) = auth.post("/api/v1/auth/webauthn/register/start", Some(&enrollment), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let sel = &v["options"]["publicKey"]["authenticatorSelection"];
    assert_eq!(sel["residentKey"], "preferred", "{v}");
    assert_eq!(sel["requireResidentKey"], false, "{v}");
    assert_eq!(sel["userVerification"], "required", "{v}");
}
