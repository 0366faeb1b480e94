//! Verification: walk a tenant's chain in seq order and recompute every MAC, then hold the
//! chain against the signed checkpoints. The same [`ChainWalker`] serves the online verifier
//! (rows from PostgreSQL) and the offline one (lines of an NDJSON export).

use diesel::prelude::{ExpressionMethods, QueryDsl};
use diesel_async::{AsyncConnection, RunQueryDsl};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::db::schema::audit::{checkpoints, customer_audit_events as events};
use crate::domain::append::set_tenant;
use crate::domain::chain::{self, ChainedFields, checkpoint_message, hex, unhex};
use crate::domain::error::AppendError;
use crate::domain::keyring::KeyRing;
use crate::domain::keys::{DataKey, verify_signature};
use queue_platform::db::Db;

/// One event as stored (and as exported: one NDJSON line with `"type":"event"`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct EventRecord {
    pub tenant_id: String,
    pub seq: i64,
    pub event_id: String,
    pub occurred_at: String,
    pub recorded_at: String,
    pub actor_type: String,
    pub actor_id: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub trace_id: Option<String>,
    pub payload_canonical: String,
    /// Lowercase hex in exports.
    #[serde(with = "hex_bytes")]
    #[schema(value_type = String)]
    pub prev_mac: Vec<u8>,
    #[serde(with = "hex_bytes")]
    #[schema(value_type = String)]
    pub mac: Vec<u8>,
    pub key_id: i32,
}

/// MACs are bytes in memory and hex on the wire.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        super::unhex(&text).ok_or_else(|| D::Error::custom("not hex"))
    }
}

impl EventRecord {
    pub(crate) fn fields(&self) -> ChainedFields<'_> {
        ChainedFields {
            tenant_id: &self.tenant_id,
            seq: self.seq,
            event_id: &self.event_id,
            occurred_at: &self.occurred_at,
            recorded_at: &self.recorded_at,
            actor_type: &self.actor_type,
            actor_id: &self.actor_id,
            action: &self.action,
            target_type: &self.target_type,
            target_id: &self.target_id,
            ip: self.ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            trace_id: self.trace_id.as_deref(),
            payload: &self.payload_canonical,
            key_id: self.key_id,
        }
    }
}

/// A signed checkpoint as exported (`"type":"checkpoint"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub tenant_id: String,
    pub seq: i64,
    pub mac: String,
    pub signature: String,
    pub key_ref: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Report {
    pub ok: bool,
    pub tenant_id: String,
    /// The last seq up to which everything verified.
    pub verified_through_seq: i64,
    pub events: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The newest checkpoint held against the chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_seq: Option<i64>,
}

/// Walks one tenant's chain; stops at the first failure.
pub struct ChainWalker {
    tenant: String,
    keys: HashMap<i32, Arc<DataKey>>,
    next_seq: i64,
    prev: Vec<u8>,
    /// seq -> mac of every checkpointed seq seen on the way.
    macs_at: HashMap<i64, Vec<u8>>,
    wanted: std::collections::HashSet<i64>,
    failure: Option<(i64, String)>,
}

impl ChainWalker {
    pub fn new(tenant: &str, keys: HashMap<i32, Arc<DataKey>>, checkpoint_seqs: impl IntoIterator<Item = i64>) -> Self {
        Self {
            tenant: tenant.to_string(),
            keys,
            next_seq: 1,
            prev: chain::genesis(tenant).to_vec(),
            macs_at: HashMap::new(),
            wanted: checkpoint_seqs.into_iter().collect(),
            failure: None,
        }
    }

    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// Checks one event; after a failure, further events are ignored.
    pub fn feed(&mut self, e: &EventRecord) {
        let mac_ok = mac_ok(&self.keys, e);
        self.feed_checked(e, mac_ok);
    }

    /// Like [`ChainWalker::feed`], with the MAC check already done by [`macs_ok`] (over the
    /// event's stored `prev_mac`, which this walk then holds against the previous event's MAC,
    /// so the result is the same as checking in order).
    pub fn feed_checked(&mut self, e: &EventRecord, mac_ok: bool) {
        if self.failure.is_some() {
            return;
        }
        let fail = |seq: i64, why: String| Some((seq, why));
        self.failure = if e.tenant_id != self.tenant {
            fail(e.seq, format!("event of tenant `{}` in the chain of `{}`", e.tenant_id, self.tenant))
        } else if e.seq != self.next_seq {
            fail(self.next_seq, format!("seq {} is missing (next stored seq is {})", self.next_seq, e.seq))
        } else if e.prev_mac != self.prev {
            fail(e.seq, format!("prev_mac does not link to seq {}", e.seq - 1))
        } else if !self.keys.contains_key(&e.key_id) {
            fail(e.seq, format!("no usable data key for epoch {} (unknown, or it does not unwrap)", e.key_id))
        } else if mac_ok {
            if self.wanted.contains(&e.seq) {
                self.macs_at.insert(e.seq, e.mac.clone());
            }
            self.prev.clone_from(&e.mac);
            self.next_seq += 1;
            None
        } else {
            fail(e.seq, "mac does not match the event's content".to_string())
        };
    }

    /// The verdict, holding the chain against the checkpoints (verified with `public_key`).
    pub fn finish(self, checkpoints: &[CheckpointRecord], public_key: &[u8]) -> Report {
        let verified_through = self.next_seq - 1;
        let mut report = Report {
            ok: true,
            tenant_id: self.tenant.clone(),
            verified_through_seq: verified_through,
            events: verified_through,
            first_bad_seq: None,
            reason: None,
            checkpoint_seq: checkpoints.iter().map(|c| c.seq).max(),
        };
        let mut bad = self.failure;
        if bad.is_none() {
            let mut sorted: Vec<&CheckpointRecord> = checkpoints.iter().collect();
            sorted.sort_by_key(|c| c.seq);
            for cp in sorted {
                let mac = unhex(&cp.mac).unwrap_or_default();
                let sig = unhex(&cp.signature).unwrap_or_default();
                if cp.tenant_id != self.tenant
                    || !verify_signature(public_key, &checkpoint_message(&cp.tenant_id, cp.seq, &mac), &sig)
                {
                    bad = Some((cp.seq, format!("checkpoint at seq {} has an invalid signature", cp.seq)));
                    break;
                }
                match self.macs_at.get(&cp.seq) {
                    Some(m) if *m == mac => {}
                    Some(_) => {
                        bad = Some((cp.seq, format!("event {} differs from the signed checkpoint", cp.seq)));
                        break;
                    }
                    None => {
                        bad = Some((
                            verified_through + 1,
                            format!(
                                "events after seq {verified_through} are missing: a signed checkpoint covers seq {}",
                                cp.seq
                            ),
                        ));
                        break;
                    }
                }
            }
        }
        if let Some((seq, reason)) = bad {
            report.ok = false;
            report.first_bad_seq = Some(seq);
            report.reason = Some(reason);
            report.verified_through_seq = verified_through.min(seq - 1);
        }
        report
    }
}

/// Whether `e.mac` is the MAC of `e` over its stored `prev_mac` (false without a key).
fn mac_ok(keys: &HashMap<i32, Arc<DataKey>>, e: &EventRecord) -> bool {
    keys.get(&e.key_id)
        .is_some_and(|k| chain::mac_matches(k.mac_key(), &e.prev_mac, &chain::canonical(&e.fields()), &e.mac))
}

/// [`mac_ok`] for every event, on all cores: each MAC depends only on its own row (the links
/// between rows are checked in order by the walker), so a page splits freely.
pub fn macs_ok(keys: &HashMap<i32, Arc<DataKey>>, events: &[EventRecord]) -> Vec<bool> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(8);
    if threads == 1 || events.len() < 256 {
        return events.iter().map(|e| mac_ok(keys, e)).collect();
    }
    let chunk = events.len().div_ceil(threads);
    std::thread::scope(|s| {
        let parts: Vec<_> = events
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(|e| mac_ok(keys, e)).collect::<Vec<_>>()))
            .collect();
        parts.into_iter().flat_map(|p| p.join().expect("a MAC check thread panicked")).collect()
    })
}

/// Rows per round trip when reading a chain.
const PAGE: i64 = 10_000;
/// Pages read at once by the verifier.
const PARALLEL_PAGES: usize = 3;

/// The highest seq stored for a tenant (0 if none).
async fn last_seq(db: &Db, tenant: &str) -> Result<i64, AppendError> {
    let mut conn = db.conn().await.map_err(|e| AppendError::Unavailable(e.to_string()))?;
    let t = tenant.to_string();
    conn.transaction::<_, AppendError, _>(async |c| {
        set_tenant(c, &t).await?;
        let max: Option<i64> =
            events::table.filter(events::tenant_id.eq(&t)).select(diesel::dsl::max(events::seq)).first(c).await?;
        Ok(max.unwrap_or(0))
    })
    .await
}

type Row = (
    String,
    i64,
    uuid::Uuid,
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    Vec<u8>,
    Vec<u8>,
    i32,
);

fn record(r: Row) -> EventRecord {
    EventRecord {
        tenant_id: r.0,
        seq: r.1,
        event_id: r.2.to_string(),
        occurred_at: chain::timestamp(&r.3),
        recorded_at: chain::timestamp(&r.4),
        actor_type: r.5,
        actor_id: r.6,
        action: r.7,
        target_type: r.8,
        target_id: r.9,
        ip: r.10,
        user_agent: r.11,
        trace_id: r.12,
        payload_canonical: r.13,
        prev_mac: r.14,
        mac: r.15,
        key_id: r.16,
    }
}

/// Reads a page of a tenant's chain after `after_seq`, in seq order.
pub async fn page(db: &Db, tenant: &str, after_seq: i64, limit: i64) -> Result<Vec<EventRecord>, AppendError> {
    page_between(db, tenant, after_seq, i64::MAX, limit).await
}

/// The events of a tenant's chain with `after_seq < seq <= upto_seq`, at most `limit`, in seq order.
pub async fn page_between(
    db: &Db,
    tenant: &str,
    after_seq: i64,
    upto_seq: i64,
    limit: i64,
) -> Result<Vec<EventRecord>, AppendError> {
    let mut conn = db.conn().await.map_err(|e| AppendError::Unavailable(e.to_string()))?;
    let t = tenant.to_string();
    conn.transaction::<_, AppendError, _>(async |c| {
        set_tenant(c, &t).await?;
        let rows: Vec<Row> = events::table
            .filter(events::tenant_id.eq(&t))
            .filter(events::seq.gt(after_seq))
            .filter(events::seq.le(upto_seq))
            .order(events::seq.asc())
            .limit(limit)
            .select((
                events::tenant_id,
                events::seq,
                events::event_id,
                events::occurred_at,
                events::recorded_at,
                events::actor_type,
                events::actor_id,
                events::action,
                events::target_type,
                events::target_id,
                events::ip,
                events::user_agent,
                events::trace_id,
                events::payload_canonical,
                events::prev_mac,
                events::mac,
                events::key_id,
            ))
            .load(c)
            .await?;
        Ok(rows.into_iter().map(record).collect())
    })
    .await
}

/// All checkpoints of a tenant.
pub async fn checkpoint_records(db: &Db, tenant: &str) -> Result<Vec<CheckpointRecord>, AppendError> {
    let mut conn = db.conn().await.map_err(|e| AppendError::Unavailable(e.to_string()))?;
    let t = tenant.to_string();
    conn.transaction::<_, AppendError, _>(async |c| {
        set_tenant(c, &t).await?;
        let rows: Vec<(i64, Vec<u8>, Vec<u8>, String)> = checkpoints::table
            .filter(checkpoints::tenant_id.eq(&t))
            .select((checkpoints::seq, checkpoints::mac, checkpoints::signature, checkpoints::key_ref))
            .load(c)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, mac, signature, key_ref)| CheckpointRecord {
                tenant_id: t.clone(),
                seq,
                mac: hex(&mac),
                signature: hex(&signature),
                key_ref,
            })
            .collect())
    })
    .await
}

/// Verifies a tenant's chain as stored.
#[tracing::instrument(name = "audit.verify", skip(db, keys))]
pub async fn verify_tenant(db: &Db, keys: &KeyRing, tenant: &str) -> Result<Report, AppendError> {
    let all_keys = {
        let mut conn = db.conn().await.map_err(|e| AppendError::Unavailable(e.to_string()))?;
        keys.all(&mut conn).await?
    };
    let public_key = keys.provider().checkpoint_public_key().await.map_err(|e| AppendError::Internal(e.into()))?;
    let cps = checkpoint_records(db, tenant).await?;
    let mut walker = ChainWalker::new(tenant, all_keys, cps.iter().map(|c| c.seq));
    // The chain is read in seq ranges, several at once (each on its own connection and task, so
    // rows are decoded on every core), and hashed in order on the blocking pool while the next
    // ranges are read. Ranges, not "the next N after the last seen": a deleted row must not
    // shift the pages (the walker reports the gap), and rows past the head are read too.
    let last = last_seq(db, tenant).await?;
    let ranges: Vec<(i64, i64)> = (0..last.max(0)).step_by(PAGE as usize).map(|a| (a, (a + PAGE).min(last))).collect();
    let mut pages = futures_util::stream::iter(ranges)
        .map(|(after, upto)| {
            let (db, tenant) = (db.clone(), tenant.to_string());
            tokio::spawn(async move { page_between(&db, &tenant, after, upto, PAGE).await })
        })
        .buffered(PARALLEL_PAGES);
    while let Some(next) = pages.next().await {
        let rows = next.map_err(|e| AppendError::Internal(e.into()))??;
        let (w, failed) = tokio::task::spawn_blocking(move || {
            let ok = macs_ok(&walker.keys, &rows);
            for (r, ok) in rows.iter().zip(ok) {
                walker.feed_checked(r, ok);
            }
            let failed = walker.failed();
            (walker, failed)
        })
        .await
        .map_err(|e| AppendError::Internal(e.into()))?;
        walker = w;
        if failed {
            break;
        }
    }
    Ok(walker.finish(&cps, &public_key))
}

/// The lines of an NDJSON export.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ExportLine {
    /// First line: what the export is, and the wrapped data keys (never plaintext).
    Header {
        tenant_id: String,
        format: String,
        keys: Vec<ExportedKey>,
        checkpoint_public_key: String,
    },
    Event(EventRecord),
    Checkpoint(CheckpointRecord),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportedKey {
    pub epoch: i32,
    pub provider: String,
    pub key_ref: String,
    /// Hex of the wrapped (encrypted) data key.
    pub encrypted_key: String,
}

/// Verifies an export offline: the data keys are unwrapped through `keys`' provider (KMS or the
/// local master key); the database is not needed.
pub async fn verify_export(lines: impl Iterator<Item = String>, keys: &KeyRing) -> Result<Report, String> {
    let mut tenant = None;
    let mut cps = Vec::new();
    let mut public_key = Vec::new();
    let mut events: BTreeMap<i64, EventRecord> = BTreeMap::new();
    let mut keymap = HashMap::new();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<ExportLine>(&line).map_err(|e| format!("line {}: {e}", n + 1))? {
            ExportLine::Header { tenant_id, keys: exported, checkpoint_public_key, .. } => {
                for k in exported {
                    let enc = unhex(&k.encrypted_key).ok_or(format!("line {}: bad key hex", n + 1))?;
                    let key = keys.insert_decrypted(k.epoch, &enc, &k.key_ref).await.map_err(|e| e.to_string())?;
                    keymap.insert(k.epoch, key);
                }
                public_key = unhex(&checkpoint_public_key).ok_or("bad checkpoint public key")?;
                // The header travels with the file: whoever forged the file could have put their
                // own key there. Hold it against the key this deployment's provider holds.
                let ours = keys.provider().checkpoint_public_key().await.map_err(|e| e.to_string())?;
                if ours != public_key {
                    return Err("the export's checkpoint public key is not this deployment's checkpoint key: \
                                its checkpoints cannot be trusted"
                        .to_string());
                }
                tenant = Some(tenant_id);
            }
            ExportLine::Event(e) => {
                events.insert(e.seq, e);
            }
            ExportLine::Checkpoint(c) => cps.push(c),
        }
    }
    let tenant = tenant.ok_or("no header line")?;
    let mut walker = ChainWalker::new(&tenant, keymap, cps.iter().map(|c| c.seq));
    for e in events.values() {
        walker.feed(e);
    }
    Ok(walker.finish(&cps, &public_key))
}

/// The first line of an export: the wrapped data keys (never plaintext) and the checkpoint
/// public key, which is all an offline verifier needs besides access to the key provider.
pub async fn export_header(db: &Db, keys: &KeyRing, tenant: &str) -> Result<ExportLine, AppendError> {
    let stored = {
        let mut conn = db.conn().await.map_err(|e| AppendError::Unavailable(e.to_string()))?;
        crate::domain::keyring::load_stored(&mut conn).await?
    };
    let public = keys.provider().checkpoint_public_key().await.map_err(|e| AppendError::Internal(e.into()))?;
    Ok(ExportLine::Header {
        tenant_id: tenant.to_string(),
        format: chain::VERSION.to_string(),
        keys: stored
            .into_iter()
            .map(|k| ExportedKey {
                epoch: k.epoch,
                provider: k.provider,
                key_ref: k.key_ref,
                encrypted_key: hex(&k.encrypted_key),
            })
            .collect(),
        checkpoint_public_key: hex(&public),
    })
}
