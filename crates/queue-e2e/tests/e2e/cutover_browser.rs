//! Issue 19's first "Must show", end to end: headless Chromium with one virtual authenticator
//! (`tests/browser/cutover.mjs`) through the proxy on the shipped route table
//! (deploy/local/routes.toml), with the real Raptor, auth and rbac, and the real `queuectl`
//! between the parts of the journey:
//! - phase 1: she registers a passkey at Raptor, signs in there with it, generates backup codes;
//! - `queuectl legacy import`, `queuectl proxy phase 3`: the same page load (`/account`) is still
//!   signed in, no prompt, and served by Queue; she signs out and back in with the same
//!   authenticator (by email, usernameless), a Raptor backup code redeems at Queue once, she adds
//!   a second passkey at Queue;
//! - the write-back reaches Raptor, `queuectl proxy rollback`: Raptor signs her in with the
//!   passkey added at Queue, and the session she signed out of at Queue is over at Raptor.
//!
//! Each part's requests are counted where they go: the browser's (the journey says), the proxy's
//! per side (its metrics), Raptor's (werkzeug's request lines) and auth's (its metrics, the
//! routes the pages use); and each page says who served it (the journey checks titles, Raptor's
//! `Server: Werkzeug` and auth's Content-Security-Policy).

use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};

use crate::headless::LiveJourney;
use crate::legacy_import::{ACME, import, outcomes};
use crate::raptor::ADMIN;
use crate::support::{Options, RaptorOptions, Stack, bin};

/// Requests counted where they can go, at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    /// Forwarded by the proxy to Raptor (`queue_proxy_requests_total{side="legacy"}`).
    proxy_legacy: u64,
    /// Forwarded by the proxy to Queue's services (`side="queue"`).
    proxy_queue: u64,
    /// Served by Raptor (werkzeug's request lines), but its health checks and the write-back
    /// API, which are not the browser's.
    raptor: u64,
    /// Served by auth on the routes of its pages and their API (`/auth/…`, `/api/v1/auth/…`), not
    /// its internal endpoints (the import, the proxy's session checks).
    auth: u64,
}

impl std::ops::Sub for Counts {
    type Output = Counts;
    fn sub(self, o: Counts) -> Counts {
        Counts {
            proxy_legacy: self.proxy_legacy - o.proxy_legacy,
            proxy_queue: self.proxy_queue - o.proxy_queue,
            raptor: self.raptor - o.raptor,
            auth: self.auth - o.auth,
        }
    }
}

async fn metrics_text(stack: &Stack, url: &str, token: Option<String>) -> String {
    let mut r = stack.client.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.expect("metrics").text().await.expect("metrics text")
}

/// The sum of a counter's series whose line contains every one of `labels`.
fn sum(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, n)| n.parse::<f64>().ok()))
        .map(|n| n as u64)
        .sum()
}

async fn counts(stack: &Stack) -> Counts {
    let token = stack.keys.token("operator", "proxy", &["proxy:admin"]);
    let proxy = metrics_text(stack, &format!("{}/metrics", stack.admin), Some(token)).await;
    let auth = metrics_text(stack, &format!("{}/metrics", stack.auth[0].base_url), None).await;
    let auth_pages = auth
        .lines()
        .filter(|l| l.starts_with("queue_http_requests_total{"))
        .filter(|l| l.contains("route=\"/auth/") || l.contains("route=\"/api/v1/auth/"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, n)| n.parse::<f64>().ok()))
        .map(|n| n as u64)
        .sum();
    let raptor = stack
        .raptor()
        .stderr()
        .lines()
        .filter(|l| l.contains(" werkzeug INFO ") && l.contains(" HTTP/1.1"))
        .filter(|l| !l.contains(" /healthz HTTP/1.1") && !l.contains(" /internal/"))
        .count() as u64;
    Counts {
        proxy_legacy: sum(&proxy, "queue_proxy_requests_total", &["side=\"legacy\""]),
        proxy_queue: sum(&proxy, "queue_proxy_requests_total", &["side=\"queue\""]),
        raptor,
        auth: auth_pages,
    }
}

/// "requests <part>: N" from the journey's output.
fn browser_requests(stdout: &str, part: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("requests {part}: ")))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("the journey says how many requests it made in {part}:\n{stdout}"))
}

/// `queuectl proxy ARGS…` against the stack's admin listener, as the operator: (exit code,
/// stdout, stderr).
async fn queuectl_proxy(stack: &Stack, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(bin("queuectl"))
        .arg("proxy")
        .args(args)
        .env("QUEUE_PROXY_ADMIN_URL", &stack.admin)
        .env("QUEUE_OPERATOR_KEY", stack.keys.private("operator"))
        .env("QUEUE_AUTH_URL", &stack.auth[0].base_url)
        .env("QUEUE_RBAC_URL", &stack.rbac[0].base_url)
        .env_remove("DATABASE_URL")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run queuectl proxy");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

async fn phase(stack: &Stack) -> Value {
    stack.admin_get("/admin/routes").await["phase"].clone()
}

#[derive(diesel::QueryableByName, Debug)]
struct RaptorPasskey {
    #[diesel(sql_type = Nullable<Text>)]
    name: Option<String>,
    #[diesel(sql_type = BigInt)]
    sign_count: i64,
    #[diesel(sql_type = Nullable<Text>)]
    last_used_at: Option<String>,
}

/// Ada's passkeys in Raptor's own table, oldest first.
async fn raptor_passkeys(stack: &Stack) -> Vec<RaptorPasskey> {
    let mut conn = stack.raptor().db.conn().await;
    diesel::sql_query(
        "SELECT w.name, w.sign_count, w.last_used_at::text AS last_used_at \
         FROM webauthn_credentials w JOIN customers c ON c.id = w.customer_id WHERE c.email = $1 ORDER BY w.id",
    )
    .bind::<Text, _>(ADMIN.0)
    .load(&mut conn)
    .await
    .expect("Raptor's webauthn_credentials")
}

/// The ids of Ada's sessions at Raptor that are live (not revoked, not expired).
async fn raptor_live_sessions(stack: &Stack) -> Vec<i64> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let mut conn = stack.raptor().db.conn().await;
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT s.id FROM customer_sessions s JOIN customers c ON c.id = s.customer_id \
         WHERE c.email = $1 AND s.revoked_at IS NULL AND s.expires_at > now() ORDER BY s.id",
    )
    .bind::<Text, _>(ADMIN.0)
    .load(&mut conn)
    .await
    .expect("Raptor's customer_sessions");
    rows.into_iter().map(|r| r.id).collect()
}

/// Asserts what the part's requests reached: the browser made `made` (all to the proxy, the
/// journey checked), the proxy forwarded them all to `side` ("legacy" or "queue"), and Raptor
/// (legacy) or auth (queue) served as many, the other side none.
fn assert_part(part: &str, made: u64, delta: Counts, side: &str, stack: &Stack) {
    let want = if side == "legacy" {
        Counts { proxy_legacy: made, proxy_queue: 0, raptor: made, auth: 0 }
    } else {
        Counts { proxy_legacy: 0, proxy_queue: made, raptor: 0, auth: made }
    };
    assert!(made >= 5, "{part}: the browser made {made} requests");
    assert_eq!(
        delta,
        want,
        "{part}: the browser made {made}; what the proxy forwarded and who served\n{}",
        stack.logs()
    );
    println!("{part}: {made} requests, all to {side}");
}

/// In phase 3 the shipped table gives Queue exactly `GET /account` and `GET /signin` of Raptor's
/// paths: Raptor's sign-in form (`POST /signin`) and its other pages stay Raptor's, and a path
/// that differs from the routed one only in letter case is refused (a server that ignores case
/// would serve it as the routed page).
async fn bookmarks_only_are_queues(stack: &Stack) {
    let proxy = &stack.proxy.base_url;
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let r = no_redirect.get(format!("{proxy}/account")).send().await.expect("GET /account");
    assert_eq!(r.status(), reqwest::StatusCode::OK);
    assert!(r.text().await.expect("page").contains("<title>Your account · Queue</title>"), "Queue's page at /account");
    let r = no_redirect
        .post(format!("{proxy}/signin"))
        .header(reqwest::header::ORIGIN, &stack.browser_origin)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("email=viewer%40acme.test&password=raptor-viewer-demo")
        .send()
        .await
        .expect("POST /signin");
    assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER, "Raptor's sign-in form answers");
    assert_eq!(r.headers()["location"], "/account", "Raptor's redirect");
    assert!(crate::raptor::session_cookie(&r).is_some(), "a raptor_session from Raptor's form");
    let r = no_redirect.get(format!("{proxy}/tickets")).send().await.expect("GET /tickets");
    assert_eq!((r.status(), r.headers()["location"].to_str().ok()), (reqwest::StatusCode::FOUND, Some("/signin")));
    let r = no_redirect.get(format!("{proxy}/ACCOUNT")).send().await.expect("GET /ACCOUNT");
    assert_eq!(r.status(), reqwest::StatusCode::BAD_REQUEST, "a case variant of a routed path");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cutover_in_chromium_keeps_her_signed_in_and_rolls_back_without_locking_her_out() {
    let started = Instant::now();
    // Auth and rbac write back to Raptor (`RaptorOptions::write_back`). Queue's pages name no
    // tenant (auth takes its `default_tenant`), and Raptor's people are in their Raptor tenant:
    // here, as in a deployment taking over Raptor's one tenant, that is Acme.
    let opts = Options {
        raptor: Some(RaptorOptions { write_back: true, ..RaptorOptions::default() }),
        shipped_routes: true,
        auth_default_tenant: ACME,
        ..Options::default()
    };
    let stack = Stack::start(opts).await;
    assert_eq!(phase(&stack).await, 1, "the shipped table starts in phase 1");
    let before = counts(&stack).await;
    let mut journey = LiveJourney::start("cutover", &[stack.browser_origin.clone().into()]).await;

    // Phase 1, at Raptor.
    journey.until_pause("phase-3", &stack).await;
    let made = browser_requests(&journey.stdout, "phase-1");
    let after_phase_1 = counts(&stack).await;
    assert_part("phase 1", made, after_phase_1 - before, "legacy", &stack);
    let keys = raptor_passkeys(&stack).await;
    assert!(keys.len() == 1 && keys[0].name.as_deref() == Some("Ada’s laptop"), "{keys:?}");
    let live = raptor_live_sessions(&stack).await;
    assert_eq!(live.len(), 1, "signed in at Raptor with her passkey: {live:?}");

    // The sync, then phase 3 (the real queuectl, as an operator runs them).
    let (code, report) = import(&stack, &[]).await;
    assert_eq!(code, 0, "{report:#}\n{}", stack.logs());
    for (kind, [_, _, _, _, refused]) in outcomes(&report) {
        assert_eq!(refused, 0, "{kind}: nothing refused: {report:#}");
    }
    let (code, out, err) = queuectl_proxy(&stack, &["phase", "3"]).await;
    assert_eq!(code, 0, "queuectl proxy phase 3: {out}{err}");
    assert_eq!(phase(&stack).await, 3);
    let at_phase_3 = counts(&stack).await;
    journey.resume().await;

    // Phase 3, at Queue.
    journey.until_pause("rollback", &stack).await;
    let made = browser_requests(&journey.stdout, "phase-3");
    assert_part("phase 3", made, counts(&stack).await - at_phase_3, "queue", &stack);
    let token = stack.keys.token("operator", "proxy", &["proxy:admin"]);
    let proxy = metrics_text(&stack, &format!("{}/metrics", stack.admin), Some(token)).await;
    // Her Raptor session was carried over at the first page load of phase 3 (the journey saw the
    // queue_session cookie arrive), once: her sign-out at Queue cleared both cookies (the proxy
    // clears raptor_session when auth clears the same session's queue_session).
    let carried = sum(&proxy, "queue_proxy_legacy_sessions_carried_total", &[]);
    assert_eq!(carried, 1, "her Raptor session carried over once");

    bookmarks_only_are_queues(&stack).await;

    // The write-back: what she did at Queue reaches Raptor (the passkey added; the session she
    // signed out of, revoked), then the rollback.
    let waited = Instant::now();
    let deadline = waited + Duration::from_secs(20);
    loop {
        let keys = raptor_passkeys(&stack).await;
        let live = raptor_live_sessions(&stack).await;
        if keys.len() == 2 && live.is_empty() {
            assert_eq!(keys[1].name.as_deref(), Some("Ada’s phone"), "{keys:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "within 20 s, the passkey added at Queue is at Raptor ({keys:?}) and her Raptor session, \
             signed out at Queue, is revoked there ({live:?})\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // auth's outbox agrees: nothing pending, nothing failed (its import status, as `queuectl
    // legacy status` and the rollback read it).
    let token = stack.keys.token("operator", "auth", &["users:import"]);
    let (s, status) = stack.get(&stack.auth[0].base_url, "/internal/v1/import/status", Some(&token)).await;
    assert_eq!(s, reqwest::StatusCode::OK, "{status}");
    let backlog = &status["write_back"];
    assert_eq!(
        (&backlog["enabled"], &backlog["pending"], &backlog["failed"]),
        (&json!(true), &json!(0), &json!(0)),
        "{status:#}"
    );
    println!("the write-back reached Raptor {:.1?} after the journey's phase 3", waited.elapsed());
    let (code, out, err) = queuectl_proxy(&stack, &["rollback"]).await;
    assert_eq!(code, 0, "queuectl proxy rollback: {out}{err}");
    assert_eq!(phase(&stack).await, 1);
    let rolled_back = counts(&stack).await;
    journey.resume().await;

    // Phase 1 again, at Raptor.
    let journey = journey.finish(&stack, 14).await;
    let made = browser_requests(&journey.stdout, "rollback");
    assert_part("after the rollback", made, counts(&stack).await - rolled_back, "legacy", &stack);
    let keys = raptor_passkeys(&stack).await;
    assert!(
        keys[1].sign_count >= 1 && keys[1].last_used_at.is_some(),
        "Raptor verified the passkey added at Queue: {keys:?}"
    );
    println!("the cutover journey: {:.1?} in the browser, {:.1?} in all", journey.took, started.elapsed());
}
