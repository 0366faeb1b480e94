//! The import's report: per kind, how many records were created, updated, unchanged, skipped and
//! refused, the reasons grouped and counted (with a few legacy ids each, to find the rows), and
//! the time the kind took; as text for a person or as one JSON document (`--json`).

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use crate::legacy::records::{ImportResult, Kind, Outcome};

/// How many legacy ids a reason shows.
const SAMPLE: usize = 5;
/// How many reasons per kind the text report shows (the JSON has them all).
const TEXT_REASONS: usize = 20;

struct Group {
    count: u64,
    legacy_ids: Vec<String>,
}

/// One kind's results.
pub struct Tally {
    kind: Kind,
    /// Rows at Raptor in the snapshot.
    rows: u64,
    counts: BTreeMap<Outcome, u64>,
    reasons: BTreeMap<(Outcome, String), Group>,
    elapsed: Duration,
    finished: bool,
}

impl Tally {
    pub fn new(kind: Kind, rows: u64) -> Self {
        Self { kind, rows, counts: BTreeMap::new(), reasons: BTreeMap::new(), elapsed: Duration::ZERO, finished: false }
    }

    pub fn add(&mut self, r: &ImportResult) {
        *self.counts.entry(r.outcome).or_default() += 1;
        if let Some(reason) = &r.reason {
            let g = self
                .reasons
                .entry((r.outcome, reason.clone()))
                .or_insert_with(|| Group { count: 0, legacy_ids: Vec::new() });
            g.count += 1;
            if g.legacy_ids.len() < SAMPLE {
                g.legacy_ids.push(r.legacy_id.clone());
            }
        }
    }

    pub fn finish(&mut self, elapsed: Duration, finished: bool) {
        self.elapsed = elapsed;
        self.finished = finished;
    }

    fn count(&self, o: Outcome) -> u64 {
        self.counts.get(&o).copied().unwrap_or(0)
    }

    /// Reasons, most frequent first.
    fn sorted_reasons(&self) -> Vec<(&(Outcome, String), &Group)> {
        let mut v: Vec<_> = self.reasons.iter().collect();
        v.sort_by(|a, b| b.1.count.cmp(&a.1.count).then_with(|| a.0.cmp(b.0)));
        v
    }

    fn to_json(&self) -> Value {
        let mut o = json!({
            "kind": self.kind.name(),
            "service": self.kind.service().name(),
            "rows": self.rows,
            "seconds": (self.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "finished": self.finished,
        });
        for outcome in Outcome::ALL {
            o[outcome.name()] = json!(self.count(outcome));
        }
        o["reasons"] = self
            .sorted_reasons()
            .into_iter()
            .map(|((outcome, reason), g)| {
                json!({"outcome": outcome.name(), "reason": reason, "count": g.count, "legacy_ids": g.legacy_ids})
            })
            .collect();
        o
    }
}

/// The whole run.
pub struct Report {
    pub source: String,
    pub snapshot_at: Option<String>,
    pub dry_run: bool,
    pub kinds: Vec<Tally>,
    /// What stopped the import before it was done.
    pub error: Option<String>,
}

impl Report {
    pub fn refused(&self) -> u64 {
        self.kinds.iter().map(|t| t.count(Outcome::Refused)).sum()
    }

    /// How many records of the whole run had `outcome`.
    pub fn total(&self, outcome: Outcome) -> u64 {
        self.kinds.iter().map(|t| t.count(outcome)).sum()
    }

    /// One line: the run's outcomes summed over the kinds, and its time.
    pub fn summary(&self) -> String {
        let seconds: f64 = self.kinds.iter().map(|t| t.elapsed.as_secs_f64()).sum();
        let counts: Vec<String> = Outcome::ALL.iter().map(|&o| format!("{} {}", self.total(o), o.name())).collect();
        format!("{} in {seconds:.2} s", counts.join(", "))
    }

    pub fn to_json(&self) -> Value {
        json!({
            "source": self.source,
            "snapshot_at": self.snapshot_at,
            "dry_run": self.dry_run,
            "complete": self.error.is_none(),
            "error": self.error,
            "refused": self.refused(),
            "kinds": self.kinds.iter().map(Tally::to_json).collect::<Vec<_>>(),
        })
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let dry = if self.dry_run { " (dry run: nothing written)" } else { "" };
        let _ = writeln!(s, "legacy import from {}{dry}", self.source);
        if let Some(at) = &self.snapshot_at {
            let _ = writeln!(s, "snapshot taken at {at}");
        }
        let _ = writeln!(
            s,
            "{:<14}{:>9}{:>9}{:>9}{:>10}{:>9}{:>9}{:>10}",
            "kind", "rows", "created", "updated", "unchanged", "skipped", "refused", "seconds"
        );
        for t in &self.kinds {
            let _ = writeln!(
                s,
                "{:<14}{:>9}{:>9}{:>9}{:>10}{:>9}{:>9}{:>10.2}{}",
                t.kind.name(),
                t.rows,
                t.count(Outcome::Created),
                t.count(Outcome::Updated),
                t.count(Outcome::Unchanged),
                t.count(Outcome::Skipped),
                t.count(Outcome::Refused),
                t.elapsed.as_secs_f64(),
                if t.finished { "" } else { "  (stopped)" },
            );
        }
        for t in &self.kinds {
            let reasons = t.sorted_reasons();
            for ((outcome, reason), g) in reasons.iter().take(TEXT_REASONS) {
                let more = if g.count as usize > g.legacy_ids.len() { ", …" } else { "" };
                let _ = writeln!(
                    s,
                    "{} {} x{}: {reason} (legacy ids {}{more})",
                    t.kind.name(),
                    outcome.name(),
                    g.count,
                    g.legacy_ids.join(", ")
                );
            }
            if reasons.len() > TEXT_REASONS {
                let _ = writeln!(s, "{}: {} more reason(s) in --json", t.kind.name(), reasons.len() - TEXT_REASONS);
            }
        }
        match (&self.error, self.refused()) {
            (Some(e), _) => {
                let _ = writeln!(s, "stopped: {e}");
            }
            (None, 0) => {
                let _ = writeln!(s, "done: nothing refused");
            }
            (None, n) => {
                let _ = writeln!(s, "done: {n} record(s) refused (see the reasons above)");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: &str, outcome: Outcome, reason: Option<&str>) -> ImportResult {
        ImportResult { legacy_id: id.into(), outcome, id: None, reason: reason.map(String::from) }
    }

    #[test]
    fn reasons_are_grouped_and_counted_with_a_few_ids() {
        let mut t = Tally::new(Kind::Users, 9);
        for i in 0..7 {
            t.add(&r(&i.to_string(), Outcome::Refused, Some("email taken")));
        }
        t.add(&r("7", Outcome::Updated, Some("email_verified_at")));
        t.add(&r("8", Outcome::Created, None));
        t.finish(Duration::from_millis(1500), true);
        let report = Report { source: "src".into(), snapshot_at: None, dry_run: false, kinds: vec![t], error: None };
        assert_eq!(report.refused(), 7);
        let j = report.to_json();
        assert_eq!(j["kinds"][0]["refused"], 7);
        assert_eq!(j["kinds"][0]["created"], 1);
        assert_eq!(j["kinds"][0]["seconds"], 1.5);
        assert_eq!(j["kinds"][0]["reasons"][0]["count"], 7);
        assert_eq!(j["kinds"][0]["reasons"][0]["legacy_ids"], json!(["0", "1", "2", "3", "4"]));
        let text = report.to_text();
        assert!(text.contains("users refused x7: email taken (legacy ids 0, 1, 2, 3, 4, …)"), "{text}");
        assert!(text.contains("done: 7 record(s) refused"), "{text}");
    }
}
