//! Roles: the built-in ones and each tenant's own, which a tenant defines (audited first, like a
//! grant).

use chrono::Utc;
use queue_audit_client::Party;
use queue_platform::db::Db;
use serde_json::json;
use uuid::Uuid;

use super::model::{Role, Scope, check_id, check_permission};
use super::prewrite::{Applied, Apply, Change, Prewriter};
use super::{Actor, ActorKind, Error, Origin, reach, rules};
use crate::db::Conn;
use crate::db::roles::{self as rows, RoleRow};

/// A tenant's own role asked for.
#[derive(Debug, Clone)]
pub struct NewRole {
    pub name: String,
    pub tenant_id: String,
    pub permissions: Vec<String>,
    pub description: String,
}

/// Built-in roles and, with `tenant`, that tenant's own.
#[tracing::instrument(skip_all)]
pub async fn list(db: &Db, tenant: Option<&str>) -> Result<Vec<Role>, Error> {
    let mut conn = db.conn().await?;
    let found = rows::list(&mut conn, tenant).await?;
    with_permissions(&mut conn, found).await
}

/// The role a name means for a tenant: the tenant's own role of that name, else the built-in.
pub async fn by_name(db: &Db, name: &str, tenant: Option<&str>) -> Result<Option<Role>, Error> {
    by_name_on(&mut *db.conn().await?, name, tenant).await
}

/// [`by_name`] on a connection the caller holds.
pub async fn by_name_on(conn: &mut Conn, name: &str, tenant: Option<&str>) -> Result<Option<Role>, Error> {
    let Some(found) = rows::by_name(conn, name, tenant).await? else { return Ok(None) };
    Ok(with_permissions(conn, vec![found]).await?.pop())
}

async fn with_permissions(conn: &mut Conn, found: Vec<RoleRow>) -> Result<Vec<Role>, Error> {
    let ids: Vec<Uuid> = found.iter().map(|r| r.id).collect();
    let mut permissions = rows::permissions_of(conn, &ids).await?;
    Ok(found
        .into_iter()
        .map(|r| {
            let p = permissions.remove(&r.id).unwrap_or_default();
            Role::from_row(r, p)
        })
        .collect())
}

/// A role name ([`rules::is_role_name`]); `field` names it in the error.
pub fn check_name(field: &str, name: &str) -> Result<(), Error> {
    if rules::is_role_name(name) {
        Ok(())
    } else {
        Err(Error::invalid(field, "1-64 characters: lowercase letters, digits, _ . - (a letter first)"))
    }
}

fn check_new(req: &NewRole) -> Result<Vec<String>, Error> {
    check_id("tenant_id", &req.tenant_id)?;
    check_name("name", &req.name)?;
    if req.permissions.is_empty() || req.permissions.len() > rules::MAX_ROLE_PERMISSIONS {
        return Err(Error::invalid("permissions", "must list 1 to 64 permissions"));
    }
    let mut permissions = req.permissions.clone();
    for (i, p) in permissions.iter().enumerate() {
        check_permission(&format!("permissions[{i}]"), p)?;
    }
    permissions.sort();
    permissions.dedup();
    if !rules::is_description(&req.description) {
        return Err(Error::invalid("description", "at most 1000 characters, no NUL"));
    }
    Ok(permissions)
}

/// Defines a tenant's own role, audited first like a grant. A user needs `rbac.roles` and every
/// permission of the new role in that tenant.
#[tracing::instrument(skip_all)]
pub async fn create(w: &Prewriter, actor: &Actor, req: NewRole, origin: &Origin) -> Result<(Role, i64), Error> {
    let permissions = check_new(&req)?;
    {
        let mut conn = w.db.conn().await?;
        let known = rows::known_permissions(&mut conn, &permissions).await?;
        if let Some(m) = permissions.iter().find(|p| !known.contains(p)) {
            // The permissions are stored state, not the request's shape: unknown is a 404.
            return Err(Error::NotFound(format!("unknown permission `{m}`")));
        }
        if rows::by_name(&mut conn, &req.name, Some(&req.tenant_id)).await?.is_some() {
            return Err(Error::Conflict(format!("a role `{}` exists for this tenant", req.name)));
        }
    }
    let scope = Scope::Tenant { tenant_id: req.tenant_id.clone() };
    match &actor.kind {
        ActorKind::Service { trusted: true, .. } => {}
        ActorKind::Service { issuer, .. } => {
            return Err(Error::Forbidden(format!("service `{issuer}` may not define roles")));
        }
        ActorKind::User { user_id } => {
            let mut needed = vec!["rbac.roles".to_string()];
            needed.extend(permissions.iter().cloned());
            reach::require(&w.checker, user_id, &scope, &needed).await?;
        }
    }
    let role = Role {
        id: Uuid::new_v4(),
        name: req.name,
        tenant_id: Some(req.tenant_id.clone()),
        builtin: false,
        description: req.description,
        permissions,
    };
    let event_id = Uuid::new_v4();
    let change = Change {
        event_id,
        tenant: &req.tenant_id,
        action: "rbac.role.created",
        actor: actor.party.clone(),
        target: Party::new("role", role.id.to_string()),
        occurred_at: Utc::now(),
        payload: json!({ "role": role }),
    };
    let row = RoleRow {
        id: role.id,
        name: role.name.clone(),
        tenant_id: role.tenant_id.clone(),
        builtin: false,
        description: role.description.clone(),
        legacy_id: None,
    };
    let apply =
        Apply::InsertRole { row: &row, permissions: &role.permissions, created_by: &actor.label, created_at: None };
    match w.write(change, origin, apply).await? {
        Applied::Done(revision) => Ok((role, revision)),
        Applied::Nothing => Err(Error::Internal(anyhow::anyhow!("a role's insert reported nothing to do"))),
    }
}
