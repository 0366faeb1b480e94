//! The table in force and how it changes: reload from the file (SIGHUP, a file change, or
//! `POST /admin/reload`), a phase change, a rollback to the previous table.
//!
//! Every change validates the new table first; a refused one leaves the old table in force.
//! The swap is one atomic pointer store (arc-swap): a request loads the table once when it
//! starts and keeps that `Arc` to its end, so requests in flight finish on the table they
//! started with. Phase changes and rollbacks are written back to the file (atomically, by
//! rename) so that the file stays the truth and a later reload does not undo them; when the
//! file cannot be written the change still applies and the answer says `persisted: false`.

use arc_swap::ArcSwap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::metrics::{ProxyMetrics, TableMetrics};
use crate::table::{Table, TableError};

/// A table and where it came from.
pub(crate) struct Loaded {
    pub(crate) table: Table,
    /// 1 for the first table, +1 for each change.
    pub(crate) generation: u64,
    pub(crate) trigger: &'static str,
    pub(crate) loaded_at: chrono::DateTime<chrono::Utc>,
    /// This table's metric handles, looked up once per route and side.
    pub(crate) metrics: TableMetrics,
}

/// What a change did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"changed": true, "version": "9f2c41d0a7b3", "previous_version": "51be07c3e8d2",
    "phase": 2, "generation": 7, "persisted": true}))]
pub(crate) struct Change {
    pub(crate) changed: bool,
    pub(crate) version: String,
    pub(crate) previous_version: String,
    pub(crate) phase: u8,
    pub(crate) generation: u64,
    /// Whether the table file now holds the table in force.
    pub(crate) persisted: bool,
}

#[derive(Debug)]
pub(crate) enum ChangeError {
    Invalid(TableError),
    /// No file to reload from or write to, or no previous table.
    Conflict(String),
    Io(String),
}

impl std::fmt::Display for ChangeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeError::Invalid(e) => write!(f, "{e}"),
            ChangeError::Conflict(m) | ChangeError::Io(m) => f.write_str(m),
        }
    }
}

/// A change checked but not yet in force: what the admin API audits before it applies it.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    kind: PlanKind,
    text: String,
    pub(crate) from_version: String,
    pub(crate) from_phase: u8,
    pub(crate) from_generation: u64,
    pub(crate) to_version: String,
    pub(crate) to_phase: u8,
}

impl Plan {
    /// Installing it would leave the table in force as it is.
    pub(crate) fn is_noop(&self) -> bool {
        self.from_version == self.to_version
    }

    pub(crate) fn kind(&self) -> PlanKind {
        self.kind
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlanKind {
    Reload,
    Phase,
    Rollback,
}

impl PlanKind {
    /// The metric label (and log trigger) of the change.
    fn trigger(self) -> &'static str {
        match self {
            PlanKind::Reload => "admin",
            PlanKind::Phase => "phase",
            PlanKind::Rollback => "rollback",
        }
    }
}

struct Inner {
    history: Vec<Arc<Loaded>>,
    /// Hash of the file content last read or written, so the watcher reacts to edits only
    /// (and reports a bad file once, not on every poll).
    file_hash: Option<[u8; 32]>,
    generation: u64,
}

pub(crate) struct TableStore {
    current: ArcSwap<Loaded>,
    inner: Mutex<Inner>,
    path: Option<PathBuf>,
    history_len: usize,
    metrics: ProxyMetrics,
}

fn hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl TableStore {
    /// Loads the file (or an empty table when there is none).
    pub(crate) fn open(path: Option<PathBuf>, history_len: usize, metrics: ProxyMetrics) -> Result<Self, ChangeError> {
        let (table, file_hash) = match &path {
            Some(p) => {
                let text = read(p)?;
                (Table::parse(&text).map_err(ChangeError::Invalid)?, Some(hash(text.as_bytes())))
            }
            None => (Table::empty(), None),
        };
        metrics.table_in_force(&table.version, table.phase);
        let loaded = Loaded {
            metrics: TableMetrics::new(&table),
            table,
            generation: 1,
            trigger: "startup",
            loaded_at: chrono::Utc::now(),
        };
        Ok(Self {
            current: ArcSwap::from_pointee(loaded),
            inner: Mutex::new(Inner { history: Vec::new(), file_hash, generation: 1 }),
            path,
            history_len,
            metrics,
        })
    }

    /// The table in force. Hold the `Arc` for the whole request.
    pub(crate) fn current(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Previous tables, newest first.
    pub(crate) fn history(&self) -> Vec<Arc<Loaded>> {
        self.lock().history.iter().rev().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the file; an unchanged file changes nothing.
    #[tracing::instrument(name = "proxy.table.reload", skip(self))]
    pub(crate) fn reload(&self, trigger: &'static str) -> Result<Change, ChangeError> {
        let path =
            self.path.as_ref().ok_or_else(|| ChangeError::Conflict("the proxy runs without a table file".into()))?;
        let mut inner = self.lock();
        let text = read(path)?;
        inner.file_hash = Some(hash(text.as_bytes()));
        let result = self.install(&mut inner, &text, trigger, false);
        self.count(trigger, &result);
        result
    }

    /// Reloads only if the file's content changed since it was last read or written.
    pub(crate) fn reload_if_changed(&self) -> Option<Result<Change, ChangeError>> {
        let path = self.path.as_ref()?;
        let text = std::fs::read_to_string(path).ok()?;
        let h = hash(text.as_bytes());
        let mut inner = self.lock();
        if inner.file_hash == Some(h) {
            return None;
        }
        inner.file_hash = Some(h);
        let result = self.install(&mut inner, &text, "file-change", false);
        self.count("file-change", &result);
        Some(result)
    }

    /// What a phase change would install: the current table with another phase. Nothing
    /// changes until [`TableStore::apply`].
    pub(crate) fn plan_phase(&self, phase: u8) -> Result<Plan, ChangeError> {
        let current = self.current();
        let text = current.table.source_with_phase(phase).map_err(ChangeError::Invalid)?;
        self.plan(PlanKind::Phase, &current, text)
    }

    /// What `POST /admin/reload` would install: the file as it is now.
    pub(crate) fn plan_reload(&self) -> Result<Plan, ChangeError> {
        let path =
            self.path.as_ref().ok_or_else(|| ChangeError::Conflict("the proxy runs without a table file".into()))?;
        let text = read(path)?;
        self.plan(PlanKind::Reload, &self.current(), text)
    }

    /// What a rollback would install: the previous table.
    pub(crate) fn plan_rollback(&self) -> Result<Plan, ChangeError> {
        let current = self.current();
        let previous = self.lock().history.last().map(|p| p.table.source.clone());
        let Some(text) = previous else {
            let e = ChangeError::Conflict("there is no previous table to roll back to".into());
            self.count("rollback", &Err(ChangeError::Conflict(e.to_string())));
            return Err(e);
        };
        self.plan(PlanKind::Rollback, &current, text)
    }

    fn plan(&self, kind: PlanKind, current: &Loaded, text: String) -> Result<Plan, ChangeError> {
        let table = Table::parse(&text).map_err(|e| {
            let err = Err(ChangeError::Invalid(e.clone()));
            self.count(kind.trigger(), &err);
            ChangeError::Invalid(e)
        })?;
        Ok(Plan {
            kind,
            text,
            from_version: current.table.version.clone(),
            from_phase: current.table.phase,
            from_generation: current.generation,
            to_version: table.version,
            to_phase: table.phase,
        })
    }

    /// Installs a plan, if the table in force is still the one it was made from (a file
    /// change or SIGHUP in between: 409, nothing changes).
    #[tracing::instrument(name = "proxy.table.apply", skip_all, fields(kind = ?plan.kind, to = %plan.to_version))]
    pub(crate) fn apply(&self, plan: &Plan) -> Result<Change, ChangeError> {
        let mut inner = self.lock();
        let trigger = plan.kind.trigger();
        if self.current().table.version != plan.from_version {
            let e = Err(ChangeError::Conflict("the table in force changed meanwhile; nothing was changed".into()));
            self.count(trigger, &e);
            return e;
        }
        let result = match plan.kind {
            PlanKind::Reload => {
                inner.file_hash = Some(hash(plan.text.as_bytes()));
                self.install(&mut inner, &plan.text, "admin", false)
            }
            PlanKind::Phase => self.install(&mut inner, &plan.text, "phase", true),
            PlanKind::Rollback => self.roll_back(&mut inner, &plan.to_version),
        };
        self.count(trigger, &result);
        result
    }

    /// Back to the previous table (the one just replaced is discarded); written back to the file.
    fn roll_back(&self, inner: &mut Inner, expected: &str) -> Result<Change, ChangeError> {
        if inner.history.last().is_none_or(|p| p.table.version != expected) {
            return Err(ChangeError::Conflict("the table history changed meanwhile; nothing was changed".into()));
        }
        let Some(previous) = inner.history.pop() else {
            return Err(ChangeError::Conflict("there is no previous table to roll back to".into()));
        };
        let old = self.current();
        let table = Table::parse(&previous.table.source).map_err(ChangeError::Invalid)?;
        inner.generation += 1;
        let persisted = self.persist(inner, &previous.table.source);
        let loaded = Loaded {
            metrics: TableMetrics::new(&table),
            table,
            generation: inner.generation,
            trigger: "rollback",
            loaded_at: chrono::Utc::now(),
        };
        Ok(self.swap(loaded, &old, persisted))
    }

    fn install(
        &self,
        inner: &mut Inner,
        text: &str,
        trigger: &'static str,
        write: bool,
    ) -> Result<Change, ChangeError> {
        let table = Table::parse(text).map_err(ChangeError::Invalid)?;
        let old = self.current();
        if table.version == old.table.version {
            return Ok(Change {
                changed: false,
                version: table.version.clone(),
                previous_version: table.version,
                phase: old.table.phase,
                generation: old.generation,
                persisted: !write || self.path.is_some(),
            });
        }
        let persisted = if write { self.persist(inner, text) } else { true };
        inner.generation += 1;
        inner.history.push(old.clone());
        if inner.history.len() > self.history_len {
            inner.history.remove(0);
        }
        let loaded = Loaded {
            metrics: TableMetrics::new(&table),
            table,
            generation: inner.generation,
            trigger,
            loaded_at: chrono::Utc::now(),
        };
        Ok(self.swap(loaded, &old, persisted))
    }

    fn swap(&self, loaded: Loaded, old: &Loaded, persisted: bool) -> Change {
        let change = Change {
            changed: true,
            version: loaded.table.version.clone(),
            previous_version: old.table.version.clone(),
            phase: loaded.table.phase,
            generation: loaded.generation,
            persisted,
        };
        self.metrics.table_in_force(&loaded.table.version, loaded.table.phase);
        tracing::info!(
            trigger = loaded.trigger,
            table_version = %change.version,
            previous_version = %change.previous_version,
            phase = change.phase,
            generation = change.generation,
            persisted,
            "route table in force"
        );
        self.current.store(Arc::new(loaded));
        change
    }

    /// Writes `text` to the table file (temp file + rename). False when there is no file or it
    /// cannot be written (a read-only ConfigMap, say): the change applies in memory only.
    fn persist(&self, inner: &mut Inner, text: &str) -> bool {
        let Some(path) = &self.path else { return false };
        let tmp = path.with_extension("toml.tmp");
        let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
        match result {
            Ok(()) => {
                inner.file_hash = Some(hash(text.as_bytes()));
                true
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                tracing::warn!(path = %path.display(), error = %e, "route table: change applied but not written to the file");
                false
            }
        }
    }

    fn count(&self, trigger: &str, result: &Result<Change, ChangeError>) {
        let outcome = match result {
            Ok(c) if c.changed => "changed",
            Ok(_) => "unchanged",
            Err(ChangeError::Invalid(e)) => {
                tracing::warn!(trigger, error = %e, "route table refused; the table in force stays");
                "refused"
            }
            Err(e) => {
                tracing::warn!(trigger, error = %e, "route table change failed; the table in force stays");
                "failed"
            }
        };
        self.metrics.reloads.with_label_values(&[trigger, outcome]).inc();
    }
}

fn read(path: &Path) -> Result<String, ChangeError> {
    std::fs::read_to_string(path).map_err(|e| ChangeError::Io(format!("cannot read {}: {e}", path.display())))
}
