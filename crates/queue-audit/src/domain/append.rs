//! Appending events with group commit. A fixed set of writer tasks (shards) owns the tenants:
//! a tenant always goes to the same shard, so its chain is extended strictly in order, and each
//! writer gathers whatever has queued up (events of several tenants) into one transaction. A
//! batch of several tenants goes to its first tenant's shard and is one job there (atomic); the
//! heads of its other tenants are locked or checked as against another replica (below).
//! Across replicas, the chain head rows (`SELECT … ORDER BY tenant_id FOR UPDATE`, always in
//! tenant order, so two replicas cannot deadlock) serialise writers of one tenant.
//!
//! An append is acknowledged only after its transaction commits. The same event id with the
//! same content returns the first `{seq, mac}`; with other content it is a conflict.

use chrono::{DateTime, SubsecRound, Utc};
use diesel::sql_types::{Array, BigInt, Bytea, Integer, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::domain::chain::{self, ChainedFields, hex};
use crate::domain::error::AppendError;
use crate::domain::keyring::KeyRing;
use queue_audit_client::Appended;
use queue_platform::db::{Db, Prepared, prepared};

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

type Reply = oneshot::Sender<Result<Vec<Appended>, AppendError>>;

struct Job {
    /// Of one tenant or several (a batch is atomic whatever its tenants).
    events: Vec<NewEvent>,
    reply: Reply,
}

/// Hands appends to the writer task that owns their tenant.
#[derive(Clone)]
pub struct Appender {
    shards: Arc<[mpsc::UnboundedSender<Job>]>,
}

struct Inner {
    db: Db,
    keys: KeyRing,
    max_batch: usize,
    /// Told the tenant and new head seq after every commit (checkpointing listens).
    committed: mpsc::UnboundedSender<(String, i64)>,
    metrics: crate::metrics::AuditMetrics,
}

impl Appender {
    /// Starts `writers` writer tasks on the current runtime (the one `run` was called on, not
    /// an actix worker: a worker's single thread is busy with HTTP, and a writer there would
    /// wait behind it at every await). They end when the last `Appender` clone is dropped,
    /// after serving what was queued.
    pub fn new(
        db: Db,
        keys: KeyRing,
        max_batch: usize,
        writers: usize,
        committed: mpsc::UnboundedSender<(String, i64)>,
        metrics: crate::metrics::AuditMetrics,
    ) -> Self {
        let inner = Arc::new(Inner { db, keys, max_batch, committed, metrics });
        let shards: Vec<_> = (0..writers.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(writer(inner.clone(), rx));
                tx
            })
            .collect();
        Self { shards: shards.into() }
    }

    /// Appends `events` atomically, all or none; returns each event's `{seq, mac}`. Events of
    /// several tenants go to the writer of the first one's: its transaction locks (or checks)
    /// every head it extends, as it does against other replicas.
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>, AppendError> {
        let Some(first) = <[NewEvent]>::first(&events) else { return Ok(Vec::new()) };
        let owner = shard(&first.tenant_id, self.shards.len());
        let (reply, rx) = oneshot::channel();
        self.shards[owner]
            .send(Job { events, reply })
            .map_err(|_| AppendError::Unavailable("the service is shutting down".into()))?;
        rx.await.map_err(|_| AppendError::Internal(anyhow::anyhow!("writer task ended")))?
    }
}

/// The shard that owns `tenant`: stable for the life of the process (SipHash with fixed keys).
fn shard(tenant: &str, shards: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    tenant.hash(&mut h);
    (h.finish() % shards as u64) as usize
}

/// What a writer remembers of the chains it extends: each tenant's head as its own last commit
/// left it, and the newest data key epoch it saw. A transaction whose tenants are all
/// remembered chains from here without reading the heads first (one round trip instead of
/// two). If a head has moved since (another replica appended: the new rows' seqs are taken) or
/// the epoch is no longer the newest (a rotation), nothing is written ([`APPEND`]); then
/// everything is forgotten and the batch goes again the long way.
#[derive(Default)]
struct Remembered {
    epoch: Option<i32>,
    heads: HashMap<String, (i64, Vec<u8>)>,
}

/// Past this many tenants a writer forgets them all and starts over (about 100 bytes each).
const REMEMBERED_TENANTS: usize = 100_000;

impl Remembered {
    fn forget(&mut self) {
        self.epoch = None;
        self.heads.clear();
    }

    /// The heads and epoch of a batch, if every one of its tenants is remembered.
    fn chains<'a>(&self, tenants: &[&'a str]) -> Option<(i32, Chains<'a>)> {
        let epoch = self.epoch?;
        let chains = tenants.iter().map(|t| self.heads.get(*t).map(|h| (*t, h.clone()))).collect::<Option<_>>()?;
        Some((epoch, chains))
    }

    fn learn(&mut self, epoch: i32, heads: Vec<Head>) {
        if self.epoch != Some(epoch) || self.heads.len() + heads.len() > REMEMBERED_TENANTS {
            self.forget();
        }
        self.epoch = Some(epoch);
        for h in heads {
            self.heads.insert(h.tenant, (h.seq, h.mac));
        }
    }
}

async fn writer(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut remembered = Remembered::default();
    while let Some(first) = rx.recv().await {
        let mut n = first.events.len();
        let mut jobs = vec![first];
        while n < inner.max_batch {
            match rx.try_recv() {
                Ok(j) => {
                    n += j.events.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        commit_and_reply(&inner, &mut remembered, jobs).await;
    }
}

async fn commit_and_reply(inner: &Inner, remembered: &mut Remembered, jobs: Vec<Job>) {
    let started = std::time::Instant::now();
    // First without looking for stored ids (retries are rare); if one turns out stored, the
    // transaction rolled back whole and the batch goes again, this time looking. A stale
    // remembered head also rolls back whole, and the batch goes again reading the heads.
    let mut probe = Probe::Optimistic;
    let mut attempt = commit(inner, remembered, &jobs, probe).await;
    for _ in 0..4 {
        match attempt {
            Ok(Attempt::SeenBefore) => {
                inner.metrics.observe_retry_probe();
                probe = Probe::Look;
            }
            Ok(Attempt::Stale) => {
                inner.metrics.observe_stale_heads();
                remembered.forget();
            }
            _ => break,
        }
        attempt = commit(inner, remembered, &jobs, probe).await;
    }
    let attempt = attempt.and_then(|a| match a {
        Attempt::Done(done) => Ok(done),
        Attempt::SeenBefore | Attempt::Stale => {
            Err(AppendError::Internal(anyhow::anyhow!("the heads kept moving or an id was seen twice while looking")))
        }
    });
    match attempt {
        Ok(Done { results, epoch, heads }) => {
            let events: usize = results.iter().filter_map(|r| r.as_ref().ok()).map(Vec::len).sum();
            inner.metrics.observe_batch(events, started.elapsed().as_secs_f64());
            for h in heads.iter().filter(|h| h.moved) {
                let _ = inner.committed.send((h.tenant.clone(), h.seq));
            }
            remembered.learn(epoch, heads);
            for (job, result) in jobs.into_iter().zip(results) {
                let _ = job.reply.send(result);
            }
        }
        Err(e) => {
            remembered.forget();
            tracing::error!(jobs = jobs.len(), error = %e, "append transaction failed");
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

/// Sets the tenant for row-level security for the rest of the transaction.
pub async fn set_tenant(conn: &mut diesel_async::AsyncPgConnection, tenant: &str) -> Result<(), diesel::result::Error> {
    prepared(diesel::sql_query("SELECT set_config('queue.tenant_id', $1, true)").bind::<Text, _>(tenant))
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(diesel::QueryableByName)]
struct HeadRow {
    #[diesel(sql_type = Text)]
    tenant_id: String,
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Bytea)]
    mac: Vec<u8>,
    #[diesel(sql_type = Nullable<Integer>)]
    epoch: Option<i32>,
}

#[derive(diesel::QueryableByName)]
struct KnownRow {
    #[diesel(sql_type = Text)]
    tenant_id: String,
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    event_id: Uuid,
    #[diesel(sql_type = BigInt)]
    seq: i64,
    #[diesel(sql_type = Bytea)]
    mac: Vec<u8>,
    #[diesel(sql_type = Bytea)]
    request_digest: Vec<u8>,
}

/// The new rows of one transaction, column by column: inserted with one `unnest` statement
/// whose text never changes, prepared once per connection ([`prepared`]).
#[derive(Default)]
struct Columns<'a> {
    tenant_id: Vec<&'a str>,
    seq: Vec<i64>,
    event_id: Vec<Uuid>,
    actor_type: Vec<&'a str>,
    actor_id: Vec<&'a str>,
    action: Vec<&'a str>,
    target_type: Vec<&'a str>,
    target_id: Vec<&'a str>,
    occurred_at: Vec<DateTime<Utc>>,
    ip: Vec<Option<&'a str>>,
    user_agent: Vec<Option<&'a str>>,
    trace_id: Vec<Option<&'a str>>,
    payload_canonical: Vec<&'a str>,
    request_digest: Vec<Vec<u8>>,
    prev_mac: Vec<Vec<u8>>,
    mac: Vec<Vec<u8>>,
}

/// Inserts the rows and moves the heads, as one statement whose text never changes. Both happen
/// only if `$18` is still the newest data key epoch (one snapshot for the whole statement, so a
/// rotation cannot fall between them); otherwise neither does, and the statement moves no head.
/// A row whose `(tenant, seq)` is taken — another replica extended the chain since this batch
/// read or remembered its head — fails the statement on the primary key.
const APPEND: &str = "WITH added AS ( \
       INSERT INTO audit.customer_audit_events (tenant_id, seq, event_id, actor_type, actor_id, action, target_type, \
         target_id, occurred_at, recorded_at, ip, user_agent, trace_id, payload_canonical, request_digest, prev_mac, \
         mac, key_id) \
       SELECT t, s, e, aty, aid, act, tty, tid, occ, $17, ip, ua, tr, p, d, pm, m, $18 \
       FROM unnest($1::text[], $2::int8[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], \
                   $9::timestamptz[], $10::text[], $11::text[], $12::text[], $13::text[], $14::bytea[], $15::bytea[], \
                   $16::bytea[]) AS x(t, s, e, aty, aid, act, tty, tid, occ, ip, ua, tr, p, d, pm, m) \
       WHERE $18 = (SELECT max(epoch) FROM audit.keys) \
       RETURNING 1) \
     UPDATE audit.chain_heads h SET seq = v.s, mac = v.m, updated_at = $17 \
     FROM unnest($19::text[], $20::int8[], $21::bytea[]) AS v(t, s, m) \
     WHERE h.tenant_id = v.t AND EXISTS (SELECT 1 FROM added)";

/// The primary key on (tenant_id, seq).
const SEQ_INDEX: &str = "customer_audit_events_pkey";

/// What is stored of an event: seq, mac and request digest.
type Stored = (i64, Vec<u8>, [u8; 32]);

type JobResults = Vec<Result<Vec<Appended>, AppendError>>;

/// Whether a transaction first looks up which of its ids are stored already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// Assume none is: a stored one makes the insert fail on the (tenant, event id) index, and
    /// the whole transaction rolls back ([`Attempt::SeenBefore`]).
    Optimistic,
    /// Look them up first, and answer stored ids with their stored `{seq, mac}`.
    Look,
}

enum Attempt {
    /// Committed (or, for a batch with nothing new, nothing to commit).
    Done(Done),
    /// Optimistic only: an id of the batch is stored already; nothing was written.
    SeenBefore,
    /// A head had moved since it was read or remembered, or the key epoch was not the newest
    /// ([`APPEND`]); nothing was written.
    Stale,
}

struct Done {
    results: JobResults,
    /// The data key epoch the new events were chained under.
    epoch: i32,
    /// The head of every tenant of the batch after the commit.
    heads: Vec<Head>,
}

struct Head {
    tenant: String,
    seq: i64,
    mac: Vec<u8>,
    /// Whether this transaction extended the chain.
    moved: bool,
}

/// The unique index on (tenant_id, event_id).
const EVENT_ID_INDEX: &str = "customer_audit_events_event_id";

/// One transaction for all `jobs`, whatever their tenants; each job is atomic on its own (a
/// conflicting job adds nothing, the others go ahead). Returns each job's result and the head
/// of every tenant of the batch.
///
/// When every tenant's head is remembered (and no stored ids are looked for), the transaction
/// is one pipelined round trip: begin, admit the tenants past row-level security, insert the
/// rows and move the heads ([`APPEND`]), commit. Otherwise two: first the heads are created if
/// missing and locked, then the rest.
#[tracing::instrument(name = "audit.append_batch", skip_all, fields(jobs = jobs.len(), probe = ?probe))]
async fn commit(inner: &Inner, remembered: &Remembered, jobs: &[Job], probe: Probe) -> Result<Attempt, AppendError> {
    let mut conn = inner.db.conn().await.map_err(|e| AppendError::Unavailable(e.to_string()))?;
    // Tenants in sorted order: heads are created and locked in this order on every replica.
    let tenants: Vec<&str> = {
        let mut t: Vec<&str> = jobs.iter().flat_map(|j| j.events.iter().map(|e| e.tenant_id.as_str())).collect();
        t.sort_unstable();
        t.dedup();
        t
    };
    let tenant_list = tenants.join(",");
    let remembered = if probe == Probe::Optimistic { remembered.chains(&tenants) } else { None };
    let warm = remembered.is_some();
    // The transaction is opened and committed by hand so that BEGIN and COMMIT ride in the
    // pipelines. Pipelined statements run in order; after an error PostgreSQL refuses the rest
    // of the transaction and turns its COMMIT into a rollback.
    let c: &mut diesel_async::AsyncPgConnection = &mut conn;
    let outcome = async {
        let (epoch, mut chains, existing) = match remembered {
            Some((epoch, chains)) => (epoch, chains, Vec::new()),
            None => read_heads(c, &tenants, &tenant_list, jobs, probe).await?,
        };
        let key = inner.keys.get(c, epoch).await?;
        let start: BTreeMap<&str, i64> = chains.iter().map(|(t, (s, _))| (*t, *s)).collect();
        // (tenant, id) -> (seq, mac, digest), for events stored before and those added here.
        let mut known: HashMap<(String, Uuid), Stored> = existing
            .into_iter()
            .map(|k| ((k.tenant_id, k.event_id), (k.seq, k.mac, k.request_digest.try_into().unwrap_or([0u8; 32]))))
            .collect();

        let recorded_at = Utc::now().trunc_subsecs(6);
        let recorded = chain::timestamp(&recorded_at);
        let mut cols = Columns::default();
        let mut results = Vec::with_capacity(jobs.len());
        for job in jobs {
            if job.events.iter().any(|e| !chains.contains_key(e.tenant_id.as_str())) {
                results.push(Err(AppendError::Internal(anyhow::anyhow!("no chain head for the tenant"))));
                continue;
            }
            // First pass: does anything in this job conflict?
            let prepared: Vec<(String, String, [u8; 32])> = job
                .events
                .iter()
                .map(|e| {
                    let id = e.event_id.to_string();
                    let occurred = chain::timestamp(&e.occurred_at);
                    let digest = chain::request_digest(&e.fields(&id, &occurred));
                    (id, occurred, digest)
                })
                .collect();
            // Against what is stored (or added by an earlier job), and within the job: the same
            // id twice in one batch with other content conflicts too.
            let mut in_job: HashMap<(&str, Uuid), &[u8; 32]> = HashMap::with_capacity(job.events.len());
            if let Some((e, _)) = job.events.iter().zip(&prepared).find(|(e, (_, _, d))| {
                known.get(&(e.tenant_id.clone(), e.event_id)).is_some_and(|k| &k.2 != d)
                    || in_job.insert((e.tenant_id.as_str(), e.event_id), d).is_some_and(|first| first != d)
            }) {
                results.push(Err(AppendError::Conflict(e.event_id)));
                continue;
            }
            let mut out = Vec::with_capacity(job.events.len());
            for (e, (id, occurred, digest)) in job.events.iter().zip(prepared) {
                let key_of = (e.tenant_id.clone(), e.event_id);
                if let Some((s, m, _)) = known.get(&key_of) {
                    out.push(Appended { id: e.event_id, seq: *s, mac: hex(m) });
                    continue;
                }
                // Present: every tenant of the job was checked above.
                let Some((seq, prev)) = chains.get_mut(e.tenant_id.as_str()) else { continue };
                *seq += 1;
                let fields =
                    ChainedFields { seq: *seq, recorded_at: &recorded, key_id: epoch, ..e.fields(&id, &occurred) };
                let mac = chain::mac(key.mac_key(), prev, &chain::canonical(&fields));
                cols.tenant_id.push(&e.tenant_id);
                cols.seq.push(*seq);
                cols.event_id.push(e.event_id);
                cols.actor_type.push(&e.actor_type);
                cols.actor_id.push(&e.actor_id);
                cols.action.push(&e.action);
                cols.target_type.push(&e.target_type);
                cols.target_id.push(&e.target_id);
                cols.occurred_at.push(e.occurred_at);
                cols.ip.push(e.ip.as_deref());
                cols.user_agent.push(e.user_agent.as_deref());
                cols.trace_id.push(e.trace_id.as_deref());
                cols.payload_canonical.push(&e.payload_canonical);
                cols.request_digest.push(digest.to_vec());
                cols.prev_mac.push(std::mem::replace(prev, mac.to_vec()));
                cols.mac.push(mac.to_vec());
                known.insert(key_of, (*seq, mac.to_vec(), digest));
                out.push(Appended { id: e.event_id, seq: *seq, mac: hex(&mac) });
            }
            results.push(Ok(out));
        }
        let heads: Vec<Head> = chains
            .into_iter()
            .map(|(t, (seq, mac))| Head { tenant: t.to_string(), seq, mac, moved: start.get(t) != Some(&seq) })
            .collect();
        let moved: Vec<&Head> = heads.iter().filter(|h| h.moved).collect();
        if moved.is_empty() {
            // Only a batch of stored ids (looked up, so the transaction is open).
            prepared(diesel::sql_query("COMMIT")).execute(c).await?;
            return Ok(Attempt::Done(Done { results, epoch, heads }));
        }
        // The rows and the heads in one statement, then the commit: one pipelined round trip
        // (with the begin when the heads were remembered).
        let head_tenants: Vec<&str> = moved.iter().map(|h| h.tenant.as_str()).collect();
        let head_seqs: Vec<i64> = moved.iter().map(|h| h.seq).collect();
        let head_macs: Vec<&[u8]> = moved.iter().map(|h| h.mac.as_slice()).collect();
        let shared: &diesel_async::AsyncPgConnection = c;
        let opened = async {
            if warm {
                let (begun, admitted) =
                    futures_util::join!(begin().execute(&mut &*shared), admit(&tenant_list).execute(&mut &*shared));
                begun?;
                admitted?;
            }
            Ok::<_, diesel::result::Error>(())
        };
        let append = prepared(
            diesel::sql_query(APPEND)
                .bind::<Array<Text>, _>(&cols.tenant_id)
                .bind::<Array<BigInt>, _>(&cols.seq)
                .bind::<Array<diesel::sql_types::Uuid>, _>(&cols.event_id)
                .bind::<Array<Text>, _>(&cols.actor_type)
                .bind::<Array<Text>, _>(&cols.actor_id)
                .bind::<Array<Text>, _>(&cols.action)
                .bind::<Array<Text>, _>(&cols.target_type)
                .bind::<Array<Text>, _>(&cols.target_id)
                .bind::<Array<Timestamptz>, _>(&cols.occurred_at)
                .bind::<Array<Nullable<Text>>, _>(&cols.ip)
                .bind::<Array<Nullable<Text>>, _>(&cols.user_agent)
                .bind::<Array<Nullable<Text>>, _>(&cols.trace_id)
                .bind::<Array<Text>, _>(&cols.payload_canonical)
                .bind::<Array<Bytea>, _>(&cols.request_digest)
                .bind::<Array<Bytea>, _>(&cols.prev_mac)
                .bind::<Array<Bytea>, _>(&cols.mac)
                .bind::<Timestamptz, _>(recorded_at)
                .bind::<Integer, _>(epoch)
                .bind::<Array<Text>, _>(&head_tenants)
                .bind::<Array<BigInt>, _>(&head_seqs)
                .bind::<Array<Bytea>, _>(&head_macs),
        )
        .execute(&mut &*shared);
        let commit = prepared(diesel::sql_query("COMMIT")).execute(&mut &*shared);
        // join, not try_join: every statement sent is waited for before anything else happens.
        let (opened, appended, committed) = futures_util::join!(opened, append, commit);
        opened?;
        // After a failed statement the pipelined COMMIT rolled everything back.
        if let Err(diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, info)) =
            &appended
        {
            match info.constraint_name() {
                Some(EVENT_ID_INDEX) if probe == Probe::Optimistic => return Ok(Attempt::SeenBefore),
                Some(SEQ_INDEX) => return Ok(Attempt::Stale),
                _ => {}
            }
        }
        let heads_moved = appended?;
        committed?;
        if heads_moved == 0 {
            // The epoch was not the newest: nothing was written.
            return Ok(Attempt::Stale);
        }
        if heads_moved != moved.len() {
            // Rows went in but a head row is missing: cannot happen while heads are only ever
            // created (never deleted); said loudly, and the heads are read again next time.
            tracing::error!(moved = heads_moved, expected = moved.len(), "chain heads missing after an append");
            return Err(AppendError::Internal(anyhow::anyhow!("chain heads missing")));
        }
        Ok(Attempt::Done(Done { results, epoch, heads }))
    }
    .await;
    if !matches!(outcome, Ok(Attempt::Done(..))) {
        // End whatever is open (after a failed pipeline, COMMIT has already rolled back and this
        // only warns); a connection that cannot even do that is broken and not reused.
        let _ = diesel::sql_query("ROLLBACK").execute(&mut conn).await;
    }
    outcome
}

fn begin() -> Prepared<diesel::query_builder::SqlQuery> {
    prepared(diesel::sql_query("BEGIN"))
}

/// Admits the transaction's tenants (a comma-separated list) past row-level security.
fn admit(
    tenant_list: &str,
) -> impl diesel::query_builder::QueryFragment<diesel::pg::Pg> + diesel::query_builder::QueryId + Send + '_ {
    prepared(diesel::sql_query("SELECT set_config('queue.writer_tenants', $1, true)").bind::<Text, _>(tenant_list))
}

/// The heads a batch starts from, read and locked: tenant -> (seq, mac).
type Chains<'a> = BTreeMap<&'a str, (i64, Vec<u8>)>;

/// The first round trip of a batch whose heads are not all remembered: begin, admit the tenants
/// past row-level security, make sure their heads exist, lock them (reading the newest key
/// epoch on the way), and (when looking) find which ids are already stored.
async fn read_heads<'a>(
    c: &mut diesel_async::AsyncPgConnection,
    tenants: &[&'a str],
    tenant_list: &str,
    jobs: &[Job],
    probe: Probe,
) -> Result<(i32, Chains<'a>, Vec<KnownRow>), AppendError> {
    let geneses: Vec<Vec<u8>> = tenants.iter().map(|t| chain::genesis(t).to_vec()).collect();
    // Every (tenant, id) of the batch, as two parallel arrays.
    let (id_tenants, ids): (Vec<&str>, Vec<Uuid>) =
        jobs.iter().flat_map(|j| j.events.iter().map(|e| (e.tenant_id.as_str(), e.event_id))).unzip();
    let shared: &diesel_async::AsyncPgConnection = c;
    let ensure = prepared(
        diesel::sql_query(
            "INSERT INTO audit.chain_heads (tenant_id, seq, mac) \
             SELECT t, 0, g FROM unnest($1::text[], $2::bytea[]) AS x(t, g) ORDER BY t \
             ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind::<Array<Text>, _>(tenants)
        .bind::<Array<Bytea>, _>(&geneses),
    )
    .execute(&mut &*shared);
    let lock = prepared(
        diesel::sql_query(
            "SELECT h.tenant_id, h.seq, h.mac, (SELECT max(epoch) FROM audit.keys) AS epoch \
             FROM audit.chain_heads h WHERE h.tenant_id = ANY($1) ORDER BY h.tenant_id FOR UPDATE OF h",
        )
        .bind::<Array<Text>, _>(tenants),
    )
    .load::<HeadRow>(&mut &*shared);
    // A join on the (tenant_id, event_id) index: one index probe per id, however long the
    // chains (`tenant_id = $1 AND event_id = ANY($2)` was planned as a scan of the tenant).
    // Not prepared: it is rare, and planned for the arrays at hand (a cached generic plan,
    // made while the table was small, scanned it whole as it grew).
    let known_query = async {
        if probe == Probe::Optimistic {
            return Ok(Vec::new());
        }
        diesel::sql_query(
            "SELECT e.tenant_id, e.event_id, e.seq, e.mac, e.request_digest \
             FROM unnest($1::text[], $2::uuid[]) AS x(t, id) \
             JOIN audit.customer_audit_events e ON e.tenant_id = x.t AND e.event_id = x.id",
        )
        .bind::<Array<Text>, _>(&id_tenants)
        .bind::<Array<diesel::sql_types::Uuid>, _>(&ids)
        .load::<KnownRow>(&mut &*shared)
        .await
    };
    // join, not try_join: every statement sent is waited for before anything else happens.
    let (begun, admitted, ensured, heads, existing) = futures_util::join!(
        begin().execute(&mut &*shared),
        admit(tenant_list).execute(&mut &*shared),
        ensure,
        lock,
        known_query
    );
    begun?;
    admitted?;
    ensured?;
    let (heads, existing) = (heads?, existing?);
    let epoch = heads
        .iter()
        .find_map(|h| h.epoch)
        .ok_or_else(|| AppendError::Internal(anyhow::anyhow!("no audit data key")))?;
    let mut chains = BTreeMap::new();
    for h in heads {
        let t = tenants
            .iter()
            .find(|t| **t == h.tenant_id)
            .ok_or_else(|| AppendError::Internal(anyhow::anyhow!("head of an unexpected tenant")))?;
        chains.insert(*t, (h.seq, h.mac));
    }
    Ok((epoch, chains, existing))
}
