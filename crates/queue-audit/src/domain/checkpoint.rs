//! Signed checkpoints of chain heads. Every `checkpoint_every` events, or `checkpoint_interval`
//! after the first unsigned event, a tenant's head `(tenant, seq, mac)` is signed with a key that
//! never leaves KMS (or the local checkpoint key) and stored. Someone who holds the database and
//! the data keys can recompute a chain, but cannot sign a head: cutting off or rewriting events
//! before a checkpoint is caught.

use diesel::prelude::{ExpressionMethods, OptionalExtension, QueryDsl};
use diesel_async::{AsyncConnection, RunQueryDsl};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::db::schema::audit::{chain_heads, checkpoints};
use crate::domain::append::set_tenant;
use crate::domain::chain::{checkpoint_message, hex};
use crate::domain::error::AppendError;
use crate::domain::keys::{CHECKPOINT_ALGORITHM, KeyProvider};
use crate::domain::{merkle, note};
use queue_platform::db::Db;

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Checkpoint {
    pub tenant_id: String,
    pub seq: i64,
    /// Hex.
    pub mac: String,
    pub algorithm: String,
    pub key_ref: String,
    /// Hex of the DER ECDSA signature.
    pub signature: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Signs and stores the tenant's current head unless it is already checkpointed. Returns the
/// seq signed.
#[tracing::instrument(name = "audit.checkpoint", skip(db, provider))]
pub async fn sign_head(
    db: &Db,
    provider: &KeyProvider,
    origin: &str,
    tenant: &str,
) -> Result<Option<i64>, AppendError> {
    let mut conn = db.conn().await.map_err(|e| AppendError::Unavailable(e.to_string()))?;
    let t = tenant.to_string();
    let head = conn
        .transaction::<_, AppendError, _>(async |c| {
            set_tenant(c, &t).await?;
            let head: Option<(i64, Vec<u8>)> = chain_heads::table
                .filter(chain_heads::tenant_id.eq(&t))
                .select((chain_heads::seq, chain_heads::mac))
                .first(c)
                .await
                .optional()?;
            let signed: Option<i64> = checkpoints::table
                .filter(checkpoints::tenant_id.eq(&t))
                .select(diesel::dsl::max(checkpoints::seq))
                .first(c)
                .await?;
            Ok(head.filter(|(seq, _)| *seq > 0 && signed.is_none_or(|s| s < *seq)))
        })
        .await?;
    let Some((seq, mac)) = head else { return Ok(None) };
    // Sign outside the transaction: a KMS round trip must not hold a connection in a transaction.
    let (signature, key_ref) =
        provider.sign(&checkpoint_message(tenant, seq, &mac)).await.map_err(|e| AppendError::Internal(e.into()))?;
    let note = signed_note(db, provider, origin, tenant, seq).await?;
    conn.transaction::<_, AppendError, _>(async |c| {
        set_tenant(c, &t).await?;
        diesel::insert_into(checkpoints::table)
            .values((
                checkpoints::tenant_id.eq(&t),
                checkpoints::seq.eq(seq),
                checkpoints::mac.eq(&mac),
                checkpoints::algorithm.eq(CHECKPOINT_ALGORITHM),
                checkpoints::key_ref.eq(&key_ref),
                checkpoints::signature.eq(&signature),
                checkpoints::note.eq(&note),
            ))
            .on_conflict_do_nothing()
            .execute(c)
            .await?;
        Ok(())
    })
    .await?;
    tracing::info!(tenant, seq, "checkpoint signed");
    Ok(Some(seq))
}

/// The C2SP signed note of the tenant's tree at `seq` events (issue 20, item 3; `note.rs`).
async fn signed_note(
    db: &Db,
    provider: &KeyProvider,
    name: &str,
    tenant: &str,
    seq: i64,
) -> Result<String, AppendError> {
    let size = u64::try_from(seq).map_err(|_| AppendError::Internal(anyhow::anyhow!("seq {seq}")))?;
    let root = merkle::root_at(db, tenant, size).await.map_err(|e| match e {
        merkle::ProofError::Store(e) => e,
        merkle::ProofError::Invalid(m) => AppendError::Internal(anyhow::anyhow!(m)),
    })?;
    let body = note::body(&note::origin(name, tenant), size, &root).map_err(|e| AppendError::Internal(e.into()))?;
    let (der, _) = provider.sign(&body).await.map_err(|e| AppendError::Internal(e.into()))?;
    let point = provider.checkpoint_public_key().await.map_err(|e| AppendError::Internal(e.into()))?;
    note::signed(&body, name, &point, der).map_err(|e| AppendError::Internal(e.into()))
}

/// The newest signed note of a tenant's log, if any.
pub async fn latest_note(db: &Db, tenant: &str) -> Result<Option<String>, AppendError> {
    let mut conn = db.conn().await.map_err(|e| AppendError::Unavailable(e.to_string()))?;
    let t = tenant.to_string();
    conn.transaction::<_, AppendError, _>(async |c| {
        set_tenant(c, &t).await?;
        let note: Option<Option<String>> = checkpoints::table
            .filter(checkpoints::tenant_id.eq(&t))
            .filter(checkpoints::note.is_not_null())
            .order(checkpoints::seq.desc())
            .select(checkpoints::note)
            .first(c)
            .await
            .optional()?;
        Ok(note.flatten())
    })
    .await
}

type CheckpointRow = (String, i64, Vec<u8>, String, String, Vec<u8>, chrono::DateTime<chrono::Utc>);

pub async fn list(db: &Db, tenant: &str, limit: i64) -> Result<Vec<Checkpoint>, AppendError> {
    let mut conn = db.conn().await.map_err(|e| AppendError::Unavailable(e.to_string()))?;
    let t = tenant.to_string();
    conn.transaction::<_, AppendError, _>(async |c| {
        set_tenant(c, &t).await?;
        let rows: Vec<CheckpointRow> = checkpoints::table
            .filter(checkpoints::tenant_id.eq(&t))
            .order(checkpoints::seq.desc())
            .limit(limit)
            .select((
                checkpoints::tenant_id,
                checkpoints::seq,
                checkpoints::mac,
                checkpoints::algorithm,
                checkpoints::key_ref,
                checkpoints::signature,
                checkpoints::created_at,
            ))
            .load(c)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(tenant_id, seq, mac, algorithm, key_ref, signature, created_at)| Checkpoint {
                tenant_id,
                seq,
                mac: hex(&mac),
                algorithm,
                key_ref,
                signature: hex(&signature),
                created_at,
            })
            .collect())
    })
    .await
}

/// Watches commits and signs heads when `every` events or `interval` have passed.
pub fn spawn_checkpointer(
    db: Db,
    provider: Arc<KeyProvider>,
    origin: String,
    mut committed: mpsc::UnboundedReceiver<(String, i64)>,
    every: i64,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // tenant -> (last signed seq, newest committed seq, first unsigned commit seen at)
        let mut state: HashMap<String, (i64, i64, Option<Instant>)> = HashMap::new();
        let mut tick = tokio::time::interval(interval.min(Duration::from_secs(1)));
        loop {
            let due: Vec<String> = tokio::select! {
                msg = committed.recv() => {
                    let Some((tenant, seq)) = msg else { return };
                    let entry = state.entry(tenant.clone()).or_insert((0, 0, None));
                    entry.1 = entry.1.max(seq);
                    if entry.2.is_none() {
                        entry.2 = Some(Instant::now());
                    }
                    if entry.1 - entry.0 >= every { vec![tenant] } else { vec![] }
                }
                _ = tick.tick() => state
                    .iter()
                    .filter(|(_, (signed, head, since))| head > signed && since.is_some_and(|t| t.elapsed() >= interval))
                    .map(|(t, _)| t.clone())
                    .collect(),
            };
            for tenant in due {
                // The Merkle tree follows the chain before its head is signed (issue 20).
                if let Err(e) = merkle::integrate(&db, &tenant, u64::MAX).await {
                    tracing::warn!(tenant, error = %e, "Merkle tree integration failed; will retry");
                }
                match sign_head(&db, &provider, &origin, &tenant).await {
                    Ok(signed) => {
                        if let Some(e) = state.get_mut(&tenant) {
                            e.0 = signed.unwrap_or(e.1).max(e.0);
                            e.2 = if e.1 > e.0 { Some(Instant::now()) } else { None };
                        }
                    }
                    Err(e) => tracing::warn!(tenant, error = %e, "checkpoint failed; will retry"),
                }
            }
        }
    })
}
