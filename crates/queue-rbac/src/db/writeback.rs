//! The write-back to Raptor (issue 19, item 3): `legacy_principals` (which Queue users came from
//! Raptor, as which customer) and the outbox `legacy_writeback` (queue-platform's
//! `writeback::WRITEBACK_DDL`: rows written in the transaction of the change they reflect; the
//! relay sends and marks them; here, what rbac itself reads of them).

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Conn;
use super::schema::rbac::{legacy_principals as p, legacy_writeback as w, rbac_grants as g};

/// The outbox, schema-qualified, as the relay and `writeback::enqueue` take it.
pub const TABLE: &str = "rbac.legacy_writeback";
/// What a grant row sends to Raptor: its create, or its revoke.
pub const GRANT_CREATE: &str = "grant.create";
pub const GRANT_REVOKE: &str = "grant.revoke";

/// Whether the grant has a create row that did not fail: a grant made at Queue for a Raptor
/// user, whose revoke is written back too even before it has Raptor's id.
pub async fn has_create(conn: &mut Conn, grant: Uuid) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        w::table.filter(w::subject.eq(grant)).filter(w::kind.eq(GRANT_CREATE)).filter(w::failed_at.is_null()),
    ))
    .get_result(conn)
    .await
}

/// Of `grants`, those with a create row that did not fail ([`has_create`] for a batch).
pub async fn with_create(conn: &mut Conn, grants: &[Uuid]) -> QueryResult<Vec<Uuid>> {
    w::table
        .filter(w::subject.eq_any(grants))
        .filter(w::kind.eq(GRANT_CREATE))
        .filter(w::failed_at.is_null())
        .select(w::subject.assume_not_null())
        .distinct()
        .load(conn)
        .await
}

/// Of Raptor's rows `legacy_ids`, those that are grants made at Queue and written back:
/// (Raptor's id, the grant) ([`grant_created_as`] for a batch).
pub async fn created_as(conn: &mut Conn, legacy_ids: &[&str]) -> QueryResult<Vec<(String, Uuid)>> {
    w::table
        .filter(w::kind.eq(GRANT_CREATE))
        .filter(w::legacy_id.eq_any(legacy_ids))
        .select((w::legacy_id.assume_not_null(), w::subject.assume_not_null()))
        .load(conn)
        .await
}

/// The Raptor id a grant's delivered create was answered with (before the linker stored it).
pub async fn delivered_create_id(conn: &mut Conn, grant: Uuid) -> QueryResult<Option<String>> {
    w::table
        .filter(w::subject.eq(grant))
        .filter(w::kind.eq(GRANT_CREATE))
        .filter(w::delivered_at.is_not_null())
        .select(w::legacy_id)
        .order(w::id.desc())
        .first::<Option<String>>(conn)
        .await
        .optional()
        .map(Option::flatten)
}

/// Grants whose create was delivered (Raptor answered an id) and that do not carry it yet:
/// `(grant, Raptor id)`, oldest first.
pub async fn delivered_unlinked(conn: &mut Conn, limit: i64) -> QueryResult<Vec<(Uuid, String)>> {
    let rows: Vec<(Option<Uuid>, Option<String>)> = w::table
        .inner_join(g::table.on(w::subject.eq(g::id.nullable())))
        .filter(w::kind.eq(GRANT_CREATE))
        .filter(w::delivered_at.is_not_null())
        .filter(w::legacy_id.is_not_null())
        .filter(g::legacy_id.is_null())
        .order(w::id)
        .limit(limit)
        .select((w::subject, w::legacy_id))
        .load(conn)
        .await?;
    Ok(rows.into_iter().filter_map(|(s, l)| Some((s?, l?))).collect())
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

/// A role's Raptor row id, if it has one.
pub async fn role_legacy_id(conn: &mut Conn, role: Uuid) -> QueryResult<Option<String>> {
    use super::schema::rbac::rbac_roles as r;
    r::table
        .filter(r::id.eq(role))
        .select(r::legacy_id)
        .first::<Option<String>>(conn)
        .await
        .optional()
        .map(Option::flatten)
}
