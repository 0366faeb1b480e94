//! Issue 16, item 8 (auth): the verification link in the mail confirms only when the person
//! clicks, never on page load. A mail scanner or a link preview that opens the page (and runs
//! its script) must not use the link. The page is opened in headless Chromium (Debian's
//! package, as for the browser journey) through the proxy; the link must still work afterwards.

use reqwest::StatusCode;
use serde_json::json;
use std::path::Path;

use crate::support::{Options, Stack};

#[tokio::test]
async fn opening_the_verification_link_in_a_browser_does_not_use_it() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).is_file(), "{chromium} is missing: run scripts/install-test-deps.sh");
    let stack = Stack::start(Options::default()).await;
    let proxy = stack.proxy.base_url.clone();
    let (s, v) =
        stack.post(&proxy, "/api/v1/auth/email/verification", None, &json!({"email": "link@example.com"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let mail = stack.mail_to("link@example.com", 0).await;
    let at = mail.find("token=").expect("a link in the mail") + "token=".len();
    let token: String =
        mail[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();

    // The page as the mail's link opens it, scripts and all. The virtual time budget lets the
    // page finish whatever it starts on load (network included) before the DOM is dumped.
    let profile = tempfile::tempdir().expect("profile");
    let out = tokio::process::Command::new(&chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("{}/auth/verify?token={token}", stack.browser_origin))
        .output()
        .await
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));

    // The page was loaded and its script ran; the link is still unused: the click (a POST)
    // confirms it now.
    let (s, v) = stack.post(&proxy, "/api/v1/auth/email/verification/confirm", None, &json!({"token": token})).await;
    assert_eq!((s, v["session"]["kind"].as_str()), (StatusCode::OK, Some("enrollment")), "{v}\n{dom}");
    assert!(dom.contains("id=\"link-button\""), "the page offers a button: {dom}");
}
