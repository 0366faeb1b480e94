//! The write-back backlog (issue 19, item 3): what auth and rbac still owe Raptor, as their
//! `GET /internal/v1/import/status` reports it (`write_back`, queue-platform's
//! `writeback::Backlog`). `legacy status` prints it; `proxy rollback` (and `proxy phase N` back
//! towards Raptor) waits for it to be empty first ([`Gate`]), so a rollback locks nobody out.

use clap::Args;
use queue_platform::writeback::Backlog;
use std::path::Path;
use std::time::{Duration, Instant};

use super::client::{Client, Endpoint};
use super::records::Service;

/// What one service owes Raptor, or why it could not be read.
pub type Owed = Result<Backlog, String>;

/// The `write_back` field of a status answer; an answer without one is a service that does not
/// write back (older than issue 19, item 3).
pub fn of_answer(service: Service, answer: &serde_json::Value) -> Owed {
    match answer.get("write_back") {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| format!("{}'s write_back is not what queuectl reads: {e}", service.name())),
        None => Err(format!("{} does not report a write-back backlog (too old?)", service.name())),
    }
}

/// Whether nothing is owed.
pub fn is_empty(b: &Backlog) -> bool {
    b.pending == 0 && b.failed == 0
}

/// `rbac: 1 pending (grant.create 1, oldest 12s), 1 failed (grant.revoke: POST … answered 422 …)`,
/// or `rbac: nothing pending`; `; write-back is off ([legacy] writeback_url)` when the rows only wait.
pub fn describe(service: Service, owed: &Owed) -> String {
    let b = match owed {
        Ok(b) => b,
        Err(e) => return format!("{}: unknown ({e})", service.name()),
    };
    if is_empty(b) {
        return format!("{}: nothing pending", service.name());
    }
    let mut parts = Vec::new();
    for k in &b.kinds {
        let mut s = format!("{} {} pending", k.kind, k.pending);
        if let Some(age) = k.oldest_pending_age_secs {
            s.push_str(&format!(" (oldest {age}s)"));
        }
        if k.failed > 0 {
            s.push_str(&format!(", {} failed", k.failed));
        }
        if let Some(e) = &k.last_error {
            s.push_str(&format!(", last error: {e}"));
        }
        parts.push(s);
    }
    let off = if b.enabled { "" } else { "; write-back is off at this service ([legacy] writeback_url is not set)" };
    format!("{}: {} pending, {} failed — {}{off}", service.name(), b.pending, b.failed, parts.join("; "))
}

/// `--wait`, `--force` and where auth and rbac answer, for the commands that move routes back
/// to Raptor.
#[derive(Args, Debug, Clone)]
pub struct GateArgs {
    /// Before moving routes back to Raptor, wait up to this many seconds for auth's and rbac's
    /// write-back to Raptor to be delivered (what users did at Queue: passkeys, sign-outs, used
    /// backup codes, grants); still pending or failed after that: refuse (exit 1).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub wait: u64,
    /// Move the routes back even though the write-back is not empty (or cannot be read); says
    /// what is left behind.
    #[arg(long)]
    pub force: bool,
    /// The auth service, whose write-back backlog is read first.
    #[arg(long, env = "QUEUE_AUTH_URL", value_name = "URL", default_value = "http://127.0.0.1:8081")]
    pub auth_url: String,
    /// The rbac service, whose write-back backlog is read first.
    #[arg(long, env = "QUEUE_RBAC_URL", value_name = "URL", default_value = "http://127.0.0.1:8082")]
    pub rbac_url: String,
    /// auth's identity (its `tokens.issuer`): the audience of the token sent to it.
    #[arg(long, default_value = "auth")]
    pub auth_audience: String,
    /// rbac's identity: the audience of the token sent to it.
    #[arg(long, default_value = "rbac")]
    pub rbac_audience: String,
}

/// Reads both backlogs until they are empty or the wait is over.
pub struct Gate {
    client: Result<Client, String>,
    args: GateArgs,
}

/// How often the wait prints what is left.
const REPORT_EVERY: Duration = Duration::from_secs(5);
/// How often the backlogs are read while waiting.
const POLL: Duration = Duration::from_millis(500);

impl Gate {
    /// Tokens are minted as `iss` with `key` (an importer: `users:import` at auth, `rbac:import`
    /// at rbac, the scopes of the status endpoints).
    pub fn new(args: GateArgs, iss: &str, key: &Path) -> Self {
        let client = crate::minter(iss, key)
            .and_then(|m| {
                Client::new(
                    m,
                    Endpoint { url: args.auth_url.clone(), audience: args.auth_audience.clone() },
                    Endpoint { url: args.rbac_url.clone(), audience: args.rbac_audience.clone() },
                )
            })
            .map_err(|e| format!("{e:#}"));
        Self { client, args }
    }

    async fn read(&self) -> [(Service, Owed); 2] {
        let one = async |service: Service| -> Owed {
            let client = self.client.as_ref().map_err(Clone::clone)?;
            let answer = client.status(service).await.map_err(|e| format!("{e:#}"))?;
            of_answer(service, &answer)
        };
        [(Service::Auth, one(Service::Auth).await), (Service::Rbac, one(Service::Rbac).await)]
    }

    /// Ok when the routes may move back: nothing owed, or `--force` (then it says what is left
    /// behind). Waits while rows are pending; failed rows and unreadable services do not get
    /// better by waiting and refuse at once.
    pub async fn check(&self, what: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        let deadline = Duration::from_secs(self.args.wait);
        let mut reported = None::<Instant>;
        let owed = loop {
            let owed = self.read().await;
            if owed.iter().all(|(_, o)| o.as_ref().is_ok_and(is_empty)) {
                println!("write-back to Raptor: nothing pending at auth or rbac; {what}");
                return Ok(());
            }
            let only_pending = owed.iter().all(|(_, o)| o.as_ref().is_ok_and(|b| b.failed == 0));
            if !only_pending || started.elapsed() >= deadline {
                break owed;
            }
            if reported.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
                let left = deadline.saturating_sub(started.elapsed()).as_secs_f64().ceil();
                println!("waiting for the write-back to Raptor ({left}s left):");
                for (s, o) in &owed {
                    println!("  {}", describe(*s, o));
                }
                reported = Some(Instant::now());
            }
            tokio::time::sleep(POLL).await;
        };
        let lines: Vec<String> = owed.iter().map(|(s, o)| format!("  {}", describe(*s, o))).collect();
        if self.args.force {
            eprintln!(
                "--force: {what} although the write-back to Raptor is not done; left behind:\n{}",
                lines.join("\n")
            );
            return Ok(());
        }
        let why = if owed.iter().any(|(_, o)| o.is_err()) {
            "the write-back backlog cannot be read".to_string()
        } else if owed.iter().any(|(_, o)| o.as_ref().is_ok_and(|b| b.failed > 0)) {
            "Raptor refused some write-back for good (failed rows)".to_string()
        } else {
            format!("the write-back to Raptor is still pending after {}s", self.args.wait)
        };
        anyhow::bail!(
            "refusing to move routes back to Raptor: {why}; users would miss at Raptor what they did at Queue:\n{}\n\
             (wait longer with --wait SECS, fix what failed, or --force to go anyway)",
            lines.join("\n")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use queue_platform::writeback::KindBacklog;

    #[test]
    fn a_backlog_names_each_kind_with_its_error() {
        let b = Backlog {
            enabled: true,
            pending: 1,
            failed: 1,
            oldest_pending_age_secs: Some(12),
            kinds: vec![KindBacklog {
                kind: "grant.create".into(),
                pending: 1,
                failed: 1,
                oldest_pending_age_secs: Some(12),
                last_error: Some("POST /internal/queue/v1/grants answered 422".into()),
            }],
        };
        let text = describe(Service::Rbac, &Ok(b));
        assert!(text.starts_with("rbac: 1 pending, 1 failed"), "{text}");
        assert!(text.contains("grant.create 1 pending (oldest 12s), 1 failed, last error: POST"), "{text}");
        assert_eq!(describe(Service::Auth, &Ok(Backlog::default())), "auth: nothing pending");
        assert!(describe(Service::Auth, &Err("down".into())).contains("unknown (down)"));
    }

    #[test]
    fn an_answer_without_write_back_is_not_read_as_empty() {
        let owed = of_answer(Service::Auth, &serde_json::json!({"kinds": []}));
        assert!(owed.is_err());
    }
}
