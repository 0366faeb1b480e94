//! Backup codes (`queue_backup_codes`): 10 codes of 65 bits, shown once, stored as HMACs under
//! the pepper. Redeeming is one conditional UPDATE (`used_at IS NULL`), so of any number of
//! concurrent redeems of one code exactly one succeeds. A new set voids the old. Codes imported
//! from Raptor (issue 19, `domain::legacy`) keep their werkzeug hash instead of the HMAC and
//! redeem here too, once.

use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
use diesel_async::{AsyncConnection, RunQueryDsl};
use queue_platform::ApiError;
use queue_platform::db::prepared;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::audit::{self, Event};
use super::crypto::{self, Pepper};
use super::legacy::werkzeug;
use super::mailer::Composer;
use super::notify::{self, Notice};
use super::sessions::Session;
use super::users::{self, EmailAddress, User};
use super::{Conn, RequestInfo, Result};
use crate::db::schema::auth::queue_backup_codes as bc;

pub const COUNT: usize = 10;
const PURPOSE: &str = "backup-code";

fn mac(pepper: &Pepper, user_id: Uuid, normalised: &str) -> Vec<u8> {
    pepper.mac(PURPOSE, format!("{user_id}\0{normalised}").as_bytes())
}

/// A new set for the session's user; the old set is void; the user is mailed. Returns the codes
/// (shown once).
#[tracing::instrument(skip_all)]
pub async fn generate(
    conn: &mut Conn,
    pepper: &Pepper,
    mail: &Composer,
    now: DateTime<Utc>,
    info: &RequestInfo,
    s: &Session,
) -> Result<Vec<Zeroizing<String>>> {
    let codes: Vec<Zeroizing<String>> = (0..COUNT).map(|_| crypto::backup_code()).collect();
    let set_id = Uuid::new_v4();
    conn.transaction::<_, super::Error, _>(async |conn| {
        let voided = prepared(
            diesel::update(
                bc::table
                    .filter(bc::user_id.eq(s.user_id))
                    .filter(bc::used_at.is_null())
                    .filter(bc::voided_at.is_null()),
            )
            .set(bc::voided_at.eq(now)),
        )
        .execute(conn)
        .await?;
        for code in &codes {
            let n =
                crypto::normalise_backup_code(code).ok_or_else(|| ApiError::internal(anyhow::anyhow!("bad code")))?;
            prepared(diesel::insert_into(bc::table).values((
                bc::id.eq(Uuid::new_v4()),
                bc::user_id.eq(s.user_id),
                bc::set_id.eq(set_id),
                bc::code_hash.eq(mac(pepper, s.user_id, &n)),
                bc::created_at.eq(now),
            )))
            .execute(conn)
            .await?;
        }
        audit::record(
            conn,
            now,
            info,
            Event {
                tenant_id: &s.tenant_id,
                actor: audit::user(s.user_id),
                action: "auth.backup_codes.generated",
                target: audit::user(s.user_id),
                payload: serde_json::json!({"set_id": set_id, "count": COUNT, "voided": voided}),
            },
        )
        .await?;
        let user = users::get(conn, s.user_id)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("the session's user is gone".into()))?;
        notify::queue(conn, mail, now, info, &user, Notice::BackupCodesGenerated).await?;
        Ok(())
    })
    .await?;
    Ok(codes)
}

pub async fn remaining(conn: &mut Conn, user_id: Uuid) -> Result<i64> {
    Ok(bc::table
        .filter(bc::user_id.eq(user_id))
        .filter(bc::used_at.is_null())
        .filter(bc::voided_at.is_null())
        .count()
        .get_result(conn)
        .await?)
}

/// The user id an unknown (or disabled) address redeems against: stable per address, keyed by
/// the pepper, and never a real user's, so the conditional UPDATE below matches nothing.
fn decoy_user(pepper: &Pepper, tenant: &str, email: &EmailAddress) -> Uuid {
    let m = pepper.mac("backup-code-decoy", format!("{tenant}\0{}", email.as_str()).as_bytes());
    Uuid::from_bytes(m.get(..16).and_then(|b| b.try_into().ok()).unwrap_or([0; 16]))
}

/// Redeems a code; `None` for any failure (unknown address, wrong or used code), which the
/// caller answers identically. An unknown address takes the same path as a known one: the same
/// HMAC, and the same transaction with the same conditional UPDATE, against a decoy user id
/// (which matches no row), so neither the work, the statements nor the answer tell them apart.
/// A code shaped like Raptor's (10 base32 characters) is checked against the user's imported
/// werkzeug hashes instead ([`redeem_legacy`]). A success mails the user that a backup code
/// recovered the account.
#[tracing::instrument(skip_all)]
#[allow(clippy::too_many_arguments)]
pub async fn redeem(
    conn: &mut Conn,
    pepper: &Pepper,
    mail: &Composer,
    now: DateTime<Utc>,
    info: &RequestInfo,
    tenant: &str,
    email: &EmailAddress,
    code: &str,
) -> Result<Option<User>> {
    let user = users::find_by_email(conn, tenant, email).await?.filter(|u| u.status == "active");
    if let Some(raw) = werkzeug::normalise_code(code) {
        return redeem_legacy(conn, mail, now, info, user, raw).await;
    }
    let subject = user.as_ref().map_or_else(|| decoy_user(pepper, tenant, email), |u| u.id);
    let Some(n) = crypto::normalise_backup_code(code) else { return Ok(None) };
    let hash = mac(pepper, subject, &n);
    conn.transaction::<_, super::Error, _>(async |conn| {
        // The conditional UPDATE is the whole concurrency story: one row, one winner.
        let used: Option<Uuid> = prepared(
            diesel::update(
                bc::table
                    .filter(bc::user_id.eq(subject))
                    .filter(bc::code_hash.eq(&hash))
                    .filter(bc::used_at.is_null())
                    .filter(bc::voided_at.is_null()),
            )
            .set(bc::used_at.eq(now))
            .returning(bc::id),
        )
        .get_result(conn)
        .await
        .optional()?;
        finish(conn, mail, now, info, used, user.as_ref(), false).await
    })
    .await
}

/// A Raptor code (issue 19): verified against each of the user's unused imported werkzeug
/// hashes, off the async runtime (scrypt and pbkdf2 are slow by design), then used once by the
/// same conditional UPDATE as a Queue code. Without a candidate (unknown address, no imported
/// codes) one decoy hash of werkzeug's default cost is checked, so that case is not instant.
async fn redeem_legacy(
    conn: &mut Conn,
    mail: &Composer,
    now: DateTime<Utc>,
    info: &RequestInfo,
    user: Option<User>,
    raw: Zeroizing<String>,
) -> Result<Option<User>> {
    let candidates: Vec<(Uuid, Option<String>)> = match &user {
        Some(u) => {
            bc::table
                .filter(bc::user_id.eq(u.id))
                .filter(bc::legacy_hash.is_not_null())
                .filter(bc::used_at.is_null())
                .filter(bc::voided_at.is_null())
                .order((bc::created_at, bc::id))
                .select((bc::id, bc::legacy_hash))
                .load(conn)
                .await?
        }
        None => Vec::new(),
    };
    // Each check may hold scrypt's 32 MiB: a few at a time, the rest wait their turn.
    let permit = LEGACY_CHECKS.acquire().await.map_err(ApiError::internal)?;
    let matched = tokio::task::spawn_blocking(move || legacy_match(&candidates, &raw))
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("backup-code verification stopped: {e}")))?;
    drop(permit);
    conn.transaction::<_, super::Error, _>(async |conn| {
        let used: Option<(Uuid, Option<String>)> = match matched {
            Some(id) => prepared(
                diesel::update(bc::table.find(id).filter(bc::used_at.is_null()).filter(bc::voided_at.is_null()))
                    .set(bc::used_at.eq(now))
                    .returning((bc::id, bc::legacy_id)),
            )
            .get_result(conn)
            .await
            .optional()?,
            None => None,
        };
        // Used here, used at Raptor (write-back), so a rollback does not give it a second use.
        if let Some((id, Some(legacy_id))) = &used {
            super::writeback::backup_code_used(conn, *id, legacy_id, now).await?;
        }
        let used = used.map(|(id, _)| id);
        finish(conn, mail, now, info, used, user.as_ref(), true).await
    })
    .await
}

/// How many werkzeug checks run at once in this process (each on a blocking thread, scrypt's
/// default using 32 MiB), so a burst of redeems cannot exhaust memory or the blocking pool.
static LEGACY_CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// werkzeug's default method and cost, for the decoy check: the code hashed is random and
/// unknown, and the answer is thrown away.
const DECOY_HASH: &str = "scrypt:32768:8:1$NXt9VDbmKCKubNBu$7cae4d83706b434fd0620fa7c5a2b9cc202bdb466531058c0d1443bacd1617509ea8b98ff15b2b271db0be978684266e1217960973690e4288f16f29e8789b52";

/// The id of the first candidate whose werkzeug hash `raw` verifies against.
fn legacy_match(candidates: &[(Uuid, Option<String>)], raw: &str) -> Option<Uuid> {
    if candidates.is_empty() {
        if let Ok(decoy) = werkzeug::Hash::parse(DECOY_HASH) {
            let _ = decoy.verify(raw);
        }
        return None;
    }
    candidates.iter().find_map(|(id, text)| {
        let hash = werkzeug::Hash::parse(text.as_deref()?).ok()?;
        hash.verify(raw).then_some(*id)
    })
}

/// After the conditional UPDATE: when a code was used, its audit event, the mail to the user,
/// and the user.
async fn finish(
    conn: &mut Conn,
    mail: &Composer,
    now: DateTime<Utc>,
    info: &RequestInfo,
    used: Option<Uuid>,
    user: Option<&User>,
    legacy: bool,
) -> Result<Option<User>> {
    let (Some(id), Some(user)) = (used, user) else { return Ok(None) };
    audit::record(
        conn,
        now,
        info,
        Event {
            tenant_id: &user.tenant_id,
            actor: audit::user(user.id),
            action: "auth.backup_code.used",
            target: queue_audit_client::Party::new("backup_code", id.to_string()),
            payload: if legacy { serde_json::json!({"legacy": true}) } else { serde_json::json!({}) },
        },
    )
    .await?;
    let remaining = remaining(conn, user.id).await?;
    notify::queue(conn, mail, now, info, user, Notice::RecoveredWithBackupCode { remaining }).await?;
    Ok(Some(user.clone()))
}
