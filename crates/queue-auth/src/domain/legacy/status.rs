//! What auth holds from Raptor (issue 19, item 4; `GET /internal/v1/import/status`): per kind,
//! the rows with a legacy id, how many of them are live, and the newest of Raptor's own times
//! among them (the sync watermark `queuectl legacy status` compares with Raptor's rows). Read-only.

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use serde::Serialize;

use super::super::Conn;

/// One kind as auth holds it.
#[derive(Debug, Serialize, diesel::QueryableByName, utoipa::ToSchema)]
pub struct KindStatus {
    /// `users`, `sessions`, `backup-codes` or `passkeys`.
    #[diesel(sql_type = Text)]
    pub kind: String,
    /// Rows imported from Raptor (their legacy id set).
    #[diesel(sql_type = BigInt)]
    pub imported: i64,
    /// Of those, the live ones: users not disabled; sessions neither revoked nor expired (idle or
    /// absolute) — the sessions carried over, whose `raptor_session` cookie signs in at Queue;
    /// backup codes neither used nor voided; passkeys all.
    #[diesel(sql_type = BigInt)]
    pub live: i64,
    /// The newest of Raptor's own times auth keeps for the kind: `created_at` (every kind), a
    /// session's revocation by Raptor, a code's `used_at`. Null when nothing is imported.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub newest_source_at: Option<DateTime<Utc>>,
    /// The newest change of an imported row at Queue (users only: the other tables have no
    /// `updated_at`; omitted for them).
    #[diesel(sql_type = Nullable<Timestamptz>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// Hand-written: one `UNION ALL` of four aggregates, which the DSL cannot combine. `$1` is now.
const STATUS: &str = "\
SELECT 'users'::text AS kind, count(*) AS imported, count(*) FILTER (WHERE status <> 'disabled') AS live, \
       max(created_at) AS newest_source_at, max(updated_at) AS updated_at \
  FROM auth.users WHERE legacy_id IS NOT NULL \
UNION ALL \
SELECT 'sessions', count(*), \
       count(*) FILTER (WHERE revoked_at IS NULL AND absolute_expires_at > $1 AND idle_expires_at > $1), \
       greatest(max(created_at), max(revoked_at) FILTER (WHERE revoked_reason = 'legacy')), NULL \
  FROM auth.queue_sessions WHERE legacy_id IS NOT NULL \
UNION ALL \
SELECT 'backup-codes', count(*), count(*) FILTER (WHERE used_at IS NULL AND voided_at IS NULL), \
       greatest(max(created_at), max(used_at)), NULL \
  FROM auth.queue_backup_codes WHERE legacy_id IS NOT NULL \
UNION ALL \
SELECT 'passkeys', count(*), count(*), max(created_at), NULL FROM auth.passkeys WHERE legacy_id IS NOT NULL";

/// Every kind, in the import's order.
pub async fn status(conn: &mut Conn, now: DateTime<Utc>) -> diesel::QueryResult<Vec<KindStatus>> {
    diesel::sql_query(STATUS).bind::<Timestamptz, _>(now).load(conn).await
}
