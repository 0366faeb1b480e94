//! Reconcile: every change the shadow tables recorded on roles, role permissions and grants
//! that has no audit event. The service writes, in every transaction that changes these tables,
//! a link to the audit event it wrote first (`rbac_audit_links`, keyed by transaction id);
//! the shadow rows carry the transaction id too. A change whose transaction has no link was made
//! around the service — by hand in psql, say.

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use serde::Serialize;

use crate::store::Conn;

#[derive(Debug, Clone, Serialize, diesel::QueryableByName, utoipa::ToSchema)]
pub struct UnauditedChange {
    #[diesel(sql_type = Text)]
    pub table: String,
    #[diesel(sql_type = BigInt)]
    pub shadow_id: i64,
    #[diesel(sql_type = Text)]
    pub operation: String,
    #[diesel(sql_type = Text)]
    pub db_user: String,
    #[diesel(sql_type = BigInt)]
    pub txid: i64,
    #[diesel(sql_type = Timestamptz)]
    pub changed_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    #[schema(value_type = Object)]
    pub old_row: Option<serde_json::Value>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    #[schema(value_type = Object)]
    pub new_row: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReconcileReport {
    /// Shadow rows looked at.
    pub checked: i64,
    /// The ones without an audit event, oldest first.
    pub unaudited: Vec<UnauditedChange>,
}

const TABLES: [&str; 3] = ["rbac_roles", "rbac_role_permissions", "rbac_grants"];

pub async fn reconcile(conn: &mut Conn) -> Result<ReconcileReport, diesel::result::Error> {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let union = |select: &str| {
        TABLES
            .iter()
            .map(|t| format!("SELECT '{t}'::text AS \"table\", s.* FROM rbac.{t}_shadow s {select}"))
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    };
    let checked: N = diesel::sql_query(format!("SELECT count(*) AS n FROM ({}) x", union(""))).get_result(conn).await?;
    let unaudited: Vec<UnauditedChange> = diesel::sql_query(format!(
        "SELECT \"table\", shadow_id, operation, db_user, txid, changed_at, old_row, new_row FROM ({}) x \
         ORDER BY changed_at, shadow_id LIMIT 10000",
        union("WHERE NOT EXISTS (SELECT 1 FROM rbac.rbac_audit_links l WHERE l.txid = s.txid)")
    ))
    .load(conn)
    .await?;
    Ok(ReconcileReport { checked: checked.n, unaudited })
}
