//! Backup codes (`queue_backup_codes`): 10 codes of 65 bits, shown once, stored as HMACs under
//! the pepper. Redeeming is one conditional UPDATE (`used_at IS NULL`), so of any number of
//! concurrent redeems of one code exactly one succeeds. A new set voids the old.

use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
use diesel_async::{AsyncConnection, RunQueryDsl};
use queue_platform::ApiError;
use queue_platform::db::prepared;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::audit::{self, Event};
use super::crypto::{self, Pepper};
use super::sessions::Session;
use super::users::{self, EmailAddress, User};
use super::{Conn, RequestInfo, Result};
use crate::db::schema::queue_backup_codes as bc;

pub const COUNT: usize = 10;
const PURPOSE: &str = "backup-code";

fn mac(pepper: &Pepper, user_id: Uuid, normalised: &str) -> Vec<u8> {
    pepper.mac(PURPOSE, format!("{user_id}\0{normalised}").as_bytes())
}

/// A new set for the session's user; the old set is void. Returns the codes (shown once).
#[tracing::instrument(skip_all)]
pub async fn generate(
    conn: &mut Conn,
    pepper: &Pepper,
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

/// Redeems a code; `None` for any failure (unknown address, wrong or used code), which the
/// caller answers identically.
#[tracing::instrument(skip_all)]
pub async fn redeem(
    conn: &mut Conn,
    pepper: &Pepper,
    now: DateTime<Utc>,
    info: &RequestInfo,
    tenant: &str,
    email: &EmailAddress,
    code: &str,
) -> Result<Option<User>> {
    let Some(user) = users::find_by_email(conn, tenant, email).await?.filter(|u| u.status == "active") else {
        return Ok(None);
    };
    let Some(n) = crypto::normalise_backup_code(code) else { return Ok(None) };
    let hash = mac(pepper, user.id, &n);
    conn.transaction::<_, super::Error, _>(async |conn| {
        // The conditional UPDATE is the whole concurrency story: one row, one winner.
        let used: Option<Uuid> = prepared(
            diesel::update(
                bc::table
                    .filter(bc::user_id.eq(user.id))
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
        let Some(id) = used else { return Ok(None) };
        audit::record(
            conn,
            now,
            info,
            Event {
                tenant_id: &user.tenant_id,
                actor: audit::user(user.id),
                action: "auth.backup_code.used",
                target: queue_audit_client::Party::new("backup_code", id.to_string()),
                payload: serde_json::json!({}),
            },
        )
        .await?;
        Ok(Some(user.clone()))
    })
    .await
}
