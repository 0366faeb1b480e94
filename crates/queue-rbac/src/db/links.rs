//! `rbac_audit_links`: in every transaction that changes roles or grants, the audit event written
//! for it (reconcile matches shadow rows to these by transaction id, which the column defaults to).

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Conn;
use super::schema::rbac::rbac_audit_links as l;

/// Records, in the current transaction, which audit event was written for it.
pub async fn link(conn: &mut Conn, audit_event_id: Uuid, tenant: &str, action: &str) -> QueryResult<()> {
    diesel::insert_into(l::table)
        .values((l::audit_event_id.eq(audit_event_id), l::tenant_id.eq(tenant), l::action.eq(action)))
        .execute(conn)
        .await
        .map(drop)
}

/// Links many audit events (`(event id, tenant, action)`) with one statement.
pub async fn link_many(conn: &mut Conn, links: &[(Uuid, &str, &str)]) -> QueryResult<()> {
    let rows: Vec<_> = links
        .iter()
        .map(|(id, tenant, action)| (l::audit_event_id.eq(*id), l::tenant_id.eq(*tenant), l::action.eq(*action)))
        .collect();
    diesel::insert_into(l::table).values(&rows).execute(conn).await.map(drop)
}
