//! The check engine: each principal's active grants kept in memory, invalidated through
//! PostgreSQL LISTEN/NOTIFY and made consistent by a revision check before every answer.
//!
//! Every change to grants or role permissions takes the next revision from one counter row
//! (whose lock is held to commit, so revisions commit in order) and logs `(revision, principal)`
//! in `rbac_changes`; a trigger also NOTIFYs `rbac_changes`. A check first makes sure this
//! replica knows every change committed before the check arrived — a *revision fence*: one read
//! of the counter, started after the check arrived, shared by all checks that arrived while the
//! previous read was running — and then answers from the principal's cache entry if no change
//! to that principal is newer than the entry. Notifications usually deliver the changes before
//! the fence needs them, so the fence is one single-row read; if they lag, the fence reads the
//! missing changes itself. So after a revoke returns, the very next check on any replica denies.
//!
//! With leases on (`cache.lease_ms`, the default) the fence is skipped while this replica's
//! lease is live. Each replica renews a lease in `rbac_replicas` (every quarter of its length,
//! catching up on the change log right after each renewal commits) and records there the
//! highest revision it has applied. A change made through the service returns only once every
//! replica holding a live lease has recorded its revision ([`Checker::await_replicas`]), or that
//! lease has ended. A replica trusts its lease only until 80 % of its length, counted on its own
//! monotonic clock from before the renewal was sent, so it stops trusting before the database
//! (whose clock ends the lease) considers it ended: only equal clock *rates* are assumed. When
//! a lease cannot be renewed the replica falls back to the fence for every check. A change
//! made by hand in SQL is not waited for: replicas apply it from the notification (usually
//! within milliseconds), at the latest at their next renewal.

use chrono::Utc;
use queue_platform::db::Db;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

use super::Error;
use super::model::{ActiveGrant, Resource, Scope, allowing};
use crate::db::{grants, replicas, revisions, roles};
use crate::metrics::RbacMetrics;

/// The answer to one check.
#[derive(Debug, Clone)]
pub struct Decision {
    pub allowed: bool,
    /// The grants that allow it (empty when denied).
    pub grant_ids: Vec<uuid::Uuid>,
}

/// Why a revision read failed, kept for every check that waited for it.
#[derive(Debug, Clone)]
enum ReadFailure {
    Unavailable(String),
    Query(String),
}

impl From<Error> for ReadFailure {
    fn from(e: Error) -> Self {
        match e {
            Error::Unavailable(m) => Self::Unavailable(m),
            other => Self::Query(other.to_string()),
        }
    }
}

impl From<ReadFailure> for Error {
    fn from(f: ReadFailure) -> Self {
        match f {
            ReadFailure::Unavailable(m) => Error::Unavailable(m),
            ReadFailure::Query(m) => Error::Internal(anyhow::anyhow!("cannot read the revision: {m}")),
        }
    }
}

struct Entry {
    /// The revision this replica knew when the entry was read (the read saw at least that).
    loaded_at: i64,
    grants: Arc<[ActiveGrant]>,
}

#[derive(Default)]
struct State {
    /// Every role's permissions, read at revision `roles_at` (valid while no global change is
    /// newer).
    roles: HashMap<uuid::Uuid, Arc<[String]>>,
    roles_at: Option<i64>,
    /// Every change up to this revision has been applied to `last_change` / `global_change`.
    known: i64,
    /// The newest change that may concern anyone (a role's permissions, or an unknown one).
    global_change: i64,
    /// The newest change of each principal's grants.
    last_change: HashMap<String, i64>,
    entries: HashMap<String, Entry>,
}

impl State {
    fn apply(&mut self, revision: i64, principal: Option<&str>) {
        match principal {
            Some(p) => {
                let e = self.last_change.entry(p.to_string()).or_insert(0);
                *e = (*e).max(revision);
            }
            None => self.global_change = self.global_change.max(revision),
        }
    }

    fn changed_at(&self, principal: &str) -> i64 {
        self.global_change.max(self.last_change.get(principal).copied().unwrap_or(0))
    }
}

#[derive(Default)]
struct FenceState {
    /// Reads of the revision started so far (the one running, if any, is number `started`).
    started: u64,
    /// The highest read number a waiting check needs.
    wanted: u64,
    running: bool,
}

/// This replica's lease (see the module documentation).
struct Lease {
    replica: uuid::Uuid,
    length: Duration,
    /// The checker's start; `valid_until_ns` counts from it.
    epoch: Instant,
    /// Nanoseconds after `epoch` until which checks may skip the fence (0: no live lease).
    valid_until_ns: AtomicU64,
}

pub struct Checker {
    db: Db,
    max_entries: usize,
    state: Mutex<State>,
    fence: Mutex<FenceState>,
    /// (number of the last finished read, the revision it read or why it failed)
    done: watch::Sender<(u64, Result<i64, ReadFailure>)>,
    /// `State::known`, published for the task that records it in `rbac_replicas`.
    applied: watch::Sender<i64>,
    lease: Option<Lease>,
    metrics: RbacMetrics,
}

impl Checker {
    /// `lease_ms` = 0: no lease, every check passes the fence.
    pub fn new(db: Db, max_entries: usize, lease_ms: u64, metrics: RbacMetrics) -> Arc<Self> {
        let lease = (lease_ms > 0).then(|| Lease {
            replica: uuid::Uuid::new_v4(),
            length: Duration::from_millis(lease_ms),
            epoch: Instant::now(),
            valid_until_ns: AtomicU64::new(0),
        });
        Arc::new(Self {
            db,
            max_entries,
            state: Mutex::new(State::default()),
            fence: Mutex::new(FenceState::default()),
            done: watch::channel((0, Ok(0))).0,
            applied: watch::channel(0).0,
            lease,
            metrics,
        })
    }

    fn lease_live(&self) -> bool {
        self.lease.as_ref().is_some_and(|l| {
            let now = u64::try_from(l.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            now < l.valid_until_ns.load(Ordering::Acquire)
        })
    }

    fn publish_known(&self, known: i64) {
        self.applied.send_if_modified(|v| {
            let newer = known > *v;
            if newer {
                *v = known;
            }
            newer
        });
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A revision covering every change committed through the service before this call: this
    /// replica's own while its lease is live, else the fence's.
    pub async fn sync(self: &Arc<Self>) -> Result<i64, Error> {
        if self.lease_live() {
            self.metrics.fresh("lease");
            return Ok(self.state().known);
        }
        self.metrics.fresh("fence");
        self.fence().await
    }

    /// The current revision, once every change committed before this call is applied.
    async fn fence(self: &Arc<Self>) -> Result<i64, Error> {
        let target = {
            let mut f = self.fence.lock().unwrap_or_else(|e| e.into_inner());
            let target = f.started + 1;
            f.wanted = f.wanted.max(target);
            if !f.running {
                f.running = true;
                f.started += 1;
                let me = self.clone();
                tokio::spawn(async move { me.read_loop().await });
            }
            target
        };
        let mut rx = self.done.subscribe();
        let done = rx
            .wait_for(|(n, _)| *n >= target)
            .await
            .map_err(|_| Error::Internal(anyhow::anyhow!("the revision reader stopped")))?;
        done.1.clone().map_err(Error::from)
    }

    async fn read_loop(self: Arc<Self>) {
        loop {
            let number = self.fence.lock().unwrap_or_else(|e| e.into_inner()).started;
            let result = self.read_revision().await;
            if let Err(e) = &result {
                tracing::warn!(error = %e, "revision read failed");
            }
            let _previous = self.done.send_replace((number, result.map_err(ReadFailure::from)));
            let mut f = self.fence.lock().unwrap_or_else(|e| e.into_inner());
            if f.wanted > number {
                f.started += 1;
            } else {
                f.running = false;
                return;
            }
        }
    }

    async fn read_revision(&self) -> Result<i64, Error> {
        let mut conn = self.db.conn().await?;
        let current = revisions::current(&mut conn).await?;
        let known = self.state().known;
        if current > known {
            self.metrics.fence_catch_up();
            let changes = revisions::changes(&mut conn, known, current).await?;
            let mut s = self.state();
            let complete = changes.len() as i64 == current - known;
            for (rev, principal) in &changes {
                s.apply(*rev, principal.as_deref());
            }
            if !complete {
                // A gap (log rows removed by hand?): trust no entry older than now.
                s.apply(current, None);
            }
            s.known = s.known.max(current);
            let known = s.known;
            drop(s);
            self.publish_known(known);
        }
        Ok(current)
    }

    /// Renews the lease, then catches up on every change committed before the renewal; only
    /// then is the new lease trusted (until 80 % of its length from before the renewal).
    async fn renew(&self) -> Result<(), Error> {
        let Some(lease) = &self.lease else { return Ok(()) };
        let sent = lease.epoch.elapsed();
        let known = self.state().known;
        {
            let mut conn = self.db.conn().await?;
            let ms = u64::try_from(lease.length.as_millis()).unwrap_or(u64::MAX);
            replicas::renew_lease(&mut conn, lease.replica, known, ms).await?;
        }
        self.read_revision().await?;
        let until = sent + lease.length.mul_f64(0.8);
        lease.valid_until_ns.fetch_max(u64::try_from(until.as_nanos()).unwrap_or(u64::MAX), Ordering::AcqRel);
        Ok(())
    }

    /// The lease's two tasks: renewing it every quarter of its length, and recording each
    /// newly applied revision in `rbac_replicas` (coalesced: the latest value is written).
    pub fn spawn_lease(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(lease) = &self.lease else { return Vec::new() };
        let every = lease.length / 4;
        let me = self.clone();
        let renewing = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = me.renew().await {
                    tracing::warn!(error = %e, "rbac lease not renewed: checks read the revision until it is");
                }
            }
        });
        let me = self.clone();
        let replica = lease.replica;
        let mut applied = self.applied.subscribe();
        let recording = tokio::spawn(async move {
            while applied.changed().await.is_ok() {
                let revision = *applied.borrow_and_update();
                let written = async {
                    let mut conn = me.db.conn().await.map_err(|e| e.to_string())?;
                    replicas::record_applied(&mut conn, replica, revision).await.map_err(|e| e.to_string())
                }
                .await;
                if let Err(e) = written {
                    tracing::warn!(error = %e, revision, "cannot record the applied revision");
                    tokio::time::sleep(every).await;
                    applied.mark_changed();
                }
            }
        });
        vec![renewing, recording]
    }

    /// Waits until every replica holding a live lease has applied `revision` (a change this
    /// replica just committed), or its lease has ended. Gives up after twice the lease length
    /// and a second (counted and logged: the change itself is committed either way).
    pub async fn await_replicas(&self, revision: i64) {
        let length = self.lease.as_ref().map_or(Duration::from_secs(2), |l| l.length);
        let deadline = Instant::now() + length * 2 + Duration::from_secs(1);
        let mut pause = Duration::from_millis(1);
        loop {
            let behind = async {
                let mut conn = self.db.conn().await.map_err(|e| e.to_string())?;
                replicas::behind(&mut conn, revision).await.map_err(|e| e.to_string())
            }
            .await;
            match behind {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, revision, "cannot read the replicas' applied revisions"),
            }
            if Instant::now() >= deadline {
                self.metrics.propagation_timeout();
                tracing::warn!(revision, "a replica with a live lease did not apply the change in time");
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Applies one notification (`revision:principal` or `revision:*`). Only the next revision
    /// is applied; anything else is left to the fence, which reads the log.
    fn notified(&self, payload: &str) {
        let Some((rev, who)) = payload.split_once(':') else { return };
        let Ok(rev) = rev.parse::<i64>() else { return };
        let mut s = self.state();
        if rev == s.known + 1 {
            s.apply(rev, (who != "*").then_some(who));
            s.known = rev;
            drop(s);
            self.publish_known(rev);
        }
    }

    /// Forgets everything (after the notification connection was lost, say).
    fn flush(&self) {
        let mut s = self.state();
        let known = s.known;
        s.apply(known, None);
        s.entries.clear();
        s.roles_at = None;
    }

    /// The active grants of `principal`, as of at least `revision` (from [`Checker::sync`]).
    pub async fn grants_of(&self, principal: &str, revision: i64) -> Result<Arc<[ActiveGrant]>, Error> {
        let mut all = self.grants_of_many(&[principal], revision).await?;
        Ok(all.remove(principal).unwrap_or_else(|| Arc::from(Vec::new())))
    }

    /// The active grants of each of `principals` (cached ones from memory, the others in one
    /// query), as of at least `revision`.
    async fn grants_of_many(
        &self,
        principals: &[&str],
        revision: i64,
    ) -> Result<HashMap<String, Arc<[ActiveGrant]>>, Error> {
        let mut out = HashMap::with_capacity(principals.len());
        let mut missing: Vec<&str> = Vec::new();
        let roles_fresh = {
            let s = self.state();
            for p in principals {
                match s.entries.get(*p) {
                    Some(e) if e.loaded_at >= s.changed_at(p) => {
                        out.insert(p.to_string(), e.grants.clone());
                    }
                    _ if !missing.contains(p) => missing.push(p),
                    _ => {}
                }
            }
            s.roles_at.is_some_and(|at| at >= s.global_change)
        };
        for _ in 0..out.len() {
            self.metrics.cache(true);
        }
        if missing.is_empty() {
            return Ok(out);
        }
        for _ in 0..missing.len() {
            self.metrics.cache(false);
        }
        let mut conn = self.db.conn().await?;
        if !roles_fresh {
            let roles = roles::all_permissions(&mut conn).await?;
            let mut s = self.state();
            s.roles = roles.into_iter().map(|(id, p)| (id, Arc::from(p))).collect();
            s.roles_at = Some(revision);
        }
        let rows = grants::active_of(&mut conn, &missing).await?;
        let mut s = self.state();
        let mut loaded: HashMap<&str, Vec<ActiveGrant>> = missing.iter().map(|p| (*p, Vec::new())).collect();
        for row in rows {
            // A row whose columns describe no scope is skipped (the table's CHECK forbids it).
            let Some(scope) = Scope::from_columns(&row.scope_type, row.tenant_id, row.ticket_id) else { continue };
            let permissions = s.roles.get(&row.role_id).cloned().unwrap_or_else(|| Arc::from(Vec::new()));
            if let Some(list) = loaded.get_mut(row.principal_id.as_str()) {
                list.push(ActiveGrant { id: row.id, scope, expires_at: row.expires_at, permissions });
            }
        }
        for (principal, grants) in loaded {
            let grants: Arc<[ActiveGrant]> = grants.into();
            // A change of this principal applied while we read may or may not be in what we
            // read: then do not keep it.
            if self.max_entries > 0 && s.changed_at(principal) <= revision {
                if s.entries.len() >= self.max_entries {
                    let evict: Vec<String> = s.entries.keys().take(self.max_entries / 8 + 1).cloned().collect();
                    for k in evict {
                        s.entries.remove(&k);
                    }
                }
                if s.last_change.len() > self.max_entries.saturating_mul(4) {
                    // Bound the bookkeeping: forget per-principal history, distrust older entries.
                    let known = s.known;
                    s.last_change.clear();
                    s.apply(known, None);
                }
                s.entries.insert(principal.to_string(), Entry { loaded_at: revision, grants: grants.clone() });
            }
            out.insert(principal.to_string(), grants);
        }
        Ok(out)
    }

    /// One check.
    #[tracing::instrument(skip_all)]
    pub async fn check(
        self: &Arc<Self>,
        principal: &str,
        permission: &str,
        resource: &Resource,
    ) -> Result<(Decision, i64), Error> {
        let revision = self.sync().await?;
        let grants = self.grants_of(principal, revision).await?;
        let decision = decide(&grants, permission, resource);
        self.metrics.checked(decision.allowed);
        Ok((decision, revision))
    }

    /// Many checks (principal, permission, resource), all answered at one revision, in order.
    #[tracing::instrument(skip_all)]
    pub async fn check_many(
        self: &Arc<Self>,
        checks: &[(&str, &str, &Resource)],
    ) -> Result<(Vec<Decision>, i64), Error> {
        let revision = self.sync().await?;
        let principals: Vec<&str> = checks.iter().map(|c| c.0).collect();
        let grants = self.grants_of_many(&principals, revision).await?;
        let none: Arc<[ActiveGrant]> = Arc::from(Vec::new());
        let decisions = checks
            .iter()
            .map(|(principal, permission, resource)| {
                let d = decide(grants.get(*principal).unwrap_or(&none), permission, resource);
                self.metrics.checked(d.allowed);
                d
            })
            .collect();
        Ok((decisions, revision))
    }
}

fn decide(grants: &[ActiveGrant], permission: &str, resource: &Resource) -> Decision {
    let grant_ids: Vec<uuid::Uuid> = allowing(grants, permission, resource, Utc::now()).map(|g| g.id).collect();
    Decision { allowed: !grant_ids.is_empty(), grant_ids }
}

/// Listens on `rbac_changes` and feeds the checker until the process ends; reconnects with a
/// backoff, flushing the cache after a reconnect (notifications may have been missed — the
/// fence would catch them anyway, this only keeps the fence cheap).
pub fn spawn_listener(database_url: String, checker: Arc<Checker>) -> tokio::task::JoinHandle<()> {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
    use futures_util::StreamExt;
    tokio::spawn(async move {
        let mut backoff = std::time::Duration::from_millis(200);
        loop {
            match AsyncPgConnection::establish(&database_url).await {
                Ok(mut conn) => {
                    // Hand-written: LISTEN has no DSL.
                    if diesel::sql_query("LISTEN rbac_changes").execute(&mut conn).await.is_ok() {
                        checker.flush();
                        backoff = std::time::Duration::from_millis(200);
                        let mut stream = std::pin::pin!(conn.notifications_stream());
                        while let Some(n) = stream.next().await {
                            match n {
                                Ok(n) => checker.notified(&n.payload),
                                Err(e) => {
                                    tracing::warn!(error = %e, "notification connection lost");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot open the notification connection"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
        }
    })
}
