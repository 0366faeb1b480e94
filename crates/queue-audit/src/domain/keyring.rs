//! Data keys by epoch: the newest epoch signs new events; every epoch stays available to
//! verify old ones. Keys are decrypted through the provider once and cached in memory.

use diesel::prelude::{ExpressionMethods, OptionalExtension, QueryDsl};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::db::schema::audit::keys;
use crate::domain::error::AppendError;
use crate::domain::keys::{DataKey, KeyProvider};

#[derive(Clone)]
pub struct KeyRing {
    provider: Arc<KeyProvider>,
    cache: Arc<RwLock<HashMap<i32, Arc<DataKey>>>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").field("provider", &self.provider.name()).finish()
    }
}

#[derive(Debug, Clone)]
pub struct StoredKey {
    pub epoch: i32,
    pub provider: String,
    pub key_ref: String,
    pub encrypted_key: Vec<u8>,
}

pub async fn load_stored(conn: &mut AsyncPgConnection) -> Result<Vec<StoredKey>, diesel::result::Error> {
    let rows: Vec<(i32, String, String, Vec<u8>)> = keys::table
        .order(keys::epoch.asc())
        .select((keys::epoch, keys::provider, keys::key_ref, keys::encrypted_key))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(epoch, provider, key_ref, encrypted_key)| StoredKey { epoch, provider, key_ref, encrypted_key })
        .collect())
}

impl KeyRing {
    pub fn new(provider: Arc<KeyProvider>) -> Self {
        Self { provider, cache: Arc::new(RwLock::new(HashMap::new())) }
    }

    pub fn provider(&self) -> &KeyProvider {
        &self.provider
    }

    /// The provider itself, to share with the checkpointer.
    pub fn shared_provider(&self) -> Arc<KeyProvider> {
        self.provider.clone()
    }

    /// The newest epoch and its key.
    pub async fn current(&self, conn: &mut AsyncPgConnection) -> Result<(i32, Arc<DataKey>), AppendError> {
        let epoch: Option<i32> = keys::table.select(diesel::dsl::max(keys::epoch)).first(conn).await?;
        let epoch = epoch.ok_or_else(|| {
            AppendError::Internal(anyhow::anyhow!("no audit data key: the service creates epoch 1 at start-up"))
        })?;
        Ok((epoch, self.get(conn, epoch).await?))
    }

    /// The key of `epoch`, decrypting it on first use.
    pub async fn get(&self, conn: &mut AsyncPgConnection, epoch: i32) -> Result<Arc<DataKey>, AppendError> {
        if let Some(k) = self.cache.read().ok().and_then(|c| c.get(&epoch).cloned()) {
            return Ok(k);
        }
        let row: Option<(String, Vec<u8>)> = keys::table
            .filter(keys::epoch.eq(epoch))
            .select((keys::key_ref, keys::encrypted_key))
            .first(conn)
            .await
            .optional()?;
        let (key_ref, encrypted) =
            row.ok_or_else(|| AppendError::Internal(anyhow::anyhow!("no key for epoch {epoch}")))?;
        self.insert_decrypted(epoch, &encrypted, &key_ref).await
    }

    pub async fn insert_decrypted(
        &self,
        epoch: i32,
        encrypted: &[u8],
        key_ref: &str,
    ) -> Result<Arc<DataKey>, AppendError> {
        let key = Arc::new(
            self.provider
                .decrypt_data_key(epoch, encrypted, key_ref)
                .await
                .map_err(|e| AppendError::Internal(e.into()))?,
        );
        if let Ok(mut c) = self.cache.write() {
            c.insert(epoch, key.clone());
        }
        Ok(key)
    }

    /// Every epoch whose key unwraps (for verification). An epoch that does not unwrap — a
    /// wrong KMS key, or a forged row in the keys table — is left out and logged; the verifier
    /// then reports the first event that names it.
    pub async fn all(&self, conn: &mut AsyncPgConnection) -> Result<HashMap<i32, Arc<DataKey>>, AppendError> {
        let mut out = HashMap::new();
        for k in load_stored(conn).await? {
            match self.get(conn, k.epoch).await {
                Ok(key) => {
                    out.insert(k.epoch, key);
                }
                Err(e) => tracing::warn!(epoch = k.epoch, error = %e, "audit data key does not unwrap"),
            }
        }
        Ok(out)
    }

    /// Creates epoch 1 if there is no key yet. Runs as the schema owner (the service role may
    /// only read keys); concurrent starters are fine (`ON CONFLICT DO NOTHING`).
    pub async fn ensure_initial(&self, owner: &mut AsyncPgConnection) -> Result<(), AppendError> {
        let any: Option<i32> = keys::table.select(keys::epoch).first(owner).await.optional()?;
        if any.is_none() {
            self.insert_epoch(owner, 1).await?;
        }
        Ok(())
    }

    /// Starts a new epoch: new events use it, old ones keep verifying with theirs.
    pub async fn rotate(&self, owner: &mut AsyncPgConnection) -> Result<i32, AppendError> {
        let current: Option<i32> = keys::table.select(diesel::dsl::max(keys::epoch)).first(owner).await?;
        let next = current.unwrap_or(0) + 1;
        self.insert_epoch(owner, next).await?;
        diesel::update(keys::table.filter(keys::epoch.lt(next)).filter(keys::retired_at.is_null()))
            .set(keys::retired_at.eq(diesel::dsl::now))
            .execute(owner)
            .await?;
        Ok(next)
    }

    async fn insert_epoch(&self, owner: &mut AsyncPgConnection, epoch: i32) -> Result<(), AppendError> {
        let new = self.provider.generate_data_key(epoch).await.map_err(|e| AppendError::Internal(e.into()))?;
        diesel::insert_into(keys::table)
            .values((
                keys::epoch.eq(epoch),
                keys::provider.eq(self.provider.name()),
                keys::key_ref.eq(&new.key_ref),
                keys::encrypted_key.eq(&new.encrypted),
            ))
            .on_conflict_do_nothing()
            .execute(owner)
            .await?;
        Ok(())
    }
}
