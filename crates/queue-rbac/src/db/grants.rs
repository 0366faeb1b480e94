//! `rbac_grants`, read with the name of each grant's role.

use chrono::{DateTime, Utc};
use diesel::dsl::now;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use super::Conn;
use super::schema::rbac::{rbac_grants as g, rbac_roles as r};

/// A grant row joined with its role's name.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = g, check_for_backend(diesel::pg::Pg))]
pub struct GrantRow {
    pub id: Uuid,
    pub principal_id: String,
    pub role_id: Uuid,
    #[diesel(select_expression = r::name)]
    pub role_name: String,
    pub scope_type: String,
    pub tenant_id: Option<String>,
    pub ticket_id: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub granted_by: String,
    pub reason: String,
    pub granted_at: DateTime<Utc>,
    pub audit_event_id: Uuid,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
}

/// A new grant (the columns a grant is created with).
#[derive(Debug, Insertable)]
#[diesel(table_name = g)]
pub struct NewGrantRow<'a> {
    pub id: Uuid,
    pub principal_id: &'a str,
    pub role_id: Uuid,
    pub scope_type: &'a str,
    pub tenant_id: Option<&'a str>,
    pub ticket_id: Option<&'a str>,
    pub expires_at: Option<DateTime<Utc>>,
    pub granted_by: &'a str,
    pub reason: &'a str,
    pub granted_at: DateTime<Utc>,
    pub audit_event_id: Uuid,
    /// Raptor's row id, for a grant imported from Raptor.
    pub legacy_id: Option<&'a str>,
    /// An imported grant revoked at Raptor comes in revoked (`revoked_by` set with it).
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<&'a str>,
    pub revoke_reason: Option<&'a str>,
    pub revoke_event_id: Option<Uuid>,
    /// Set when the grant had expired before it was imported: its import event says so, and the
    /// expiry job does not announce an expiry that happened at Raptor.
    pub expiry_recorded_at: Option<DateTime<Utc>>,
}

pub async fn by_id(conn: &mut Conn, id: Uuid) -> QueryResult<Option<GrantRow>> {
    g::table.inner_join(r::table).filter(g::id.eq(id)).select(GrantRow::as_select()).first(conn).await.optional()
}

/// Filters of `GET /grants`: `in_force_at` keeps the grants in force at that instant;
/// without it, every grant (revoked and expired ones too).
#[derive(Debug, Default, Clone)]
pub struct GrantFilter<'a> {
    pub principal_id: Option<&'a str>,
    pub tenant_id: Option<&'a str>,
    pub ticket_id: Option<&'a str>,
    pub in_force_at: Option<DateTime<Utc>>,
    pub limit: i64,
}

pub async fn list(conn: &mut Conn, f: &GrantFilter<'_>) -> QueryResult<Vec<GrantRow>> {
    let mut q = g::table.inner_join(r::table).select(GrantRow::as_select()).into_boxed();
    if let Some(p) = f.principal_id {
        q = q.filter(g::principal_id.eq(p));
    }
    if let Some(t) = f.tenant_id {
        q = q.filter(g::tenant_id.eq(t));
    }
    if let Some(k) = f.ticket_id {
        q = q.filter(g::ticket_id.eq(k));
    }
    if let Some(at) = f.in_force_at {
        q = q
            .filter(g::granted_at.le(at))
            .filter(g::revoked_at.is_null().or(g::revoked_at.gt(at)))
            .filter(g::expires_at.is_null().or(g::expires_at.gt(at)));
    }
    q.order((g::granted_at, g::id)).limit(f.limit).load(conn).await
}

/// Grants in force at `at` that reach a ticket (global ones, the tenant's, the ticket's), by
/// principal.
pub async fn reaching_ticket(
    conn: &mut Conn,
    tenant: &str,
    ticket: &str,
    at: DateTime<Utc>,
) -> QueryResult<Vec<GrantRow>> {
    let reaches = g::scope_type
        .eq("global")
        .or(g::scope_type.eq("tenant").and(g::tenant_id.eq(tenant)))
        .or(g::scope_type.eq("ticket").and(g::tenant_id.eq(tenant)).and(g::ticket_id.eq(ticket)));
    g::table
        .inner_join(r::table)
        .filter(reaches)
        .filter(g::granted_at.le(at))
        .filter(g::revoked_at.is_null().or(g::revoked_at.gt(at)))
        .filter(g::expires_at.is_null().or(g::expires_at.gt(at)))
        .order((g::principal_id, g::granted_at))
        .select(GrantRow::as_select())
        .load(conn)
        .await
}

/// An unrevoked, unexpired grant as the check engine reads it (no role name: it joins the
/// grants with its own copy of the roles' permissions).
#[derive(Debug, Queryable)]
pub struct ActiveGrantRow {
    pub principal_id: String,
    pub id: Uuid,
    pub role_id: Uuid,
    pub scope_type: String,
    pub tenant_id: Option<String>,
    pub ticket_id: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The active grants of some principals.
pub async fn active_of(conn: &mut Conn, principals: &[&str]) -> QueryResult<Vec<ActiveGrantRow>> {
    g::table
        .filter(g::principal_id.eq_any(principals))
        .filter(g::revoked_at.is_null())
        .filter(g::expires_at.is_null().or(g::expires_at.gt(now)))
        .select((g::principal_id, g::id, g::role_id, g::scope_type, g::tenant_id, g::ticket_id, g::expires_at))
        .load(conn)
        .await
}

/// The grants imported from Raptor's rows `legacy_ids`, with their legacy ids (one query for an
/// import batch).
pub async fn by_legacy_ids(conn: &mut Conn, legacy_ids: &[&str]) -> QueryResult<Vec<(String, GrantRow)>> {
    g::table
        .inner_join(r::table)
        .filter(g::legacy_id.eq_any(legacy_ids))
        .select((g::legacy_id.assume_not_null(), GrantRow::as_select()))
        .load(conn)
        .await
}

/// Inserts many grants with one statement (an import batch: at most 1000 rows).
pub async fn insert_many(conn: &mut Conn, grants: &[NewGrantRow<'_>]) -> QueryResult<()> {
    diesel::insert_into(g::table).values(grants).execute(conn).await.map(drop)
}

pub async fn insert(conn: &mut Conn, grant: &NewGrantRow<'_>) -> QueryResult<()> {
    diesel::insert_into(g::table).values(grant).execute(conn).await.map(drop)
}

/// Revokes a grant that is not revoked yet; false if it already was.
pub async fn revoke(
    conn: &mut Conn,
    id: Uuid,
    by: &str,
    reason: &str,
    at: DateTime<Utc>,
    event: Uuid,
) -> QueryResult<bool> {
    let n = diesel::update(g::table.filter(g::id.eq(id)).filter(g::revoked_at.is_null()))
        .set((g::revoked_at.eq(at), g::revoked_by.eq(by), g::revoke_reason.eq(reason), g::revoke_event_id.eq(event)))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// Grants whose expiry passed and is not in the audit log yet (unrevoked ones only), oldest
/// expiry first, locked for this transaction so that two replicas do not both record one
/// (`FOR UPDATE SKIP LOCKED` on the grants alone: another replica's round skips them, and the
/// roles stay unlocked).
pub async fn unrecorded_expiries(conn: &mut Conn, limit: i64) -> QueryResult<Vec<GrantRow>> {
    let ids: Vec<Uuid> = g::table
        .filter(g::expires_at.le(now))
        .filter(g::expiry_recorded_at.is_null())
        .filter(g::revoked_at.is_null())
        .order(g::expires_at)
        .limit(limit)
        .select(g::id)
        .for_update()
        .skip_locked()
        .load(conn)
        .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    g::table
        .inner_join(r::table)
        .filter(g::id.eq_any(&ids))
        .order(g::expires_at)
        .select(GrantRow::as_select())
        .load(conn)
        .await
}

pub async fn mark_expiry_recorded(conn: &mut Conn, id: Uuid) -> QueryResult<()> {
    diesel::update(g::table.filter(g::id.eq(id))).set(g::expiry_recorded_at.eq(now)).execute(conn).await.map(drop)
}

/// Gives a grant made at Queue the Raptor row id its write-back created; false if it has one.
pub async fn link_legacy(conn: &mut Conn, id: Uuid, legacy_id: &str) -> QueryResult<bool> {
    let n = diesel::update(g::table.filter(g::id.eq(id)).filter(g::legacy_id.is_null()))
        .set(g::legacy_id.eq(legacy_id))
        .execute(conn)
        .await?;
    Ok(n == 1)
}

/// A grant's Raptor row id, if it has one.
pub async fn legacy_id_of(conn: &mut Conn, id: Uuid) -> QueryResult<Option<String>> {
    g::table
        .filter(g::id.eq(id))
        .select(g::legacy_id)
        .first::<Option<String>>(conn)
        .await
        .optional()
        .map(Option::flatten)
}
