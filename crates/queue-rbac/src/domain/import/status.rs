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
  FROM rbac.rbac_roles WHERE legacy_id IS NOT NULL AND NOT builtin \
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
