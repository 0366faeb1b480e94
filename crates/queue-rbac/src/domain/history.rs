//! Grant history: the grants in force at an instant (or all of them), and who reaches a ticket
//! through which grants.

use chrono::{DateTime, Utc};
use queue_platform::db::Db;
use serde::Serialize;

use super::Error;
use super::model::Grant;
use crate::db::grants::{self as rows, GrantFilter};
use crate::db::roles;

/// Which grants to list.
#[derive(Debug, Clone)]
pub struct GrantQuery {
    pub principal_id: Option<String>,
    pub tenant_id: Option<String>,
    pub ticket_id: Option<String>,
    /// The grants in force at this instant; default: now.
    pub at: Option<DateTime<Utc>>,
    /// Also revoked and expired grants (ignored with `at`).
    pub include_inactive: bool,
    pub limit: i64,
}

/// Grants by principal, tenant or ticket, oldest first.
#[tracing::instrument(skip_all)]
pub async fn grants(db: &Db, q: &GrantQuery) -> Result<Vec<Grant>, Error> {
    let filter = GrantFilter {
        principal_id: q.principal_id.as_deref(),
        tenant_id: q.tenant_id.as_deref(),
        ticket_id: q.ticket_id.as_deref(),
        in_force_at: (!q.include_inactive || q.at.is_some()).then(|| q.at.unwrap_or_else(Utc::now)),
        limit: q.limit,
    };
    let mut conn = db.conn().await?;
    rows::list(&mut conn, &filter).await?.into_iter().map(Grant::from_row).collect()
}

// One principal's reach of a ticket (no doc comment: it would change the served OpenAPI document).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Reach {
    pub principal_id: String,
    /// The permissions these grants give on the ticket.
    pub permissions: Vec<String>,
    pub grants: Vec<Grant>,
}

/// Who can reach a ticket at `at`, and through which grants (global, the tenant's, the
/// ticket's); with `permission`, only through grants that give it.
#[tracing::instrument(skip_all)]
pub async fn ticket_reach(
    db: &Db,
    tenant: &str,
    ticket: &str,
    at: DateTime<Utc>,
    permission: Option<&str>,
) -> Result<Vec<Reach>, Error> {
    let mut conn = db.conn().await?;
    let found = rows::reaching_ticket(&mut conn, tenant, ticket, at).await?;
    let role_ids: Vec<uuid::Uuid> = found.iter().map(|g| g.role_id).collect();
    let by_role = roles::permissions_of(&mut conn, &role_ids).await?;
    let mut principals: Vec<Reach> = Vec::new();
    for row in found {
        let permissions = by_role.get(&row.role_id).cloned().unwrap_or_default();
        let grant = Grant::from_row(row)?;
        if permission.is_some_and(|p| !permissions.iter().any(|x| x == p)) {
            continue;
        }
        match principals.last_mut() {
            Some(r) if r.principal_id == grant.principal_id => {
                r.permissions.extend(permissions);
                r.permissions.sort();
                r.permissions.dedup();
                r.grants.push(grant);
            }
            _ => principals.push(Reach { principal_id: grant.principal_id.clone(), permissions, grants: vec![grant] }),
        }
    }
    Ok(principals)
}
