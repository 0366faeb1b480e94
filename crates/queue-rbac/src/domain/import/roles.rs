//! Raptor's roles. A built-in (no tenant) must be Queue's built-in of that name with the same
//! permissions, or it is `refused` with the difference (an import never widens a built-in); the
//! first time it is linked to Raptor's row (`updated`: grants of it made at Queue are written back
//! to Raptor, issue 19 item 3), then `unchanged`. A tenant's role is created in its tenant with Raptor's time; a role of that name
//! defined at Queue before, with the same permissions, is linked (`updated`). Queue never
//! rewrites a role's permissions: a difference is refused, naming it.

use chrono::{DateTime, SubsecRound, Utc};
use queue_audit_client::Party;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashSet;
use uuid::Uuid;

use super::{ImportResult, Importer, Outcome, admit, permission_difference};
use crate::db::Conn;
use crate::db::roles::{self as rows, RoleRow};
use crate::domain::model::{Role, check_id, check_permission};
use crate::domain::prewrite::{Applied, Apply, Change, PLATFORM_TENANT};
use crate::domain::{Error, rules};

/// One row of Raptor's `rbac_roles` with its permissions.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"legacy_id": "12", "tenant_id": "6f1c2d4e-8a3b-4c5d-9e6f-7a8b9c0d1e2f", "name": "triage",
    "description": "first line", "permissions": ["ticket.read", "ticket.write"], "created_at": "2025-03-01T09:00:00Z"}))]
pub struct LegacyRole {
    /// Raptor's `rbac_roles.id`, as a decimal string.
    pub legacy_id: String,
    /// Null: a built-in role.
    #[serde(default)]
    pub tenant_id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub permissions: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// The record's permissions, sorted and without duplicates, or why it is refused.
fn permissions_of(rec: &LegacyRole) -> Result<Vec<String>, String> {
    if let Some(t) = &rec.tenant_id {
        check_id("tenant_id", t).map_err(|e| e.to_string())?;
    }
    if !rules::is_role_name(&rec.name) {
        return Err(format!("name `{}` is not a Queue role name (lowercase letters, digits, _ . -)", rec.name));
    }
    if rec.permissions.len() > rules::MAX_ROLE_PERMISSIONS {
        return Err(format!("more than {} permissions", rules::MAX_ROLE_PERMISSIONS));
    }
    if rec.description.as_deref().is_some_and(|d| !rules::is_description(d)) {
        return Err("description: at most 1000 characters, no NUL".into());
    }
    let mut permissions = rec.permissions.clone();
    for (i, p) in permissions.iter().enumerate() {
        check_permission(&format!("permissions[{i}]"), p).map_err(|e| e.to_string())?;
    }
    permissions.sort();
    permissions.dedup();
    Ok(permissions)
}

/// Imports a batch of roles, one answer per record.
#[tracing::instrument(skip_all, fields(records = records.len(), dry_run = imp.dry_run))]
pub async fn import(imp: &Importer<'_>, records: &[LegacyRole]) -> Result<Vec<ImportResult>, Error> {
    let mut seen = HashSet::new();
    let mut results = Vec::with_capacity(records.len());
    for rec in records {
        let result = match admit(&mut seen, &rec.legacy_id).and_then(|()| permissions_of(rec)) {
            Ok(permissions) => one(imp, rec, permissions).await?,
            Err(reason) => ImportResult::refused(&rec.legacy_id, reason),
        };
        results.push(result);
    }
    Ok(results)
}

/// What Queue has that the record may be: the role imported from that row, else the role of
/// that name where the record puts it.
async fn one(imp: &Importer<'_>, rec: &LegacyRole, permissions: Vec<String>) -> Result<ImportResult, Error> {
    let lid = rec.legacy_id.as_str();
    let (unknown, found) = {
        let mut conn = imp.writes.db.conn().await?;
        let known = rows::known_permissions(&mut conn, &permissions).await?;
        let unknown: Vec<&str> = permissions.iter().filter(|p| !known.contains(p)).map(String::as_str).collect();
        let found = match rows::by_legacy_id(&mut conn, lid).await? {
            Some(r) => Some(r),
            None => rows::by_name_exact(&mut conn, &rec.name, rec.tenant_id.as_deref()).await?,
        };
        let found = match found {
            Some(r) => Some((existing_permissions(&mut conn, r.id).await?, r)),
            None => None,
        };
        (unknown, found)
    };
    if !unknown.is_empty() {
        return Ok(ImportResult::refused(lid, format!("unknown permission: {}", unknown.join(", "))));
    }
    let Some((have, role)) = found else {
        return match &rec.tenant_id {
            None => Ok(ImportResult::refused(lid, format!("Queue has no built-in role `{}`", rec.name))),
            Some(_) => create(imp, rec, permissions).await,
        };
    };
    if role.tenant_id != rec.tenant_id || role.name != rec.name {
        let was = format!("`{}` in {}", role.name, role.tenant_id.as_deref().unwrap_or("no tenant (built in)"));
        return Ok(ImportResult::refused(
            lid,
            format!("imported before as {was}: Queue does not move or rename roles"),
        ));
    }
    if let Some(diff) = permission_difference(&permissions, &have) {
        let what = if role.builtin { "Queue's built-in" } else { "Queue's role" };
        return Ok(ImportResult::refused(lid, format!("permissions differ from {what} `{}`: {diff}", role.name)));
    }
    match role.legacy_id.as_deref() {
        Some(l) if l == lid => Ok(ImportResult::new(lid, Outcome::Unchanged, Some(role.id.to_string()), None)),
        Some(other) => Ok(ImportResult::refused(lid, format!("`{}` is Raptor's role {other} already", role.name))),
        None => link(imp, rec, role, permissions).await,
    }
}

async fn existing_permissions(conn: &mut Conn, id: Uuid) -> Result<Vec<String>, Error> {
    Ok(rows::permissions_of(conn, &[id]).await?.remove(&id).unwrap_or_default())
}

/// A tenant's role Queue does not have: created with Raptor's time, audited first.
async fn create(imp: &Importer<'_>, rec: &LegacyRole, permissions: Vec<String>) -> Result<ImportResult, Error> {
    let lid = rec.legacy_id.as_str();
    if imp.dry_run {
        return Ok(ImportResult::new(lid, Outcome::Created, None, None));
    }
    let tenant = rec.tenant_id.clone().unwrap_or_default();
    let role = Role {
        id: Uuid::new_v4(),
        name: rec.name.clone(),
        tenant_id: rec.tenant_id.clone(),
        builtin: false,
        description: rec.description.clone().unwrap_or_default(),
        permissions,
    };
    let created_at = rec.created_at.trunc_subsecs(6);
    let change = Change {
        event_id: Uuid::new_v4(),
        tenant: &tenant,
        action: "rbac.legacy.role.imported",
        actor: imp.party.clone(),
        target: Party::new("role", role.id.to_string()),
        occurred_at: Utc::now(),
        payload: json!({ "legacy_id": lid, "role": role, "created_at": created_at }),
    };
    let row = RoleRow {
        id: role.id,
        name: role.name.clone(),
        tenant_id: role.tenant_id.clone(),
        builtin: false,
        description: role.description.clone(),
        legacy_id: Some(lid.to_string()),
    };
    let apply = Apply::InsertRole {
        row: &row,
        permissions: &role.permissions,
        created_by: &imp.label,
        created_at: Some(created_at),
    };
    match imp.writes.write(change, &imp.origin, apply).await? {
        Applied::Done(_) => {
            imp.writes.metrics.change("imported");
            Ok(ImportResult::new(lid, Outcome::Created, Some(role.id.to_string()), None))
        }
        Applied::Nothing => Err(Error::Internal(anyhow::anyhow!("an imported role's insert reported nothing to do"))),
    }
}

/// A tenant's role defined at Queue with Raptor's name and permissions: linked to Raptor's row.
async fn link(
    imp: &Importer<'_>,
    rec: &LegacyRole,
    role: RoleRow,
    permissions: Vec<String>,
) -> Result<ImportResult, Error> {
    let lid = rec.legacy_id.as_str();
    let reason = if role.builtin {
        format!("linked to Queue's built-in `{}` (its grants made at Queue go back to this row)", role.name)
    } else {
        format!("linked to the role `{}` defined at Queue", role.name)
    };
    if imp.dry_run {
        return Ok(ImportResult::new(lid, Outcome::Updated, Some(role.id.to_string()), Some(reason)));
    }
    let tenant = role.tenant_id.clone().unwrap_or_else(|| PLATFORM_TENANT.to_string());
    let change = Change {
        event_id: Uuid::new_v4(),
        tenant: &tenant,
        action: "rbac.legacy.role.updated",
        actor: imp.party.clone(),
        target: Party::new("role", role.id.to_string()),
        occurred_at: Utc::now(),
        payload: json!({ "legacy_id": lid, "role_id": role.id, "name": role.name, "permissions": permissions,
                         "change": "linked" }),
    };
    match imp.writes.write(change, &imp.origin, Apply::LinkRole { id: role.id, legacy_id: lid }).await? {
        Applied::Done(_) => {
            imp.writes.metrics.change("imported");
            Ok(ImportResult::new(lid, Outcome::Updated, Some(role.id.to_string()), Some(reason)))
        }
        Applied::Nothing => Ok(ImportResult::refused(lid, "the role was linked to another Raptor row meanwhile")),
    }
}
