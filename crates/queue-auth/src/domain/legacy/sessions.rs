//! Raptor's sessions as full Queue sessions (`POST /internal/v1/import/sessions`). The token
//! arrives only as its SHA-256 (queuectl hashes Raptor's plaintext), which is what auth stores of
//! any session (`sessions::token_hash`: SHA-256 of the cookie value's bytes), so the browser's
//! `raptor_session` value finds the session here. Raptor's absolute expiry is kept (never
//! later); the idle expiry is computed as auth computes it, from Raptor's last use, never past
//! the absolute one. Expired, idle and revoked sessions never imported before are skipped; one
//! imported before and revoked at Raptor since is revoked here (reason `legacy`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
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
use crate::db::schema::auth::queue_sessions as qs;

/// A row of Raptor's `customer_sessions`, its token hashed.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"legacy_id": "9001", "user_legacy_id": "42", "token_sha256": "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg", "created_at": "2026-12-01T08:00:00Z", "expires_at": "2026-12-15T08:00:00Z", "last_seen_at": "2026-12-07T16:58:00Z", "revoked_at": null, "ip": "203.0.113.7", "user_agent": "Mozilla/5.0"}))]
pub struct LegacySession {
    /// `customer_sessions.id` as decimal text.
    pub legacy_id: String,
    /// The customer's id (`customer_id`): a user imported before.
    pub user_legacy_id: String,
    /// SHA-256 of the `raptor_session` value's bytes, base64url without padding (32 bytes).
    /// Raptor's plaintext token is never sent.
    pub token_sha256: String,
    pub created_at: DateTime<Utc>,
    /// Raptor's fixed expiry: the Queue session's absolute expiry.
    pub expires_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(diesel::Queryable)]
struct Existing {
    id: Uuid,
    user_id: Uuid,
    token_hash: Vec<u8>,
    last_seen_at: DateTime<Utc>,
    absolute_expires_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

fn token_hash(r: &LegacySession) -> RecordResult<Vec<u8>> {
    match URL_SAFE_NO_PAD.decode(&r.token_sha256) {
        Ok(h) if h.len() == 32 => Ok(h),
        _ => refuse("token_sha256 must be a SHA-256 (32 bytes) as base64url without padding"),
    }
}

/// When the session was last used at Raptor: its last request, else its creation.
fn last_use(r: &LegacySession) -> DateTime<Utc> {
    r.last_seen_at.map_or(r.created_at, |t| t.max(r.created_at))
}

/// Imports one session; see the module doc.
pub async fn import_one(conn: &mut Conn, ctx: &Ctx<'_>, r: &LegacySession) -> RecordResult<ImportResult> {
    check_legacy_id("legacy_id", &r.legacy_id)?;
    let hash = token_hash(r)?;
    if r.expires_at <= r.created_at {
        return refuse("expires_at is not after created_at");
    }
    let user = owner(conn, &r.user_legacy_id).await?;
    let existing = qs::table
        .filter(qs::legacy_id.eq(&r.legacy_id))
        .select((qs::id, qs::user_id, qs::token_hash, qs::last_seen_at, qs::absolute_expires_at, qs::revoked_at))
        .for_update()
        .first::<Existing>(conn)
        .await
        .optional()?;
    match existing {
        Some(e) => update(conn, ctx, r, &user, &hash, e).await,
        None => create(conn, ctx, r, &user, hash).await,
    }
}

async fn create(
    conn: &mut Conn,
    ctx: &Ctx<'_>,
    r: &LegacySession,
    user: &User,
    hash: Vec<u8>,
) -> RecordResult<ImportResult> {
    let skip = |why: &str| Ok(ImportResult::new(&r.legacy_id, Outcome::Skipped, None, Some(why.to_string())));
    if r.revoked_at.is_some() {
        return skip("revoked at Raptor");
    }
    if r.expires_at <= ctx.now {
        return skip("expired at Raptor");
    }
    let last = last_use(r);
    let idle = (last + Duration::seconds(ctx.sessions.idle_timeout_secs)).min(r.expires_at);
    if idle <= ctx.now {
        return skip("unused at Raptor for longer than Queue's idle timeout");
    }
    let id = Uuid::new_v4();
    prepared(diesel::insert_into(qs::table).values((
        qs::id.eq(id),
        qs::token_hash.eq(hash),
        qs::user_id.eq(user.id),
        qs::tenant_id.eq(&user.tenant_id),
        qs::kind.eq("full"),
        qs::created_at.eq(r.created_at),
        qs::last_seen_at.eq(last),
        qs::idle_expires_at.eq(idle),
        qs::absolute_expires_at.eq(r.expires_at),
        qs::ip.eq(r.ip.as_deref().map(|i| i.chars().take(64).collect::<String>())),
        qs::user_agent.eq(r.user_agent.as_deref().map(|u| u.chars().take(512).collect::<String>())),
        qs::legacy_id.eq(&r.legacy_id),
    )))
    .execute(conn)
    .await?;
    let payload = serde_json::json!({"absolute_expires_at": r.expires_at, "created_at": r.created_at});
    record_event(
        conn,
        ctx,
        &r.legacy_id,
        user,
        Party::new("session", id.to_string()),
        "auth.legacy.session.imported",
        payload,
    )
    .await?;
    Ok(ImportResult::new(&r.legacy_id, Outcome::Created, Some(id), None))
}

/// A session imported before: revoked here when Raptor revoked it, its expiry shortened when
/// Raptor's is earlier, its idle expiry slid when Raptor saw it used since (by at least
/// `sessions.last_seen_interval_secs`, the step auth itself writes `last_seen` in). Queue's own
/// revocation stands.
async fn update(
    conn: &mut Conn,
    ctx: &Ctx<'_>,
    r: &LegacySession,
    user: &User,
    hash: &[u8],
    e: Existing,
) -> RecordResult<ImportResult> {
    if e.user_id != user.id {
        return refuse("this session was imported for another user");
    }
    if e.token_hash != hash {
        return refuse("token_sha256 differs from the session imported before");
    }
    let unchanged = Ok(ImportResult::new(&r.legacy_id, Outcome::Unchanged, Some(e.id), None));
    if e.revoked_at.is_some() {
        return unchanged;
    }
    if let Some(at) = r.revoked_at {
        prepared(
            diesel::update(qs::table.find(e.id))
                .set((qs::revoked_at.eq(at.min(ctx.now)), qs::revoked_reason.eq("legacy"))),
        )
        .execute(conn)
        .await?;
        let payload = serde_json::json!({"changed": ["revoked_at"], "revoked_at": at});
        record_event(
            conn,
            ctx,
            &r.legacy_id,
            user,
            Party::new("session", e.id.to_string()),
            "auth.legacy.session.updated",
            payload,
        )
        .await?;
        return Ok(ImportResult::new(&r.legacy_id, Outcome::Updated, Some(e.id), Some("revoked at Raptor".into())));
    }
    let absolute = e.absolute_expires_at.min(r.expires_at);
    let last = last_use(r);
    let slid = last - e.last_seen_at >= Duration::seconds(ctx.sessions.last_seen_interval_secs);
    let shortened = absolute < e.absolute_expires_at;
    if !slid && !shortened {
        return unchanged;
    }
    let last_seen = if slid { last } else { e.last_seen_at };
    let idle = (last_seen + Duration::seconds(ctx.sessions.idle_timeout_secs)).min(absolute);
    prepared(diesel::update(qs::table.find(e.id)).set((
        qs::last_seen_at.eq(last_seen),
        qs::idle_expires_at.eq(idle),
        qs::absolute_expires_at.eq(absolute),
    )))
    .execute(conn)
    .await?;
    let diff: Vec<&str> =
        [("last_seen_at", slid), ("expires_at", shortened)].into_iter().filter_map(|(f, c)| c.then_some(f)).collect();
    let payload = serde_json::json!({"changed": diff, "absolute_expires_at": absolute, "last_seen_at": last_seen});
    record_event(
        conn,
        ctx,
        &r.legacy_id,
        user,
        Party::new("session", e.id.to_string()),
        "auth.legacy.session.updated",
        payload,
    )
    .await?;
    let reason = format!("changed at Raptor: {}", diff.join(", "));
    Ok(ImportResult::new(&r.legacy_id, Outcome::Updated, Some(e.id), Some(reason)))
}
