//! The write-back to Raptor (issue 19, item 3): `legacy_principals` (which Queue users came from
//! Raptor, as which customer) and the outbox `legacy_writeback` (what to send to Raptor, written
//! in the transaction of the change it reflects; the relay sends, marks and reports the rows).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Conn;
use super::schema::rbac::{legacy_principals as p, legacy_writeback as w};

/// What a grant row sends to Raptor: its create, or its revoke.
pub const GRANT_CREATE: &str = "grant.create";
pub const GRANT_REVOKE: &str = "grant.revoke";

/// The key a grant's rows are ordered by.
pub fn grant_key(id: Uuid) -> String {
    format!("grant:{id}")
}

/// A row to send.
#[derive(Debug, Insertable)]
#[diesel(table_name = w)]
pub struct NewWriteBack {
    pub kind: &'static str,
    pub key: String,
    pub record_id: Uuid,
    pub body: serde_json::Value,
}

pub async fn insert(conn: &mut Conn, row: &NewWriteBack) -> QueryResult<()> {
    diesel::insert_into(w::table).values(row).execute(conn).await.map(drop)
}

/// Whether the grant has a create row (delivered or not): a grant made at Queue for a Raptor
/// user, whose revoke is written back too even before it has Raptor's id.
pub async fn has_create(conn: &mut Conn, grant: Uuid) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        w::table.filter(w::record_id.eq(grant)).filter(w::kind.eq(GRANT_CREATE)).filter(w::failed_at.is_null()),
    ))
    .get_result(conn)
    .await
}

/// The customer ids of some Queue users, for those imported from Raptor.
pub async fn legacy_ids_of(conn: &mut Conn, principals: &[&str]) -> QueryResult<Vec<(String, String)>> {
    p::table.filter(p::principal_id.eq_any(principals)).select((p::principal_id, p::legacy_id)).load(conn).await
}

/// The stored pairs touching these principals or these customers.
pub async fn pairs_touching(
    conn: &mut Conn,
    principals: &[&str],
    legacy_ids: &[&str],
) -> QueryResult<Vec<(String, String)>> {
    p::table
        .filter(p::principal_id.eq_any(principals).or(p::legacy_id.eq_any(legacy_ids)))
        .select((p::principal_id, p::legacy_id))
        .load(conn)
        .await
}

/// Records new pairs (`(principal_id, legacy_id)`), none of them stored before.
pub async fn insert_principals(conn: &mut Conn, pairs: &[(String, String)]) -> QueryResult<()> {
    let rows: Vec<_> = pairs.iter().map(|(pr, l)| (p::principal_id.eq(pr), p::legacy_id.eq(l))).collect();
    diesel::insert_into(p::table).values(rows).execute(conn).await.map(drop)
}

/// The backlog of one kind: pending and failed rows, the oldest pending, the newest error.
#[derive(Debug, QueryableByName)]
pub struct KindBacklog {
    #[diesel(sql_type = Text)]
    pub kind: String,
    #[diesel(sql_type = BigInt)]
    pub pending: i64,
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
    #[diesel(sql_type = BigInt)]
    pub delivered: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub oldest_pending_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Integer>)]
    pub attempts: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
}

/// Hand-written: per kind, the counts and the error of the most recent attempt among the rows
/// still owed (pending or failed).
const BACKLOG: &str = "\
SELECT kind, \
       count(*) FILTER (WHERE delivered_at IS NULL AND failed_at IS NULL) AS pending, \
       count(*) FILTER (WHERE failed_at IS NOT NULL) AS failed, \
       count(*) FILTER (WHERE delivered_at IS NOT NULL) AS delivered, \
       min(created_at) FILTER (WHERE delivered_at IS NULL AND failed_at IS NULL) AS oldest_pending_at, \
       max(attempts) FILTER (WHERE delivered_at IS NULL) AS attempts, \
       (array_agg(last_error ORDER BY id DESC) FILTER (WHERE delivered_at IS NULL AND last_error IS NOT NULL))[1] \
         AS last_error \
  FROM rbac.legacy_writeback GROUP BY kind ORDER BY kind";

pub async fn backlog(conn: &mut Conn) -> QueryResult<Vec<KindBacklog>> {
    diesel::sql_query(BACKLOG).load(conn).await
}

/// A role's Raptor row id, if it has one.
pub async fn role_legacy_id(conn: &mut Conn, role: Uuid) -> QueryResult<Option<String>> {
    use super::schema::rbac::rbac_roles as r;
    r::table.filter(r::id.eq(role)).select(r::legacy_id).first::<Option<String>>(conn).await.optional().map(Option::flatten)
}
