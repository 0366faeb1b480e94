//! `queuectl legacy status`: the cutover report (issue 19, item 4; docs/legacy-import.md,
//! "Status"). Per kind, the rows at Raptor (read in one read-only snapshot, as the import reads
//! them) and what auth and rbac hold from Raptor (their `GET /internal/v1/import/status`), the
//! difference, the sessions carried over, and the sync lag: the age of the oldest change at
//! Raptor newer than the newest of Raptor's times the service keeps, when the counts differ.
//! And the write-back backlog of both services (`write_back` of the same endpoints: what Queue
//! still owes Raptor, issue 19 item 3). It reads only; refusals are not known here and it says so.

use chrono::{DateTime, Utc};
use clap::Args;
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Timestamptz};
use serde::Deserialize;
use serde_json::{Value, json};
use std::fmt::Write;
use std::process::ExitCode;

use super::backlog::{self, Owed};
use super::client::Client;
use super::connection::Connection;
use super::records::{Kind, Service};
use super::source::Snapshot;

/// What the status says about refusals: queuectl keeps no report between runs (a file under
/// `var/` would be one operator's, and stale), so the honest answer is how to see them.
pub const REFUSED: &str = "not kept between runs: `queuectl legacy import --dry-run` shows what would be refused";

const EXAMPLE: &str = "\
Example, against `make run`:

  queuectl legacy status --source-url postgresql://queue@127.0.0.1:54329/raptor

For each kind (users, sessions, backup-codes, passkeys, roles, grants): the rows at Raptor and
how many are live there, the rows Queue holds from Raptor (legacy id set) and how many are live,
the difference (Raptor minus Queue), and the sync lag: `none` when the counts agree; else the age
of the oldest change at Raptor (a row created, a session or grant revoked, a code used, a customer
updated) newer than the newest of Raptor's times Queue keeps for the kind; `unknown` when the
counts differ and no such change exists (a refused record, say). Then the sessions carried over
(imported, live at Queue: their raptor_session cookie signs in at Queue), where refusals are
seen, and the write-back backlog of auth and rbac (what users did at Queue that is not at Raptor
yet: pending and failed rows per kind, the oldest's age, the last error). It only reads: Raptor in one read-only
snapshot, each service's GET /internal/v1/import/status with an importer's token.

Exit status: 0 when the report was made, 2 on a usage error or when Raptor's database or a
service cannot be read. See docs/legacy-import.md, \"Status\".";

#[derive(Args)]
#[command(after_long_help = EXAMPLE)]
pub struct StatusArgs {
    #[command(flatten)]
    at: Connection,
    /// Print the report as one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

/// Makes and prints the report; 0, or 2 when it could not be made.
pub fn run(args: StatusArgs) -> ExitCode {
    match report(&args) {
        Ok(r) => {
            if args.json {
                println!("{:#}", r.to_json());
            } else {
                print!("{}", r.to_text());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("queuectl: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// One kind as a service reports it (`GET /internal/v1/import/status`).
#[derive(Deserialize, Debug, Clone)]
struct Held {
    kind: String,
    imported: u64,
    live: u64,
    newest_source_at: Option<DateTime<Utc>>,
    #[serde(default)]
    updated_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct Answer {
    kinds: Vec<Held>,
}

/// One kind at Raptor: rows, live rows, and the oldest change newer than Queue's watermark.
#[derive(QueryableByName, Debug)]
struct AtRaptor {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = BigInt)]
    live: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    unseen: Option<DateTime<Utc>>,
}

/// `$1`: the newest of Raptor's times Queue keeps for the kind (NULL: none). `unseen` is the
/// oldest change at Raptor after it. "Live" is what Queue would hold live.
fn raptor_sql(kind: Kind) -> &'static str {
    match kind {
        Kind::Users => {
            "SELECT count(*) AS n, count(*) FILTER (WHERE is_active) AS live, \
             (SELECT min(t) FROM customers, LATERAL (VALUES (created_at), (updated_at)) v(t) \
               WHERE t > coalesce($1, '-infinity')) AS unseen FROM customers"
        }
        Kind::Sessions => {
            "SELECT count(*) AS n, count(*) FILTER (WHERE revoked_at IS NULL AND expires_at > now()) AS live, \
             (SELECT min(t) FROM customer_sessions, LATERAL (VALUES \
               (CASE WHEN revoked_at IS NULL AND expires_at > now() THEN created_at END), (revoked_at)) v(t) \
               WHERE t > coalesce($1, '-infinity')) AS unseen FROM customer_sessions"
        }
        Kind::BackupCodes => {
            "SELECT count(*) AS n, count(*) FILTER (WHERE used_at IS NULL) AS live, \
             (SELECT min(t) FROM customer_backup_codes, LATERAL (VALUES (created_at), (used_at)) v(t) \
               WHERE t > coalesce($1, '-infinity')) AS unseen FROM customer_backup_codes"
        }
        Kind::Passkeys => {
            "SELECT count(*) AS n, count(*) AS live, \
             (SELECT min(created_at) FROM webauthn_credentials WHERE created_at > coalesce($1, '-infinity')) AS unseen \
             FROM webauthn_credentials"
        }
        // Raptor's built-ins are matched to Queue's own, never copied: only tenants' roles count.
        Kind::Roles => {
            "SELECT count(*) AS n, count(*) AS live, \
             (SELECT min(created_at) FROM rbac_roles WHERE tenant_id IS NOT NULL \
               AND created_at > coalesce($1, '-infinity')) AS unseen FROM rbac_roles WHERE tenant_id IS NOT NULL"
        }
        Kind::Grants => {
            "SELECT count(*) AS n, \
             count(*) FILTER (WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())) AS live, \
             (SELECT min(t) FROM rbac_grants, LATERAL (VALUES (granted_at), (revoked_at)) v(t) \
               WHERE t > coalesce($1, '-infinity')) AS unseen FROM rbac_grants"
        }
    }
}

/// The sync lag of one kind.
#[derive(Debug, PartialEq)]
enum Lag {
    /// The counts agree.
    None,
    /// The oldest change at Raptor Queue does not have, and its age at the snapshot.
    Since(DateTime<Utc>, chrono::Duration),
    /// The counts differ and no change at Raptor is newer than what Queue keeps.
    Unknown,
}

struct Line {
    kind: Kind,
    raptor: AtRaptor,
    queue: Held,
    lag: Lag,
}

impl Line {
    /// Raptor minus Queue, rows and live. Sessions compare live only: Raptor keeps expired and
    /// revoked sessions that are never imported.
    fn difference(&self) -> (Option<i64>, i64) {
        let rows = (self.kind != Kind::Sessions).then(|| self.raptor.n - to_i64(self.queue.imported));
        (rows, self.raptor.live - to_i64(self.queue.live))
    }

    fn lag_json(&self) -> Value {
        match &self.lag {
            Lag::None => json!({"state": "none", "seconds": 0, "oldest_change_at": null}),
            Lag::Since(at, age) => json!({"state": "behind", "seconds": age.num_seconds(), "oldest_change_at": at}),
            Lag::Unknown => json!({"state": "unknown", "seconds": null, "oldest_change_at": null}),
        }
    }

    fn lag_text(&self) -> String {
        match &self.lag {
            Lag::None => "none".into(),
            Lag::Since(_, age) => human(*age),
            Lag::Unknown => "unknown".into(),
        }
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
fn human(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, minutes, seconds) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m {seconds}s"),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

/// The lag from the counts and the oldest unseen change, measured at the snapshot.
fn lag(in_sync: bool, unseen: Option<DateTime<Utc>>, at: DateTime<Utc>) -> Lag {
    match (in_sync, unseen) {
        (true, _) => Lag::None,
        (false, Some(t)) => Lag::Since(t, at - t),
        (false, None) => Lag::Unknown,
    }
}

struct Report {
    source: String,
    snapshot_at: DateTime<Utc>,
    lines: Vec<Line>,
    /// auth's, then rbac's.
    write_back: Vec<(Service, Owed)>,
}

fn report(args: &StatusArgs) -> anyhow::Result<Report> {
    let source_url = args.at.source()?;
    let client = args.at.client()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let (mut at_queue, auth_owes) = held(&client, Service::Auth).await?;
        let (at_rbac, rbac_owes) = held(&client, Service::Rbac).await?;
        at_queue.extend(at_rbac);
        let mut source = Snapshot::open(source_url).await?;
        let lines = lines(&mut source, &at_queue).await;
        let snapshot_at = source.taken_at;
        source.close().await?;
        Ok(Report {
            source: queue_platform::config::redact_url(source_url),
            snapshot_at,
            lines: lines?,
            write_back: vec![(Service::Auth, auth_owes), (Service::Rbac, rbac_owes)],
        })
    })
}

/// What `service` holds, per kind, and what it owes Raptor.
async fn held(client: &Client, service: Service) -> anyhow::Result<(Vec<Held>, Owed)> {
    let value = client.status(service).await?;
    let owed = backlog::of_answer(service, &value);
    let answer: Answer = serde_json::from_value(value)
        .map_err(|e| anyhow::anyhow!("{}'s import status is not what queuectl reads: {e}", service.name()))?;
    Ok((answer.kinds, owed))
}

async fn lines(source: &mut Snapshot, held: &[Held]) -> anyhow::Result<Vec<Line>> {
    let mut lines = Vec::new();
    for kind in [Kind::Users, Kind::Sessions, Kind::BackupCodes, Kind::Passkeys, Kind::Roles, Kind::Grants] {
        let queue = held
            .iter()
            .find(|h| h.kind == kind.name())
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{}'s import status has no {}", kind.service().name(), kind.name()))?;
        let raptor: AtRaptor = source.read(raptor_sql(kind), queue.newest_source_at).await?;
        let mut line = Line { kind, raptor, queue, lag: Lag::None };
        let (rows, live) = line.difference();
        line.lag = lag(rows.unwrap_or(0) == 0 && live == 0, line.raptor.unseen, source.taken_at);
        lines.push(line);
    }
    Ok(lines)
}

impl Report {
    fn carried_over(&self) -> u64 {
        self.lines.iter().find(|l| l.kind == Kind::Sessions).map_or(0, |l| l.queue.live)
    }

    fn to_json(&self) -> Value {
        let kinds: Vec<Value> = self
            .lines
            .iter()
            .map(|l| {
                let (rows, live) = l.difference();
                let mut queue = json!({"rows": l.queue.imported, "live": l.queue.live,
                                        "newest_source_at": l.queue.newest_source_at});
                if let Some(u) = l.queue.updated_at {
                    queue["updated_at"] = json!(u);
                }
                json!({
                    "kind": l.kind.name(),
                    "service": l.kind.service().name(),
                    "raptor": {"rows": l.raptor.n, "live": l.raptor.live},
                    "queue": queue,
                    "difference": {"rows": rows, "live": live},
                    "lag": l.lag_json(),
                })
            })
            .collect();
        json!({
            "source": self.source,
            "snapshot_at": self.snapshot_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "kinds": kinds,
            "sessions_carried_over": self.carried_over(),
            "refused": REFUSED,
            "write_back_backlog": self.write_back_json(),
        })
    }

    /// `{"auth": <write_back as auth answers it> | {"error": "..."}, "rbac": ...}`.
    fn write_back_json(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (service, owed) in &self.write_back {
            let v = match owed {
                Ok(b) => serde_json::to_value(b).unwrap_or(Value::Null),
                Err(e) => json!({ "error": e }),
            };
            out.insert(service.name().to_string(), v);
        }
        Value::Object(out)
    }

    fn to_text(&self) -> String {
        let mut s = String::new();
        let at = self.snapshot_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let _ = writeln!(s, "legacy status of {}\nsnapshot taken at {at}", self.source);
        let _ = writeln!(
            s,
            "{:<14}{:>8}{:>8}{:>8}{:>8}{:>10}{:>10}  lag",
            "kind", "raptor", "live", "queue", "live", "diff", "diff live"
        );
        for l in &self.lines {
            let (rows, live) = l.difference();
            let _ = writeln!(
                s,
                "{:<14}{:>8}{:>8}{:>8}{:>8}{:>10}{:>10}  {}",
                l.kind.name(),
                l.raptor.n,
                l.raptor.live,
                l.queue.imported,
                l.queue.live,
                rows.map_or("-".into(), |r| r.to_string()),
                live,
                l.lag_text()
            );
        }
        let behind: Vec<String> = self
            .lines
            .iter()
            .filter_map(|l| match &l.lag {
                Lag::Since(t, _) => {
                    Some(format!("{} since {}", l.kind.name(), t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
                }
                _ => None,
            })
            .collect();
        if !behind.is_empty() {
            let _ = writeln!(s, "behind Raptor: {} (run `queuectl legacy import`)", behind.join(", "));
        }
        let _ = writeln!(s, "sessions carried over: {} (imported and live at Queue)", self.carried_over());
        let _ = writeln!(s, "refused records: {REFUSED}");
        let _ = writeln!(s, "write-back backlog (Queue's changes not at Raptor yet):");
        for (service, owed) in &self.write_back {
            let _ = writeln!(s, "  {}", backlog::describe(*service, owed));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_none_when_the_counts_agree_and_unknown_without_a_newer_change() {
        let at = Utc::now();
        let t = at - chrono::Duration::seconds(90);
        assert_eq!(lag(true, Some(t), at), Lag::None);
        assert_eq!(lag(false, Some(t), at), Lag::Since(t, chrono::Duration::seconds(90)));
        assert_eq!(lag(false, None, at), Lag::Unknown);
    }

    #[test]
    fn ages_read_as_a_person_would_say_them() {
        assert_eq!(human(chrono::Duration::seconds(12)), "12s");
        assert_eq!(human(chrono::Duration::seconds(250)), "4m 10s");
        assert_eq!(human(chrono::Duration::seconds(7500)), "2h 5m");
        assert_eq!(human(chrono::Duration::seconds(3 * 86_400 + 4 * 3600 + 5)), "3d 4h");
    }
}
