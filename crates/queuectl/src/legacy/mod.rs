//! `queuectl legacy import`: Raptor's identity data into Queue (issue 19, docs/legacy-import.md).
//! Reads Raptor's tables in one read-only snapshot (`source`), converts each row into the record
//! of the owning service's import endpoint (`convert`, `records`), sends them in batches of at
//! most 1000 (`client`) in the order users → sessions, backup codes, passkeys → (rbac pairs the
//! users with their customer ids, for the write-back) → roles → grants,
//! and prints what each kind brought (`report`). The services own their schemas and decide each
//! record's outcome; queuectl never writes into them, and never into Raptor.
//! `queuectl legacy status` (`status`) compares Raptor with what the services hold.

pub mod backlog;
mod client;
mod connection;
mod convert;
mod follow;
mod records;
mod report;
mod source;
mod status;

use clap::Args;
use serde::Serialize;
use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use client::Client;
use connection::Connection;
use convert::{Customers, Prepared, Roles};
use records::{ImportResult, Kind};
use report::{Report, Tally};
use source::{BackupCodeRow, CredentialRow, GrantRow, SessionRow, Snapshot, SourceRow};
pub use status::{StatusArgs, run as status};

/// The most records an import endpoint takes in one request.
pub const MAX_BATCH: u16 = 1000;

const EXAMPLE: &str = "\
Example, against `make run` (Raptor's database on the project's PostgreSQL, auth and rbac on
their default ports, the operator's key in var/keys/operator.pem):

  queuectl legacy import --source-url postgresql://queue@127.0.0.1:54329/raptor --dry-run
  queuectl legacy import --source-url postgresql://queue@127.0.0.1:54329/raptor
  # phases 1-2: keep Queue in step with Raptor, a round every 5 s until Ctrl-C
  queuectl legacy import --source-url postgresql://queue@127.0.0.1:54329/raptor --follow

Exit status: 0 when every record was imported (created, updated, unchanged or skipped), 1 when
some were refused (the report says which and why), 2 on a usage or connection error or when a
service stopped the import (the report then shows what was done before). Running it again with
nothing new at Raptor reports everything unchanged and writes nothing. See docs/legacy-import.md.";

#[derive(Args)]
#[command(after_long_help = EXAMPLE)]
pub struct ImportArgs {
    #[command(flatten)]
    at: Connection,
    /// Compute every outcome and write nothing (each batch carries `dry_run: true`).
    #[arg(long)]
    dry_run: bool,
    /// Print the report as one JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// Records per request.
    #[arg(long, default_value_t = MAX_BATCH, value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_BATCH)))]
    batch_size: u16,
    /// Keep Queue in step with Raptor: import again every `--interval` seconds until stopped
    /// (Ctrl-C or SIGTERM); a round that fails is logged and tried again, never fatal.
    #[arg(long, conflicts_with = "dry_run")]
    follow: bool,
    /// Seconds between the rounds of `--follow`.
    #[arg(long, default_value_t = 5, requires = "follow", value_parser = clap::value_parser!(u64).range(1..=3600))]
    interval: u64,
}

/// Runs the import; the exit status is 0, 1 (something refused) or 2 (it could not run or finish).
pub fn run(args: ImportArgs) -> ExitCode {
    if args.follow {
        // A usage error (no source URL, no key) will not mend itself: said once, exit 2.
        let source_url = match args.at.source().and_then(|u| args.at.client().map(|_| u)) {
            Ok(u) => u.to_string(),
            Err(e) => {
                eprintln!("queuectl: {e:#}");
                return ExitCode::from(2);
            }
        };
        let how = follow::Follow { interval: std::time::Duration::from_secs(args.interval), json: args.json };
        return follow::run(&how, async || once(&args, &source_url, args.at.client()?).await);
    }
    match start(&args) {
        Ok(report) => finish(&report, args.json),
        Err(e) => {
            eprintln!("queuectl: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn start(args: &ImportArgs) -> anyhow::Result<Report> {
    let source_url = args.at.source()?;
    let client = args.at.client()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(once(args, source_url, client))
}

/// One import: Raptor's snapshot opened, every kind sent, the snapshot closed; the report says
/// where it stopped when it did not finish.
async fn once(args: &ImportArgs, source_url: &str, client: Client) -> anyhow::Result<Report> {
    let source = Snapshot::open(source_url).await?;
    let report = Report {
        source: queue_platform::config::redact_url(source_url),
        snapshot_at: Some(source.taken_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        dry_run: args.dry_run,
        kinds: Vec::new(),
        error: None,
    };
    let mut importer = Importer {
        source,
        client: Arc::new(client),
        dry_run: args.dry_run,
        batch: usize::from(args.batch_size),
        report,
    };
    let outcome = importer.all().await;
    importer.report.error = outcome.err().map(|e| format!("{e:#}"));
    let Importer { source, mut report, .. } = importer;
    if let Err(e) = source.close().await
        && report.error.is_none()
    {
        report.error = Some(format!("{e:#}"));
    }
    Ok(report)
}

fn finish(report: &Report, json: bool) -> ExitCode {
    if json {
        println!("{:#}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if let Some(e) = &report.error {
        eprintln!("queuectl: the import stopped: {e}");
        ExitCode::from(2)
    } else if report.refused() > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

struct Importer {
    source: Snapshot,
    client: Arc<Client>,
    dry_run: bool,
    batch: usize,
    report: Report,
}

impl Importer {
    /// Every kind, in order; grants learn their Queue user ids from the users' results.
    async fn all(&mut self) -> anyhow::Result<()> {
        let mut users = Customers::new(self.dry_run);
        self.kind(Kind::Users, convert::user, |row, r| users.learn(row, r)).await?;
        self.kind(Kind::Sessions, |s: &SessionRow| convert::session(s, &users), |_, _| {}).await?;
        self.kind(Kind::BackupCodes, |c: &BackupCodeRow| convert::backup_code(c, &users), |_, _| {}).await?;
        self.kind(Kind::Passkeys, |p: &CredentialRow| convert::passkey(p, &users), |_, _| {}).await?;
        self.principals(&users).await?;
        let mut roles = Roles::new(self.dry_run);
        self.kind(Kind::Roles, convert::role, |row, r| roles.learn(row, r)).await?;
        self.kind(Kind::Grants, |g: &GrantRow| convert::grant(g, &users, &roles), |_, _| {}).await
    }

    /// Tells rbac which Queue users are which Raptor customers (`POST /internal/v1/import/principals`),
    /// so it writes grants made at Queue for them back to Raptor (issue 19, item 3). Not a kind of
    /// the report: nothing of Raptor's is created; a pair rbac refuses (the user or the customer
    /// paired otherwise already) is named on standard error. Skipped in a dry run.
    async fn principals(&mut self, users: &Customers) -> anyhow::Result<()> {
        if self.dry_run {
            return Ok(());
        }
        for chunk in users.imported().chunks(self.batch) {
            let legacy_ids: Vec<String> = chunk.iter().map(|(c, _)| c.to_string()).collect();
            let records: Vec<records::Principal> = chunk
                .iter()
                .map(|(c, id)| records::Principal { legacy_id: c.to_string(), principal_id: id.clone() })
                .collect();
            let results = self
                .client
                .send_to(records::Service::Rbac, records::PRINCIPALS_PATH, &legacy_ids, &records, false)
                .await?;
            for r in results.iter().filter(|r| r.outcome == records::Outcome::Refused) {
                eprintln!(
                    "rbac refused customer {} as a Raptor user (grants made at Queue for them are not written back): {}",
                    r.legacy_id,
                    r.reason.as_deref().unwrap_or("no reason given")
                );
            }
        }
        Ok(())
    }

    /// One kind: counted, read a batch at a time, converted, sent; its tally joins the report
    /// even when the kind stops half-way.
    async fn kind<R: SourceRow, T: Serialize + Send + Sync + 'static>(
        &mut self,
        kind: Kind,
        convert: impl Fn(&R) -> Prepared<T>,
        mut learn: impl FnMut(&R, &ImportResult),
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let rows = self.source.count::<R>().await?;
        let mut tally = Tally::new(kind, rows);
        let outcome = self
            .batches(kind, rows, &convert, &mut |row: &R, r: &ImportResult| {
                learn(row, r);
                tally.add(r);
            })
            .await;
        tally.finish(started.elapsed(), outcome.is_ok());
        self.report.kinds.push(tally);
        outcome
    }

    /// Reads and converts a page at a time and sends it; up to [`in_flight`] batches of the kind
    /// wait for their answers at once, answered back in the pages' order.
    async fn batches<R: SourceRow, T: Serialize + Send + Sync + 'static>(
        &mut self,
        kind: Kind,
        rows: u64,
        convert: &impl Fn(&R) -> Prepared<T>,
        seen: &mut impl FnMut(&R, &ImportResult),
    ) -> anyhow::Result<()> {
        let batches = rows.div_ceil(self.batch as u64);
        let (mut after, mut n, mut read, mut done) = (i64::MIN, 0u64, 0usize, false);
        let mut waiting: VecDeque<Sent<R>> = VecDeque::new();
        loop {
            while !done && waiting.len() < in_flight(kind) {
                let page: Vec<R> = self.source.page(after, self.batch).await?;
                let Some(last) = page.last() else {
                    done = true;
                    break;
                };
                after = last.id();
                n += 1;
                read += page.len();
                if batches > 1 {
                    eprintln!("{}: batch {n} of {batches} ({read} of {rows} rows)", kind.name());
                }
                let mut sent = Vec::with_capacity(page.len());
                let mut records = Vec::with_capacity(page.len());
                for (i, row) in page.iter().enumerate() {
                    match convert(row) {
                        Prepared::Send { record, provisional } => {
                            sent.push((i, provisional));
                            records.push(record);
                        }
                        Prepared::Decided(result) => seen(row, &result),
                    }
                }
                if records.is_empty() {
                    continue;
                }
                let legacy_ids: Vec<String> = sent.iter().map(|(i, _)| page[*i].id().to_string()).collect();
                let (client, dry_run) = (Arc::clone(&self.client), self.dry_run);
                let answer = tokio::spawn(async move { client.send(kind, &legacy_ids, &records, dry_run).await });
                waiting.push_back(Sent { page, sent, answer });
            }
            let Some(batch) = waiting.pop_front() else { return Ok(()) };
            let results =
                batch.answer.await.map_err(|e| anyhow::anyhow!("sending a batch of {}: {e}", kind.name()))??;
            for ((i, provisional), result) in batch.sent.into_iter().zip(results) {
                seen(&batch.page[i], &convert::settle(result, provisional));
            }
        }
    }
}

/// A batch sent and not answered yet: its page, which of its rows went (with their
/// provisional notes), and the answer to come.
struct Sent<R> {
    page: Vec<R>,
    sent: Vec<(usize, Option<&'static str>)>,
    answer: tokio::task::JoinHandle<anyhow::Result<Vec<ImportResult>>>,
}

/// How many batches of `kind` may wait for their answers at once. Users and grants are
/// independent of each other within their kind (a record names only itself), so a few go at
/// once and the services' commits overlap; sessions, backup codes and passkeys lock their user
/// at auth (two batches could take the same users in opposite orders) and the backup codes of
/// one user decide against each other (the newest set wins), so those go one at a time.
fn in_flight(kind: Kind) -> usize {
    match kind {
        Kind::Users | Kind::Grants => 3,
        _ => 1,
    }
}
