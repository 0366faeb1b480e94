//! Raptor's backup codes (`POST /internal/v1/import/backup-codes`): each keeps its werkzeug hash
//! (`legacy_hash`; `code_hash` stays NULL), verified at redeem (`domain::backup_codes::redeem`).
//! Used codes are imported used and stay used; a code imported unused and used at Raptor since
//! is marked used here with Raptor's time. The newest set wins ([`create`]). A hash method this
//! service cannot verify is refused, named.

use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, OptionalExtension, QueryDsl};
use diesel_async::RunQueryDsl;
use queue_audit_client::Party;
use queue_platform::db::prepared;
use serde::Deserialize;
use uuid::Uuid;

use super::super::Conn;
use super::super::import_batch::{ImportResult, Outcome};
use super::super::users::User;
use super::common::{Ctx, RecordResult, check_legacy_id, owner, record_event, refuse};
use super::werkzeug::Hash;
use crate::db::schema::auth::queue_backup_codes as bc;

/// A row of Raptor's `customer_backup_codes`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"legacy_id": "501", "user_legacy_id": "42", "werkzeug_hash": "scrypt:32768:8:1$LLmOouJrpX846GnN$e8b2ef63c7fb8279bdc25b0d5edf34343fa1ccf8998105ec2e1d31f4615277f969215864f42cba7eb8951078c96732cd9dc8561ecc962cd3ac319b2630c05433", "created_at": "2026-11-02T10:00:00Z", "used_at": null}))]
pub struct LegacyBackupCode {
    /// `customer_backup_codes.id` as decimal text.
    pub legacy_id: String,
    /// The customer's id: a user imported before.
    pub user_legacy_id: String,
    /// `code_hash` as Raptor stores it: `scrypt:N:r:p$salt$hex` or `pbkdf2:sha256:N$salt$hex`.
    pub werkzeug_hash: String,
    pub created_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

#[derive(diesel::Queryable)]
struct Existing {
    id: Uuid,
    user_id: Uuid,
    legacy_hash: Option<String>,
    used_at: Option<DateTime<Utc>>,
    voided_at: Option<DateTime<Utc>>,
}

/// Imports one code; see the module doc.
pub async fn import_one(conn: &mut Conn, ctx: &Ctx<'_>, r: &LegacyBackupCode) -> RecordResult<ImportResult> {
    check_legacy_id("legacy_id", &r.legacy_id)?;
    let hash = Hash::parse(&r.werkzeug_hash).or_else(refuse)?;
    let user = owner(conn, &r.user_legacy_id).await?;
    let existing = bc::table
        .filter(bc::legacy_id.eq(&r.legacy_id))
        .select((bc::id, bc::user_id, bc::legacy_hash, bc::used_at, bc::voided_at))
        .for_update()
        .first::<Existing>(conn)
        .await
        .optional()?;
    let Some(e) = existing else { return create(conn, ctx, r, &user, &hash).await };
    if e.user_id != user.id {
        return refuse("this code was imported for another user");
    }
    if e.legacy_hash.as_deref() != Some(r.werkzeug_hash.as_str()) {
        return refuse("werkzeug_hash differs from the code imported before");
    }
    // Used or voided at Queue stands; unused at Queue and used at Raptor since: used.
    let (Some(used_at), None, None) = (r.used_at, e.used_at, e.voided_at) else {
        return Ok(ImportResult::new(&r.legacy_id, Outcome::Unchanged, Some(e.id), None));
    };
    prepared(diesel::update(bc::table.find(e.id).filter(bc::used_at.is_null())).set(bc::used_at.eq(used_at)))
        .execute(conn)
        .await?;
    let payload = serde_json::json!({"changed": ["used_at"], "used_at": used_at});
    record_event(
        conn,
        ctx,
        &r.legacy_id,
        &user,
        Party::new("backup_code", e.id.to_string()),
        "auth.legacy.backup_code.updated",
        payload,
    )
    .await?;
    Ok(ImportResult::new(&r.legacy_id, Outcome::Updated, Some(e.id), Some("used at Raptor".into())))
}

/// A code never imported before. The newest set wins, as at both Raptor and Queue (Raptor deletes
/// the unused codes of the older set when it makes a new one, in one transaction, so one set
/// shares one `created_at`): an unused code older than a code the user already has here was
/// replaced and is `skipped`; an unused code newer than the user's unused codes here voids them.
async fn create(
    conn: &mut Conn,
    ctx: &Ctx<'_>,
    r: &LegacyBackupCode,
    user: &User,
    hash: &Hash,
) -> RecordResult<ImportResult> {
    let unused = r.used_at.is_none();
    if unused {
        let newer: i64 = bc::table
            .filter(bc::user_id.eq(user.id))
            .filter(bc::created_at.gt(r.created_at))
            .count()
            .get_result(conn)
            .await?;
        if newer > 0 {
            let why = "a newer set of backup codes replaced it".to_string();
            return Ok(ImportResult::new(&r.legacy_id, Outcome::Skipped, None, Some(why)));
        }
    }
    let voided = if unused {
        prepared(
            diesel::update(
                bc::table
                    .filter(bc::user_id.eq(user.id))
                    .filter(bc::created_at.lt(r.created_at))
                    .filter(bc::used_at.is_null())
                    .filter(bc::voided_at.is_null()),
            )
            .set(bc::voided_at.eq(ctx.now)),
        )
        .execute(conn)
        .await?
    } else {
        0
    };
    let id = Uuid::new_v4();
    prepared(diesel::insert_into(bc::table).values((
        bc::id.eq(id),
        bc::user_id.eq(user.id),
        // Raptor's codes of a user are one set at Queue, named by the user (sets are told apart
        // by `created_at` above); a set generated at Queue voids them like any older set.
        bc::set_id.eq(user.id),
        bc::legacy_hash.eq(&r.werkzeug_hash),
        bc::created_at.eq(r.created_at),
        bc::used_at.eq(r.used_at),
        bc::legacy_id.eq(&r.legacy_id),
    )))
    .execute(conn)
    .await?;
    let payload = serde_json::json!({"method": hash.method_name(), "used": !unused, "created_at": r.created_at,
        "voided_older": voided});
    record_event(
        conn,
        ctx,
        &r.legacy_id,
        user,
        Party::new("backup_code", id.to_string()),
        "auth.legacy.backup_code.imported",
        payload,
    )
    .await?;
    let reason = (voided > 0).then(|| format!("voided {voided} older unused code(s) of this user"));
    Ok(ImportResult::new(&r.legacy_id, Outcome::Created, Some(id), reason))
}
