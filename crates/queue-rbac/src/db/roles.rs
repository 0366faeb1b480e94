//! `rbac_roles`, `rbac_role_permissions` and `rbac_permissions`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use std::collections::HashMap;
use uuid::Uuid;

use super::Conn;
use super::schema::rbac::{rbac_permissions as p, rbac_role_permissions as rp, rbac_roles as r};

/// A role without its permissions ([`permissions_of`] reads those).
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = r, check_for_backend(diesel::pg::Pg))]
pub struct RoleRow {
    pub id: Uuid,
    pub name: String,
    pub tenant_id: Option<String>,
    pub builtin: bool,
    pub description: String,
    /// Raptor's row id, for a role imported from Raptor.
    pub legacy_id: Option<String>,
}

/// Built-in roles and, with `tenant`, that tenant's own: built-in first, then by name.
pub async fn list(conn: &mut Conn, tenant: Option<&str>) -> QueryResult<Vec<RoleRow>> {
    let mut q = r::table.select(RoleRow::as_select()).into_boxed();
    q = match tenant {
        Some(t) => q.filter(r::tenant_id.is_null().or(r::tenant_id.eq(t))),
        None => q.filter(r::tenant_id.is_null()),
    };
    q.order((r::builtin.desc(), r::name)).load(conn).await
}

/// The role a name means for a tenant: the tenant's own role of that name, else the built-in.
pub async fn by_name(conn: &mut Conn, name: &str, tenant: Option<&str>) -> QueryResult<Option<RoleRow>> {
    let mut q = r::table.select(RoleRow::as_select()).filter(r::name.eq(name)).into_boxed();
    q = match tenant {
        Some(t) => q.filter(r::tenant_id.is_null().or(r::tenant_id.eq(t))),
        None => q.filter(r::tenant_id.is_null()),
    };
    q.order(r::tenant_id.asc().nulls_last()).first(conn).await.optional()
}

/// The permissions of each of `roles`, sorted (a role without any is absent).
pub async fn permissions_of(conn: &mut Conn, roles: &[Uuid]) -> QueryResult<HashMap<Uuid, Vec<String>>> {
    let rows: Vec<(Uuid, String)> = rp::table
        .filter(rp::role_id.eq_any(roles))
        .order((rp::role_id, rp::permission))
        .select((rp::role_id, rp::permission))
        .load(conn)
        .await?;
    Ok(group(rows))
}

/// Every role's permissions, sorted.
pub async fn all_permissions(conn: &mut Conn) -> QueryResult<HashMap<Uuid, Vec<String>>> {
    let rows: Vec<(Uuid, String)> =
        rp::table.order((rp::role_id, rp::permission)).select((rp::role_id, rp::permission)).load(conn).await?;
    Ok(group(rows))
}

fn group(rows: Vec<(Uuid, String)>) -> HashMap<Uuid, Vec<String>> {
    let mut by_role: HashMap<Uuid, Vec<String>> = HashMap::new();
    for (role, permission) in rows {
        by_role.entry(role).or_default().push(permission);
    }
    by_role
}

/// Which of `names` are permissions that exist.
pub async fn known_permissions(conn: &mut Conn, names: &[String]) -> QueryResult<Vec<String>> {
    p::table.filter(p::name.eq_any(names)).select(p::name).load(conn).await
}

/// A tenant's own role, with its permissions; `created_at` defaults to now (an imported role
/// keeps Raptor's).
pub async fn insert(
    conn: &mut Conn,
    role: &RoleRow,
    permissions: &[String],
    created_by: &str,
    created_at: Option<DateTime<Utc>>,
) -> QueryResult<()> {
    diesel::insert_into(r::table)
        .values((
            r::id.eq(role.id),
            r::name.eq(&role.name),
            r::tenant_id.eq(role.tenant_id.as_deref()),
            r::builtin.eq(false),
            r::description.eq(&role.description),
            r::created_by.eq(created_by),
            r::legacy_id.eq(role.legacy_id.as_deref()),
            created_at.map(|at| r::created_at.eq(at)),
        ))
        .execute(conn)
        .await?;
    if permissions.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = permissions.iter().map(|perm| (rp::role_id.eq(role.id), rp::permission.eq(perm))).collect();
    diesel::insert_into(rp::table).values(rows).execute(conn).await.map(drop)
}

/// The role imported from Raptor's row `legacy_id`.
pub async fn by_legacy_id(conn: &mut Conn, legacy_id: &str) -> QueryResult<Option<RoleRow>> {
    r::table.select(RoleRow::as_select()).filter(r::legacy_id.eq(legacy_id)).first(conn).await.optional()
}

/// The role named `name` exactly where it lives: built in (`tenant` `None`) or the tenant's own
/// (no fallback to the built-in, unlike [`by_name`]).
pub async fn by_name_exact(conn: &mut Conn, name: &str, tenant: Option<&str>) -> QueryResult<Option<RoleRow>> {
    let mut q = r::table.select(RoleRow::as_select()).filter(r::name.eq(name)).into_boxed();
    q = match tenant {
        Some(t) => q.filter(r::tenant_id.eq(t)),
        None => q.filter(r::tenant_id.is_null()),
    };
    q.first(conn).await.optional()
}

/// Links a role defined at Queue to Raptor's row `legacy_id`; false if it has a legacy id already.
pub async fn link_legacy(conn: &mut Conn, id: Uuid, legacy_id: &str) -> QueryResult<bool> {
    let n = diesel::update(r::table.filter(r::id.eq(id)).filter(r::legacy_id.is_null()))
        .set(r::legacy_id.eq(legacy_id))
        .execute(conn)
        .await?;
    Ok(n == 1)
}
