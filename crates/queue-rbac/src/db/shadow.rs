//! The shadow tables of roles, role permissions and grants (docs/shadow-tables.md), read for
//! reconcile: the rows whose transaction has no audit link.

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;

use super::Conn;

/// A shadow row, with the table it shadows.
#[derive(Debug, diesel::QueryableByName)]
pub struct ShadowRow {
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
    pub old_row: Option<serde_json::Value>,
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub new_row: Option<serde_json::Value>,
}

const TABLES: [&str; 3] = ["rbac_roles", "rbac_role_permissions", "rbac_grants"];

/// Hand-written: one `UNION ALL` over the three shadow tables, each row labelled with its table
/// and ordered across all three, which the DSL cannot combine into one statement.
fn union(filter: &str) -> String {
    TABLES
        .iter()
        .map(|t| format!("SELECT '{t}'::text AS \"table\", s.* FROM rbac.{t}_shadow s {filter}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

/// How many shadow rows there are.
pub async fn count(conn: &mut Conn) -> diesel::QueryResult<i64> {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let n: N = diesel::sql_query(format!("SELECT count(*) AS n FROM ({}) x", union(""))).get_result(conn).await?;
    Ok(n.n)
}

/// The shadow rows without an audit link, oldest first, at most `limit`.
pub async fn unlinked(conn: &mut Conn, limit: i64) -> diesel::QueryResult<Vec<ShadowRow>> {
    diesel::sql_query(format!(
        "SELECT \"table\", shadow_id, operation, db_user, txid, changed_at, old_row, new_row FROM ({}) x \
         ORDER BY changed_at, shadow_id LIMIT $1",
        union("WHERE NOT EXISTS (SELECT 1 FROM rbac.rbac_audit_links l WHERE l.txid = s.txid)")
    ))
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await
}
