//! Appending events: one writer task per tenant groups concurrent appends into one
//! transaction (group commit), so a tenant's chain is extended strictly in order without one
//! round trip per event; different tenants have different tasks and append in parallel. Across
//! replicas, the chain head row (`SELECT … FOR UPDATE`) serialises writers of one tenant.
//!
//! An append is acknowledged only after its transaction commits. The same event id with the
//! same content returns the first `{seq, mac}`; with other content it is a conflict.

use chrono::{DateTime, SubsecRound, Utc};
use diesel::prelude::{ExpressionMethods, QueryDsl};
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, RunQueryDsl};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::db::schema::{chain_heads, customer_audit_events as events};
use crate::domain::chain::{self, ChainedFields, hex};
use crate::domain::keyring::KeyRing;
use queue_platform::db::Db;

/// A writer task with nothing to do for this long goes away.
const IDLE: Duration = Duration::from_secs(30);

/// An event as the writer received it, validated.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub tenant_id: String,
    pub actor_type: String,
    pub actor_id: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub occurred_at: DateTime<Utc>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub trace_id: Option<String>,
    pub payload_canonical: String,
}

impl NewEvent {
    fn fields<'a>(&'a self, event_id: &'a str, occurred_at: &'a str) -> ChainedFields<'a> {
        ChainedFields {
            tenant_id: &self.tenant_id,
            seq: 0,
            event_id,
            occurred_at,
            recorded_at: "",
            actor_type: &self.actor_type,
            actor_id: &self.actor_id,
            action: &self.action,
            target_type: &self.target_type,
            target_id: &self.target_id,
            ip: self.ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            trace_id: self.trace_id.as_deref(),
            payload: &self.payload_canonical,
            key_id: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Appended {
    pub id: Uuid,
    pub seq: i64,
    /// Hex.
    pub mac: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("event {0} exists with other content")]
    Conflict(Uuid),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<diesel::result::Error> for AppendError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Internal(e.into())
    }
}

type Reply = oneshot::Sender<Result<Vec<Appended>, AppendError>>;

struct Job {
    events: Vec<NewEvent>,
    reply: Reply,
}

/// Hands out per-tenant writer tasks.
#[derive(Clone)]
pub struct Appender {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    keys: KeyRing,
    max_batch: usize,
    /// Where writer tasks run: the runtime `run` was called on, not the actix worker that
    /// happened to receive a tenant's first event (a worker's single thread is busy with HTTP,
    /// and a writer there would wait behind it at every await).
    runtime: tokio::runtime::Handle,
    writers: Mutex<HashMap<String, mpsc::UnboundedSender<Job>>>,
    /// Told the tenant and new head seq after every commit (checkpointing listens).
    committed: mpsc::UnboundedSender<(String, i64)>,
    metrics: crate::metrics::AuditMetrics,
}

impl Appender {
    pub fn new(
        db: Db,
        keys: KeyRing,
        max_batch: usize,
        committed: mpsc::UnboundedSender<(String, i64)>,
        metrics: crate::metrics::AuditMetrics,
    ) -> Self {
        let runtime = tokio::runtime::Handle::current();
        Self {
            inner: Arc::new(Inner {
                db,
                keys,
                max_batch,
                runtime,
                writers: Mutex::new(HashMap::new()),
                committed,
                metrics,
            }),
        }
    }

    /// Appends `events` (all of one tenant) atomically; returns each event's `{seq, mac}`.
    pub async fn append(&self, tenant: &str, events: Vec<NewEvent>) -> Result<Vec<Appended>, AppendError> {
        let mut job = Job { events, reply: oneshot::channel().0 };
        loop {
            let (tx, rx) = oneshot::channel();
            job.reply = tx;
            let sender = self.writer_for(tenant);
            match sender.send(job) {
                Ok(()) => return rx.await.map_err(|_| AppendError::Internal(anyhow::anyhow!("writer task ended")))?,
                // The task went idle and exited between our lookup and the send: start another.
                Err(mpsc::error::SendError(back)) => {
                    self.forget(tenant, &sender);
                    job = back;
                }
            }
        }
    }

    fn writer_for(&self, tenant: &str) -> mpsc::UnboundedSender<Job> {
        let mut writers = self.inner.writers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = writers.get(tenant).filter(|s| !s.is_closed()) {
            return s.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        writers.insert(tenant.to_string(), tx.clone());
        self.inner.runtime.spawn(writer(self.inner.clone(), tenant.to_string(), rx));
        tx
    }

    fn forget(&self, tenant: &str, sender: &mpsc::UnboundedSender<Job>) {
        let mut writers = self.inner.writers.lock().unwrap_or_else(|e| e.into_inner());
        if writers.get(tenant).is_some_and(|s| s.same_channel(sender)) {
            writers.remove(tenant);
        }
    }
}

async fn writer(inner: Arc<Inner>, tenant: String, mut rx: mpsc::UnboundedReceiver<Job>) {
    loop {
        let first = match tokio::time::timeout(IDLE, rx.recv()).await {
            Ok(Some(job)) => job,
            _ => {
                // Close first so no new job can arrive, then serve what is left.
                rx.close();
                let mut rest = Vec::new();
                while let Ok(j) = rx.try_recv() {
                    rest.push(j);
                }
                if rest.is_empty() {
                    return;
                }
                commit_and_reply(&inner, &tenant, rest).await;
                return;
            }
        };
        let mut jobs = vec![first];
        let mut n = jobs[0].events.len();
        while n < inner.max_batch {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.events.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        commit_and_reply(&inner, &tenant, jobs).await;
    }
}

async fn commit_and_reply(inner: &Inner, tenant: &str, jobs: Vec<Job>) {
    let inputs: Vec<&[NewEvent]> = jobs.iter().map(|j| j.events.as_slice()).collect();
    let started = std::time::Instant::now();
    match commit(inner, tenant, &inputs).await {
        Ok((results, head)) => {
            let events: usize = results.iter().filter_map(|r| r.as_ref().ok()).map(Vec::len).sum();
            inner.metrics.observe_batch(events, started.elapsed().as_secs_f64());
            if let Some(seq) = head {
                let _ = inner.committed.send((tenant.to_string(), seq));
            }
            for (job, result) in jobs.into_iter().zip(results) {
                let _ = job.reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(tenant, error = %e, "append transaction failed");
            let unavailable = matches!(e, AppendError::Unavailable(_));
            for job in jobs {
                let err = if unavailable {
                    AppendError::Unavailable("database unavailable".into())
                } else {
                    AppendError::Internal(anyhow::anyhow!("append failed"))
                };
                let _ = job.reply.send(Err(err));
            }
        }
    }
}

#[derive(diesel::Insertable)]
#[diesel(table_name = events)]
struct EventRow<'a> {
    tenant_id: &'a str,
    seq: i64,
    event_id: Uuid,
    actor_type: &'a str,
    actor_id: &'a str,
    action: &'a str,
    target_type: &'a str,
    target_id: &'a str,
    occurred_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    trace_id: Option<&'a str>,
    payload_canonical: &'a str,
    request_digest: Vec<u8>,
    prev_mac: Vec<u8>,
    mac: Vec<u8>,
    key_id: i32,
}

/// Sets the tenant for row-level security for the rest of the transaction.
pub async fn set_tenant(conn: &mut diesel_async::AsyncPgConnection, tenant: &str) -> Result<(), diesel::result::Error> {
    diesel::sql_query("SELECT set_config('queue.tenant_id', $1, true)").bind::<Text, _>(tenant).execute(conn).await?;
    Ok(())
}

#[derive(diesel::QueryableByName)]
struct HeadRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    seq: i64,
    #[diesel(sql_type = diesel::sql_types::Bytea)]
    mac: Vec<u8>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Integer>)]
    epoch: Option<i32>,
}

type JobResults = Vec<Result<Vec<Appended>, AppendError>>;

/// One transaction for all `jobs`; each job is atomic on its own (a conflicting job adds
/// nothing, the others go ahead). Returns each job's result and the new head seq, if any.
#[tracing::instrument(name = "audit.append_batch", skip_all, fields(tenant, jobs = jobs.len()))]
async fn commit(inner: &Inner, tenant: &str, jobs: &[&[NewEvent]]) -> Result<(JobResults, Option<i64>), AppendError> {
    let mut conn = inner.db.conn().await.map_err(|e| AppendError::Unavailable(e.to_string()))?;
    let tenant = tenant.to_string();
    let ids: Vec<Uuid> = jobs.iter().flat_map(|j| j.iter().map(|e| e.event_id)).collect();
    let genesis = chain::genesis(&tenant).to_vec();
    conn.transaction::<_, AppendError, _>(async |c| {
        // One round trip: set the tenant for RLS, make sure the head exists, lock it (reading
        // the newest key epoch on the way), and find which ids are already stored. PostgreSQL
        // runs pipelined statements in order.
        let shared: &diesel_async::AsyncPgConnection = c;
        let set = diesel::sql_query("SELECT set_config('queue.tenant_id', $1, true)")
            .bind::<Text, _>(&tenant)
            .execute(&mut &*shared);
        let ensure = diesel::insert_into(chain_heads::table)
            .values((chain_heads::tenant_id.eq(&tenant), chain_heads::seq.eq(0i64), chain_heads::mac.eq(&genesis)))
            .on_conflict_do_nothing()
            .execute(&mut &*shared);
        let lock = diesel::sql_query(
            "SELECT h.seq, h.mac, (SELECT max(epoch) FROM audit.keys) AS epoch
             FROM audit.chain_heads h WHERE h.tenant_id = $1 FOR UPDATE OF h",
        )
        .bind::<Text, _>(&tenant)
        .get_result::<HeadRow>(&mut &*shared);
        let known_query = events::table
            .filter(events::tenant_id.eq(&tenant))
            .filter(events::event_id.eq_any(&ids))
            .select((events::event_id, events::seq, events::mac, events::request_digest))
            .load::<(Uuid, i64, Vec<u8>, Vec<u8>)>(&mut &*shared);
        let (_, _, head, existing) = futures_util::try_join!(set, ensure, lock, known_query)?;
        let epoch = head.epoch.ok_or_else(|| AppendError::Internal(anyhow::anyhow!("no audit data key")))?;
        let key = inner.keys.get(c, epoch).await?;
        let (mut seq, mut prev) = (head.seq, head.mac);
        let start_seq = seq;
        // id -> (seq, mac, digest), for events stored before and those added by this batch.
        let mut known: HashMap<Uuid, (i64, Vec<u8>, [u8; 32])> =
            existing.into_iter().map(|(id, s, m, d)| (id, (s, m, d.try_into().unwrap_or([0u8; 32])))).collect();

        let recorded_at = Utc::now().trunc_subsecs(6);
        let recorded = chain::timestamp(&recorded_at);
        let mut rows = Vec::new();
        let mut results = Vec::with_capacity(jobs.len());
        for job in jobs {
            // First pass: does anything in this job conflict?
            let prepared: Vec<(String, String, [u8; 32])> = job
                .iter()
                .map(|e| {
                    let id = e.event_id.to_string();
                    let occurred = chain::timestamp(&e.occurred_at);
                    let digest = chain::request_digest(&e.fields(&id, &occurred));
                    (id, occurred, digest)
                })
                .collect();
            if let Some(e) =
                job.iter().zip(&prepared).find(|(e, (_, _, d))| known.get(&e.event_id).is_some_and(|k| &k.2 != d))
            {
                results.push(Err(AppendError::Conflict(e.0.event_id)));
                continue;
            }
            let mut out = Vec::with_capacity(job.len());
            for (e, (id, occurred, digest)) in job.iter().zip(prepared) {
                if let Some((s, m, _)) = known.get(&e.event_id) {
                    out.push(Appended { id: e.event_id, seq: *s, mac: hex(m) });
                    continue;
                }
                seq += 1;
                let fields = ChainedFields { seq, recorded_at: &recorded, key_id: epoch, ..e.fields(&id, &occurred) };
                let mac = chain::mac(key.bytes(), &prev, &chain::canonical(&fields));
                rows.push(EventRow {
                    tenant_id: &e.tenant_id,
                    seq,
                    event_id: e.event_id,
                    actor_type: &e.actor_type,
                    actor_id: &e.actor_id,
                    action: &e.action,
                    target_type: &e.target_type,
                    target_id: &e.target_id,
                    occurred_at: e.occurred_at,
                    recorded_at,
                    ip: e.ip.as_deref(),
                    user_agent: e.user_agent.as_deref(),
                    trace_id: e.trace_id.as_deref(),
                    payload_canonical: &e.payload_canonical,
                    request_digest: digest.to_vec(),
                    prev_mac: std::mem::replace(&mut prev, mac.to_vec()),
                    mac: mac.to_vec(),
                    key_id: epoch,
                });
                known.insert(e.event_id, (seq, mac.to_vec(), digest));
                out.push(Appended { id: e.event_id, seq, mac: hex(&mac) });
            }
            results.push(Ok(out));
        }
        if seq == start_seq {
            return Ok((results, None));
        }
        // One more round trip: the rows and the new head, pipelined.
        let shared: &diesel_async::AsyncPgConnection = c;
        let inserts = futures_util::future::try_join_all(
            rows.chunks(1000).map(|chunk| diesel::insert_into(events::table).values(chunk).execute(&mut &*shared)),
        );
        let move_head = diesel::update(chain_heads::table.filter(chain_heads::tenant_id.eq(&tenant)))
            .set((chain_heads::seq.eq(seq), chain_heads::mac.eq(&prev), chain_heads::updated_at.eq(recorded_at)))
            .execute(&mut &*shared);
        futures_util::try_join!(inserts, move_head)?;
        Ok((results, Some(seq)))
    })
    .await
}
