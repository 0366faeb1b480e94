//! `rbac_revision` (the counter every change takes its revision from) and `rbac_changes` (what
//! changed at each revision), both written by the database's trigger.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::Conn;
use super::schema::rbac::{rbac_changes as ch, rbac_revision as rev};

pub async fn current(conn: &mut Conn) -> QueryResult<i64> {
    rev::table.filter(rev::id.eq(1)).select(rev::revision).first(conn).await
}

/// Changes in `(after, upto]`: (revision, principal or `None` for anyone).
pub async fn changes(conn: &mut Conn, after: i64, upto: i64) -> QueryResult<Vec<(i64, Option<String>)>> {
    ch::table
        .filter(ch::revision.gt(after))
        .filter(ch::revision.le(upto))
        .order(ch::revision)
        .select((ch::revision, ch::principal_id))
        .load(conn)
        .await
}
