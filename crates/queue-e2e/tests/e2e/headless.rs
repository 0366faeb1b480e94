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
    let (dir, chromium) = preconditions().await;
    let shots = fresh_screenshot_dir(journey);
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
    assert_screenshots(&shots, min_screenshots);
    Journey { stdout, took }
}

/// The journeys' preconditions, checked: (tests/browser, the Chromium binary).
async fn preconditions() -> (PathBuf, String) {
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
    (dir, chromium)
}

fn fresh_screenshot_dir(journey: &str) -> PathBuf {
    let shots = screenshot_dir(journey);
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("the screenshot directory");
    shots
}

fn assert_screenshots(shots: &Path, min_screenshots: usize) {
    let pngs = std::fs::read_dir(shots)
        .expect("screenshots")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
        .count();
    assert!(pngs >= min_screenshots, "a screenshot per step, found {pngs} in {}", shots.display());
}

/// A journey the test takes part in: the script prints `pause <name>` and waits for a line on
/// its stdin (`go`), so the test can act between its parts (run `queuectl`, read databases).
/// Dropping it kills the browser.
pub struct LiveJourney {
    name: String,
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    /// What the script printed so far.
    pub stdout: String,
    stderr_path: PathBuf,
    shots: PathBuf,
    started: Instant,
}

impl LiveJourney {
    /// Starts `node tests/browser/<journey>.mjs <args…> <screenshot dir>` (its stderr in
    /// `<screenshot dir>/stderr.log`).
    pub async fn start(journey: &str, args: &[OsString]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let (dir, chromium) = preconditions().await;
        let shots = fresh_screenshot_dir(journey);
        let stderr_path = shots.join("stderr.log");
        let mut child = tokio::process::Command::new("node")
            .current_dir(&dir)
            .arg(format!("{journey}.mjs"))
            .args(args)
            .arg(&shots)
            .env("CHROMIUM", &chromium)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).expect("the journey's stderr file"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("run node {journey}.mjs: {e}"));
        let stdin = child.stdin.take().expect("the journey's stdin");
        let lines = tokio::io::BufReader::new(child.stdout.take().expect("the journey's stdout")).lines();
        Self {
            name: journey.to_string(),
            child,
            stdin,
            lines,
            stdout: String::new(),
            stderr_path,
            shots,
            started: Instant::now(),
        }
    }

    /// Reads the script's output up to its `pause <name>` line (within `STEP_LIMIT`); fails the
    /// test with the script's output and every log when it ends or stops elsewhere.
    pub async fn until_pause(&mut self, name: &str, stack: &Stack) {
        let want = format!("pause {name}");
        loop {
            let line = tokio::time::timeout(PART_LIMIT, self.lines.next_line()).await;
            match line {
                Ok(Ok(Some(line))) => {
                    println!("  [{}] {line}", self.name);
                    self.stdout.push_str(&line);
                    self.stdout.push('\n');
                    if line == want {
                        return;
                    }
                    assert!(!line.starts_with("pause "), "expected `{want}`, the journey says `{line}`");
                }
                Ok(_) => panic!("{}", self.failure(&format!("ended before `{want}`"), stack).await),
                Err(_) => panic!("{}", self.failure(&format!("no `{want}` within {PART_LIMIT:?}"), stack).await),
            }
        }
    }

    /// Lets the script go on past its pause.
    pub async fn resume(&mut self) {
        use tokio::io::AsyncWriteExt;
        self.stdin.write_all(b"go\n").await.expect("the journey's stdin");
        self.stdin.flush().await.expect("the journey's stdin");
    }

    /// Waits for the script to end; fails the test unless it exits 0 having saved at least
    /// `min_screenshots` screenshots.
    pub async fn finish(mut self, stack: &Stack, min_screenshots: usize) -> Journey {
        loop {
            match tokio::time::timeout(PART_LIMIT, self.lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    println!("  [{}] {line}", self.name);
                    self.stdout.push_str(&line);
                    self.stdout.push('\n');
                }
                Ok(_) => break,
                Err(_) => panic!("{}", self.failure(&format!("did not end within {PART_LIMIT:?}"), stack).await),
            }
        }
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        let took = self.started.elapsed();
        match status {
            Ok(Ok(s)) if s.success() => {}
            other => panic!("{}", self.failure(&format!("failed ({other:?})"), stack).await),
        }
        println!("browser journey {}: {took:.1?} (screenshots in {})", self.name, self.shots.display());
        assert_screenshots(&self.shots, min_screenshots);
        Journey { stdout: self.stdout, took }
    }

    async fn failure(&mut self, what: &str, stack: &Stack) -> String {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        format!(
            "the browser journey {} {what} (after {:.1?}; screenshots in {}):\n--- stdout\n{}\n--- stderr\n{}\n{}",
            self.name,
            self.started.elapsed(),
            self.shots.display(),
            self.stdout,
            std::fs::read_to_string(&self.stderr_path).unwrap_or_default(),
            stack.logs()
        )
    }
}

/// How long one part of a live journey (between two pauses) may take.
const PART_LIMIT: Duration = Duration::from_secs(90);
