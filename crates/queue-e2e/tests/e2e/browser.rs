//! The account pages as a person meets them: headless Chromium (Debian's package) driven by
//! playwright-core, with a virtual WebAuthn authenticator over CDP, through the proxy —
//! verify an email, enroll a passkey, log out, log in usernameless, revoke another device's
//! session, rename the passkey, generate backup codes, log out, redeem one (a recovery session),
//! add a second passkey and log in with it. The journey is `tests/browser/journey.mjs`; it
//! saves a screenshot after each step in `<target>/browser-screenshots/journey/`.
//!
//! Chromium and `tests/browser/node_modules` come from `scripts/install-test-deps.sh` (run by
//! `make test`); when either is missing this test fails and says so, it does not skip
//! (headless.rs).

use serde_json::json;

use crate::headless::run_journey;
use crate::support::{Options, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_passkey_journey_in_headless_chromium_through_the_proxy() {
    let stack = Stack::start(Options::default()).await;
    // Backup codes are a phase-2 route in the stack's table (phase 1: legacy serves them).
    let change = stack.admin_post("/admin/phase", &json!({"phase": 2})).await;
    assert_eq!(change["phase"], 2, "{change}");

    let args = [stack.browser_origin.clone().into(), stack.mail_dir.clone().into()];
    run_journey("journey", &args, &stack, 10).await;
}
