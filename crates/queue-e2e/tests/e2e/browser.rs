//! The account pages as a person meets them: headless Chromium (Debian's package) driven by
//! playwright-core, with a virtual WebAuthn authenticator over CDP, through the proxy —
//! verify an email, enroll a passkey, log out, log in usernameless, revoke another device's
//! session, rename the passkey, generate backup codes, log out, redeem one (a recovery session),
//! add a second passkey and log in with it. The journey is `tests/browser/journey.mjs`; it
//! saves a screenshot after each step in `<target>/browser-screenshots/`.
//!
//! Chromium and `tests/browser/node_modules` come from `scripts/install-test-deps.sh` (run by
//! `make test`); when either is missing this test fails and says so, it does not skip.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::support::{Options, Stack};

const INSTALL: &str = "run scripts/install-test-deps.sh (as root: it apt-installs chromium and runs `npm ci` in \
                       tests/browser), or `make test-deps`";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root")
}

/// `<target>/browser-screenshots`: beside the profile directory this test was built into.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let target = exe.ancestors().nth(3).expect("<target>/<profile>/deps/<test>");
    target.join("browser-screenshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_passkey_journey_in_headless_chromium_through_the_proxy() {
    let root = repo_root();
    let dir = root.join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).is_file(), "{chromium} is missing: {INSTALL}");
    assert!(
        dir.join("node_modules/playwright-core/package.json").is_file(),
        "{}/node_modules is missing: {INSTALL}",
        dir.display()
    );
    let node = tokio::process::Command::new("node").arg("--version").output().await;
    assert!(node.is_ok_and(|o| o.status.success()), "`node` is not on PATH (Node.js 20 or later is needed)");

    let stack = Stack::start(Options::default()).await;
    // Backup codes are a phase-2 route in the stack's table (phase 1: legacy serves them).
    let change = stack.admin_post("/admin/phase", &json!({"phase": 2})).await;
    assert_eq!(change["phase"], 2, "{change}");

    let shots = screenshot_dir();
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("the screenshot directory");
    let started = Instant::now();
    let out = tokio::process::Command::new("node")
        .current_dir(&dir)
        .arg("journey.mjs")
        .arg(&stack.browser_origin)
        .arg(&stack.mail_dir)
        .arg(&shots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run node journey.mjs");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser journey failed ({}, after {took:.1?}; screenshots in {}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n{}",
        out.status,
        shots.display(),
        stack.logs()
    );
    println!("{stdout}browser journey: {took:.1?} (screenshots in {})", shots.display());
    let pngs = std::fs::read_dir(&shots)
        .expect("screenshots")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .count();
    assert!(pngs >= 10, "a screenshot per step, found {pngs} in {}", shots.display());
}
