//! Reconcile: every change the shadow tables recorded on roles, role permissions and grants
//! that has no audit event. The service writes, in every transaction that changes these tables,
//! a link to the audit event it wrote first (`rbac_audit_links`, keyed by transaction id);
//! the shadow rows carry the transaction id too. A change whose transaction has no link was made
//! around the service — by hand in psql, say. `queuectl rbac-reconcile` runs the same function.

use chrono::{DateTime, Utc};
use queue_platform::db::Db;
use serde::Serialize;

use super::Error;
use crate::db::Conn;
use crate::db::shadow::{self, ShadowRow};

/// At most this many unaudited changes are reported.
const LIMIT: i64 = 10_000;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UnauditedChange {
    pub table: String,
    pub shadow_id: i64,
    pub operation: String,
    pub db_user: String,
    pub txid: i64,
    pub changed_at: DateTime<Utc>,
    #[schema(value_type = Object)]
    pub old_row: Option<serde_json::Value>,
    #[schema(value_type = Object)]
    pub new_row: Option<serde_json::Value>,
}

impl From<ShadowRow> for UnauditedChange {
    fn from(r: ShadowRow) -> Self {
        Self {
            table: r.table,
            shadow_id: r.shadow_id,
            operation: r.operation,
            db_user: r.db_user,
            txid: r.txid,
            changed_at: r.changed_at,
            old_row: r.old_row,
            new_row: r.new_row,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReconcileReport {
    /// Shadow rows looked at.
    pub checked: i64,
    /// The ones without an audit event, oldest first.
    pub unaudited: Vec<UnauditedChange>,
}

/// The report, on any connection to the rbac database (the service's, or `queuectl`'s).
pub async fn reconcile(conn: &mut Conn) -> Result<ReconcileReport, diesel::result::Error> {
    let checked = shadow::count(conn).await?;
    let unaudited = shadow::unlinked(conn, LIMIT).await?.into_iter().map(UnauditedChange::from).collect();
    Ok(ReconcileReport { checked, unaudited })
}

/// [`reconcile`] on a connection from the service's pool.
#[tracing::instrument(skip_all)]
pub(crate) async fn report(db: &Db) -> Result<ReconcileReport, Error> {
    Ok(reconcile(&mut *db.conn().await?).await?)
}
