//! `queuectl legacy import --follow`: the import again and again, so Queue stays within seconds
//! of Raptor while both serve people (phases 1–2: a session revoked, a code used, a passkey
//! added at Raptor reach Queue by the next round). Each round is a whole import on a fresh
//! snapshot — the services answer `unchanged` for what they hold, so a quiet round writes
//! nothing. A round that fails (Raptor or a service down) is logged and tried again after a
//! growing pause; Ctrl-C or SIGTERM ends the loop between rounds or cuts a round short (every
//! batch a service answered is already committed there, and the next run picks up the rest).

use std::process::ExitCode;
use std::time::Duration;

use super::records::Outcome;
use super::report::Report;

/// The longest pause after failed rounds.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How to follow: the pause between rounds and the output's form.
pub struct Follow {
    pub interval: Duration,
    pub json: bool,
}

/// Runs `round` (one whole import: the report, or why it could not run) again and again until a
/// signal; 0 when stopped by one, 2 when the runtime cannot start.
pub fn run<F: AsyncFn() -> anyhow::Result<Report>>(how: &Follow, round: F) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("queuectl: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        tokio::select! {
            code = rounds(how, round) => code,
            () = stopped() => {
                eprintln!("queuectl: stopped; the next import picks up what this round did not send");
                ExitCode::SUCCESS
            }
        }
    })
}

/// Ctrl-C or SIGTERM.
async fn stopped() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

async fn rounds<F: AsyncFn() -> anyhow::Result<Report>>(how: &Follow, round: F) -> ExitCode {
    let interval = how.interval;
    let mut pause = interval;
    for n in 1u64.. {
        match round().await {
            Ok(report) => {
                show(n, &report, how.json);
                pause = if report.error.is_some() { backoff(pause, interval) } else { interval };
            }
            Err(e) => {
                eprintln!("queuectl: round {n} could not run: {e:#}");
                pause = backoff(pause, interval);
            }
        }
        tokio::time::sleep(pause).await;
    }
    ExitCode::SUCCESS
}

/// The pause after a failed round: doubled from the last one, at most [`MAX_BACKOFF`] (never
/// shorter than the interval).
fn backoff(last: Duration, interval: Duration) -> Duration {
    last.saturating_mul(2).clamp(interval, MAX_BACKOFF.max(interval))
}

/// A round on stdout: with `--json` one compact document per line; as text, the whole report
/// for the first round and for a round that brought, refused or failed anything, else one line.
fn show(round: u64, report: &Report, json: bool) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if json {
        let mut doc = report.to_json();
        doc["round"] = serde_json::json!(round);
        println!("{doc}");
        return;
    }
    let quiet = report.total(Outcome::Created) + report.total(Outcome::Updated) + report.refused() == 0;
    if round == 1 || !quiet || report.error.is_some() {
        println!("{now} round {round}:");
        print!("{}", report.to_text());
    } else {
        println!("{now} round {round}: {}", report.summary());
    }
    if let Some(e) = &report.error {
        eprintln!("queuectl: round {round} stopped: {e} (tried again)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_after_failures_within_bounds() {
        let i = Duration::from_secs(5);
        assert_eq!(backoff(i, i), Duration::from_secs(10));
        assert_eq!(backoff(Duration::from_secs(40), i), MAX_BACKOFF);
        assert_eq!(backoff(MAX_BACKOFF, i), MAX_BACKOFF);
        let long = Duration::from_secs(600);
        assert_eq!(backoff(long, long), long, "never shorter than the interval");
    }
}
