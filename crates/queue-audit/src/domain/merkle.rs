//! A Merkle tree per tenant beside the HMAC chain (issue 20; docs/audit-chain.md, "The Merkle
//! tree"): RFC 6962 hashing, leaf `n` = `SHA-256(0x00 || canonical(event))` of the event with
//! `seq = n + 1`. The tree is stored as Go's sumdb/tlog stores it (`tlog_tiles::tlog`): the hash
//! of every complete subtree, numbered by `stored_hash_index`, in `audit.merkle_hashes`, and each
//! tenant's integrated size and root in `audit.merkle_trees`. Proofs and roots read O(log n)
//! stored hashes and never rehash the chain.
//!
//! The integrator appends the tree behind the chain, a page of events at a time, off the append
//! path (the checkpointer calls it before it signs, a proof request when it asks past the
//! integrated size). tlog's `HashReader` is synchronous: [`Known`] answers from memory and names
//! what it lacked, which [`resolve`] loads and tries again (a first pass names the frontier; every
//! later read is of hashes just computed).

use diesel::prelude::{ExpressionMethods, OptionalExtension, QueryDsl};
use diesel_async::{AsyncConnection, RunQueryDsl};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use tlog_tiles::tlog::{self, Hash, HashReader};

use crate::db::schema::audit::{merkle_hashes, merkle_trees};
use crate::domain::append::set_tenant;
use crate::domain::chain::canonical;
use crate::domain::error::AppendError;
use crate::domain::verify::{EventRecord, page_between};
use queue_platform::db::Db;

/// Events integrated per transaction.
const PAGE: i64 = 1000;
/// Passes of [`resolve`] before a missing stored hash is taken as a broken tree.
const PASSES: usize = 4;

/// A tenant's tree as integrated: its size (events) and root.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tree {
    pub size: u64,
    pub root: Hash,
}

/// Why a proof cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] AppendError),
}

/// The leaf hash of an event: `SHA-256(0x00 || canonical(event))`.
pub fn leaf_hash(e: &EventRecord) -> Hash {
    tlog::record_hash(&canonical(&e.fields()))
}

/// Stored hashes in memory, recording the indexes asked for and not there.
#[derive(Default)]
struct Known {
    hashes: HashMap<u64, Hash>,
    missing: RefCell<BTreeSet<u64>>,
}

impl HashReader for Known {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog::Error> {
        let found: Vec<Hash> = indexes.iter().filter_map(|i| self.hashes.get(i).copied()).collect();
        if found.len() == indexes.len() {
            return Ok(found);
        }
        let mut missing = self.missing.borrow_mut();
        missing.extend(indexes.iter().filter(|i| !self.hashes.contains_key(i)));
        Err(tlog::Error::IndexesNotInTree)
    }
}

/// Runs `f` over `known`, loading from the tenant's table whatever a pass lacked, until it
/// succeeds.
async fn resolve<T>(
    db: &Db,
    tenant: &str,
    known: &mut Known,
    f: impl Fn(&Known) -> Result<T, tlog::Error>,
) -> Result<T, AppendError> {
    for _ in 0..PASSES {
        known.missing.borrow_mut().clear();
        match f(known) {
            Ok(v) => return Ok(v),
            Err(tlog::Error::IndexesNotInTree) if !known.missing.borrow().is_empty() => {
                let wanted: Vec<u64> = std::mem::take(&mut *known.missing.borrow_mut()).into_iter().collect();
                let loaded = load(db, tenant, &wanted).await?;
                if loaded.len() != wanted.len() {
                    return Err(AppendError::Internal(anyhow::anyhow!(
                        "tenant {tenant}'s Merkle tree lacks stored hashes it needs ({} of {})",
                        wanted.len() - loaded.len(),
                        wanted.len()
                    )));
                }
                known.hashes.extend(loaded);
            }
            Err(e) => return Err(AppendError::Internal(anyhow::anyhow!("Merkle tree of tenant {tenant}: {e}"))),
        }
    }
    Err(AppendError::Internal(anyhow::anyhow!("Merkle tree of tenant {tenant}: stored hashes still missing")))
}

fn index(i: u64) -> Result<i64, AppendError> {
    i64::try_from(i).map_err(|_| AppendError::Internal(anyhow::anyhow!("stored hash index {i} out of range")))
}

/// The stored hashes of `indexes` that exist.
async fn load(db: &Db, tenant: &str, indexes: &[u64]) -> Result<HashMap<u64, Hash>, AppendError> {
    let wanted: Vec<i64> = indexes.iter().map(|&i| index(i)).collect::<Result<_, _>>()?;
    let mut conn = db.conn().await.map_err(|e| AppendError::Unavailable(e.to_string()))?;
    let t = tenant.to_string();
    let rows: Vec<(i64, Vec<u8>)> = conn
        .transaction::<_, AppendError, _>(async |c| {
            set_tenant(c, &t).await?;
            Ok(merkle_hashes::table
                .filter(merkle_hashes::tenant_id.eq(&t))
                .filter(merkle_hashes::idx.eq_any(&wanted))
                .select((merkle_hashes::idx, merkle_hashes::hash))
                .load(c)
                .await?)
        })
        .await?;
    rows.into_iter()
        .map(|(i, h)| {
            let h: [u8; 32] =
                h.try_into().map_err(|_| AppendError::Internal(anyhow::anyhow!("a stored hash of {i}")))?;
            Ok((i as u64, Hash(h)))
        })
        .collect()
}

/// The tenant's integrated tree (size 0 and the empty root when nothing is integrated yet).
pub async fn tree(db: &Db, tenant: &str) -> Result<Tree, AppendError> {
    let mut conn = db.conn().await.map_err(|e| AppendError::Unavailable(e.to_string()))?;
    let t = tenant.to_string();
    let row: Option<(i64, Vec<u8>)> = conn
        .transaction::<_, AppendError, _>(async |c| {
            set_tenant(c, &t).await?;
            Ok(merkle_trees::table
                .filter(merkle_trees::tenant_id.eq(&t))
                .select((merkle_trees::size, merkle_trees::root))
                .first(c)
                .await
                .optional()?)
        })
        .await?;
    match row {
        None => Ok(Tree { size: 0, root: tlog::EMPTY_HASH }),
        Some((size, root)) => {
            let root: [u8; 32] = root.try_into().map_err(|_| AppendError::Internal(anyhow::anyhow!("a tree root")))?;
            Ok(Tree { size: size as u64, root: Hash(root) })
        }
    }
}

/// Integrates the tenant's chain into its tree up to `upto` events (or the chain's end, if
/// shorter), a page per transaction. Returns the tree as it then stands. Two integrators of one
/// tenant do not write twice: each page is written only if the tree still has the size it was
/// computed from (the row is locked), else the page is computed again from the new size.
#[tracing::instrument(name = "audit.merkle.integrate", skip(db))]
pub async fn integrate(db: &Db, tenant: &str, upto: u64) -> Result<Tree, AppendError> {
    let upto = i64::try_from(upto).unwrap_or(i64::MAX);
    let mut known = Known::default();
    loop {
        let current = tree(db, tenant).await?;
        let from = index(current.size)?;
        if from >= upto {
            return Ok(current);
        }
        let events = page_between(db, tenant, from, upto, PAGE).await?;
        if events.is_empty() {
            return Ok(current);
        }
        let mut new: Vec<(i64, Hash)> = Vec::with_capacity(events.len() * 2);
        for (k, e) in events.iter().enumerate() {
            let n = current.size + k as u64;
            if e.seq != index(n + 1)? {
                return Err(AppendError::Internal(anyhow::anyhow!(
                    "tenant {tenant}'s chain has seq {} where {} was expected",
                    e.seq,
                    n + 1
                )));
            }
            let leaf = leaf_hash(e);
            let hashes = resolve(db, tenant, &mut known, |r| tlog::stored_hashes_for_record_hash(n, leaf, r)).await?;
            let start = tlog::stored_hash_index(0, n);
            for (j, h) in hashes.into_iter().enumerate() {
                known.hashes.insert(start + j as u64, h);
                new.push((index(start + j as u64)?, h));
            }
        }
        let size = current.size + events.len() as u64;
        let root = resolve(db, tenant, &mut known, |r| tlog::tree_hash(size, r)).await?;
        if write(db, tenant, current.size, size, root, &new).await? {
            tracing::debug!(tenant, size, "Merkle tree integrated");
        }
        // The next page needs only the frontier; what this page computed is in the table now.
        known.hashes.clear();
    }
}

/// Writes a page: the new stored hashes and the tree's new size and root, if the tree still
/// has size `from`. Whether it wrote.
async fn write(
    db: &Db,
    tenant: &str,
    from: u64,
    size: u64,
    root: Hash,
    new: &[(i64, Hash)],
) -> Result<bool, AppendError> {
    let mut conn = db.conn().await.map_err(|e| AppendError::Unavailable(e.to_string()))?;
    let t = tenant.to_string();
    let (from, size) = (index(from)?, index(size)?);
    conn.transaction::<_, AppendError, _>(async |c| {
        set_tenant(c, &t).await?;
        let locked: Option<i64> = merkle_trees::table
            .filter(merkle_trees::tenant_id.eq(&t))
            .select(merkle_trees::size)
            .for_update()
            .first(c)
            .await
            .optional()?;
        if locked.unwrap_or(0) != from {
            return Ok(false);
        }
        let rows: Vec<_> = new
            .iter()
            .map(|(i, h)| {
                (merkle_hashes::tenant_id.eq(&t), merkle_hashes::idx.eq(*i), merkle_hashes::hash.eq(h.0.to_vec()))
            })
            .collect();
        for chunk in rows.chunks(5000) {
            diesel::insert_into(merkle_hashes::table).values(chunk).execute(c).await?;
        }
        diesel::insert_into(merkle_trees::table)
            .values((
                merkle_trees::tenant_id.eq(&t),
                merkle_trees::size.eq(size),
                merkle_trees::root.eq(root.0.to_vec()),
            ))
            .on_conflict(merkle_trees::tenant_id)
            .do_update()
            .set((
                merkle_trees::size.eq(size),
                merkle_trees::root.eq(root.0.to_vec()),
                merkle_trees::updated_at.eq(diesel::dsl::now),
            ))
            .execute(c)
            .await?;
        Ok(true)
    })
    .await
}

/// The tree at least `size` events large, integrating on demand; a size past the chain's end is
/// refused.
async fn tree_of_size(db: &Db, tenant: &str, size: u64) -> Result<Tree, ProofError> {
    let mut t = tree(db, tenant).await?;
    if t.size < size {
        t = integrate(db, tenant, size).await?;
    }
    if t.size < size {
        return Err(ProofError::Invalid(format!("tenant {tenant}'s log holds {} events, fewer than {size}", t.size)));
    }
    Ok(t)
}

/// The inclusion proof of the event `seq` in the tree of `tree_size` events (RFC 6962 §2.1.1):
/// the audit path, leaf to root.
pub async fn inclusion(db: &Db, tenant: &str, seq: u64, tree_size: u64) -> Result<Vec<Hash>, ProofError> {
    if seq == 0 || seq > tree_size {
        return Err(ProofError::Invalid(format!("seq must be between 1 and tree_size ({tree_size}), not {seq}")));
    }
    tree_of_size(db, tenant, tree_size).await?;
    let mut known = Known::default();
    Ok(resolve(db, tenant, &mut known, |r| tlog::prove_record(tree_size, seq - 1, r)).await?)
}

/// The consistency proof from the tree of `from` events to the tree of `to` (RFC 6962 §2.1.2).
pub async fn consistency(db: &Db, tenant: &str, from: u64, to: u64) -> Result<Vec<Hash>, ProofError> {
    if from == 0 || from > to {
        return Err(ProofError::Invalid(format!("from must be between 1 and to ({to}), not {from}")));
    }
    tree_of_size(db, tenant, to).await?;
    let mut known = Known::default();
    Ok(resolve(db, tenant, &mut known, |r| tlog::prove_tree(to, from, r)).await?)
}

/// The root of the tree of `size` events (a past size of the tree, or its current one).
pub async fn root_at(db: &Db, tenant: &str, size: u64) -> Result<Hash, ProofError> {
    tree_of_size(db, tenant, size).await?;
    let mut known = Known::default();
    Ok(resolve(db, tenant, &mut known, |r| tlog::tree_hash(size, r)).await?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// RFC 6962 §2.1's MTH, straight from the definition.
    fn mth(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => tlog::EMPTY_HASH,
            1 => leaves[0],
            n => {
                // k: the largest power of two smaller than n.
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                tlog::node_hash(mth(&leaves[..k]), mth(&leaves[k..]))
            }
        }
    }

    /// The stored hashes of `n` leaves, as the integrator computes them.
    fn build(n: u64) -> (Known, Vec<Hash>) {
        let mut known = Known::default();
        let mut leaves = Vec::new();
        for i in 0..n {
            let leaf = tlog::record_hash(format!("event {i}").as_bytes());
            leaves.push(leaf);
            let hashes = tlog::stored_hashes_for_record_hash(i, leaf, &known).unwrap();
            let start = tlog::stored_hash_index(0, i);
            for (j, h) in hashes.into_iter().enumerate() {
                known.hashes.insert(start + j as u64, h);
            }
        }
        (known, leaves)
    }

    #[test]
    fn stored_hashes_give_rfc_6962_roots_and_proofs_that_check() {
        let (known, leaves) = build(37);
        for size in 1..=37u64 {
            let root = tlog::tree_hash(size, &known).unwrap();
            assert_eq!(root, mth(&leaves[..size as usize]), "size {size}");
            for n in 0..size {
                let proof = tlog::prove_record(size, n, &known).unwrap();
                tlog::check_record(&proof, size, root, n, leaves[n as usize]).unwrap();
            }
        }
        let (r7, r37) = (mth(&leaves[..7]), mth(&leaves));
        let proof = tlog::prove_tree(37, 7, &known).unwrap();
        tlog::check_tree(&proof, 37, r37, 7, r7).unwrap();
        assert!(tlog::check_tree(&proof, 37, r37, 7, leaves[0]).is_err(), "another old root fails");
    }

    #[test]
    fn a_missing_hash_is_named_not_guessed() {
        let (mut known, _) = build(8);
        known.hashes.remove(&tlog::stored_hash_index(3, 0));
        assert!(tlog::tree_hash(8, &known).is_err());
        assert_eq!(known.missing.borrow().iter().copied().collect::<Vec<_>>(), [tlog::stored_hash_index(3, 0)]);
    }
}
