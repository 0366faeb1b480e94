//! What the browser tests share: their preconditions (Debian's Chromium, Node.js, and
//! playwright-core in `tests/browser/node_modules`, from `scripts/install-test-deps.sh`, run by
//! `make test`; a missing one fails the test and says so, it never skips), a screenshot
//! directory per journey, and running a journey script (`tests/browser/<name>.mjs`) to the end.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{Stack, repo_root};

const INSTALL: &str = "run scripts/install-test-deps.sh (as root: it apt-installs chromium and runs `npm ci` in \
                       tests/browser), or `make test-deps`";

/// A journey that held: what it printed and how long it took.
pub struct Journey {
    pub stdout: String,
    pub took: Duration,
}

/// `<target>/browser-screenshots/<journey>`: beside the profile directory this test was built
/// into; emptied at the start of each run.
fn screenshot_dir(journey: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let target = exe.ancestors().nth(3).expect("<target>/<profile>/deps/<test>");
    target.join("browser-screenshots").join(journey)
}

/// Runs `node tests/browser/<journey>.mjs <args…> <screenshot dir>` with `CHROMIUM` set, and
/// fails the test (with the journey's output and every process's log) unless it exits 0 having
/// saved at least `min_screenshots` screenshots.
pub async fn run_journey(journey: &str, args: &[OsString], stack: &Stack, min_screenshots: usize) -> Journey {
    let dir = repo_root().join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).is_file(), "{chromium} is missing: {INSTALL}");
    assert!(
        dir.join("node_modules/playwright-core/package.json").is_file(),
        "{}/node_modules is missing: {INSTALL}",
        dir.display()
    );
    let node = tokio::process::Command::new("node").arg("--version").output().await;
    assert!(node.is_ok_and(|o| o.status.success()), "`node` is not on PATH (Node.js 20 or later is needed)");

    let shots = screenshot_dir(journey);
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("the screenshot directory");
    let started = Instant::now();
    let out = tokio::process::Command::new("node")
        .current_dir(&dir)
        .arg(format!("{journey}.mjs"))
        .args(args)
        .arg(&shots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run node {journey}.mjs: {e}"));
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser journey {journey} failed ({}, after {took:.1?}; screenshots in {}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n{}",
        out.status,
        shots.display(),
        stack.logs()
    );
    println!("{stdout}browser journey {journey}: {took:.1?} (screenshots in {})", shots.display());
    let pngs = std::fs::read_dir(&shots)
        .expect("screenshots")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .count();
    assert!(pngs >= min_screenshots, "a screenshot per step, found {pngs} in {}", shots.display());
    Journey { stdout, took }
}
