//! What rbac holds from Raptor (issue 19, item 4; `GET /internal/v1/import/status`): per kind,
//! the rows with a legacy id, how many of them are live, and the newest of Raptor's own times
//! among them (the sync watermark `queuectl legacy status` compares with Raptor's rows), and the
//! write-back backlog (what is still owed to Raptor, `write_back`). Read-only.

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use queue_platform::db::Db;
use serde::Serialize;

use super::super::Error;
use crate::db::Conn;

/// One kind as rbac holds it.
#[derive(Debug, Serialize, diesel::QueryableByName, utoipa::ToSchema)]
pub struct KindStatus {
    /// `roles` or `grants`.
    #[diesel(sql_type = Text)]
    pub kind: String,
    /// Rows imported from Raptor (their legacy id set). Raptor's built-in roles are matched to
    /// Queue's own and carry no legacy id: they are not counted.
    #[diesel(sql_type = BigInt)]
    pub imported: i64,
    /// Of those, the live ones: roles all; grants in force (not revoked, not expired).
    #[diesel(sql_type = BigInt)]
    pub live: i64,
    /// The newest of Raptor's own times rbac keeps for the kind: a role's `created_at`, a
    /// grant's `granted_at` or `revoked_at`. Null when nothing is imported.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub newest_source_at: Option<DateTime<Utc>>,
}

/// Hand-written: one `UNION ALL` of two aggregates, which the DSL cannot combine. `$1` is now.
const STATUS: &str = "\
SELECT 'roles'::text AS kind, count(*) AS imported, count(*) AS live, max(created_at) AS newest_source_at \
  FROM rbac.rbac_roles WHERE legacy_id IS NOT NULL \
UNION ALL \
SELECT 'grants', count(*), count(*) FILTER (WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $1)), \
       greatest(max(granted_at), max(revoked_at)) \
  FROM rbac.rbac_grants WHERE legacy_id IS NOT NULL";

/// Both kinds, in the import's order, on any connection to the rbac database.
pub async fn status(conn: &mut Conn, now: DateTime<Utc>) -> Result<Vec<KindStatus>, diesel::result::Error> {
    diesel::sql_query(STATUS).bind::<Timestamptz, _>(now).load(conn).await
}

/// [`status`] on a connection from the service's pool.
#[tracing::instrument(skip_all)]
pub(crate) async fn report(db: &Db, now: DateTime<Utc>) -> Result<Vec<KindStatus>, Error> {
    Ok(status(&mut *db.conn().await?, now).await?)
}

/// The write-back backlog of one kind of row.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WriteBackKind {
    /// `grant.create` or `grant.revoke`.
    pub kind: String,
    /// Not delivered yet (being retried, or waiting for `[legacy] writeback_url`).
    pub pending: i64,
    /// Refused by Raptor for good (a 4xx other than 408/429): kept, never dropped.
    pub failed: i64,
    pub delivered: i64,
    /// When the oldest pending row was written.
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// The most attempts among the rows still owed.
    pub attempts: Option<i32>,
    /// The error of the newest row still owed that has one.
    pub last_error: Option<String>,
}

/// What rbac still owes Raptor: the rollback (`queuectl proxy rollback`) waits for it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WriteBackStatus {
    /// Whether `[legacy] writeback_url` is set (without it rows are recorded, nothing is sent).
    pub enabled: bool,
    pub pending: i64,
    pub failed: i64,
    pub delivered: i64,
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// Per kind, those with rows (delivered ones too).
    pub kinds: Vec<WriteBackKind>,
}

/// The backlog, from rbac's `legacy_writeback`.
#[tracing::instrument(skip_all)]
pub(crate) async fn write_back(db: &Db, enabled: bool) -> Result<WriteBackStatus, Error> {
    let rows = crate::db::writeback::backlog(&mut *db.conn().await?).await?;
    let kinds: Vec<WriteBackKind> = rows
        .into_iter()
        .map(|r| WriteBackKind {
            kind: r.kind,
            pending: r.pending,
            failed: r.failed,
            delivered: r.delivered,
            oldest_pending_at: r.oldest_pending_at,
            attempts: r.attempts,
            last_error: r.last_error,
        })
        .collect();
    Ok(WriteBackStatus {
        enabled,
        pending: kinds.iter().map(|k| k.pending).sum(),
        failed: kinds.iter().map(|k| k.failed).sum(),
        delivered: kinds.iter().map(|k| k.delivered).sum(),
        oldest_pending_at: kinds.iter().filter_map(|k| k.oldest_pending_at).min(),
        kinds,
    })
}
