//! `GET /api/v1/rbac/grants` and `GET .../tenants/{tenant_id}/tickets/{ticket_id}/principals`:
//! grant history (now or at a past instant) and who reaches a ticket. Readers are services from
//! `callers.readers` or users holding `rbac.read` there.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Utc};
use queue_platform::ApiError;
use serde::{Deserialize, Serialize};

use super::access::authorize_read;
use crate::domain::history::{self, GrantQuery, Reach};
use crate::domain::model::{Grant, Scope, check_id, check_permission};
use crate::state::RbacState;
use queue_platform::Caller;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GrantsQuery {
    pub principal_id: Option<String>,
    pub tenant_id: Option<String>,
    pub ticket_id: Option<String>,
    /// The grants in force at this instant (RFC 3339); default: now.
    pub at: Option<DateTime<Utc>>,
    /// Also revoked and expired grants (ignored with `at`).
    #[serde(default)]
    pub include_inactive: bool,
    /// At most this many (default 500, at most 5000).
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GrantsResponse {
    pub grants: Vec<Grant>,
    pub revision: i64,
}

/// Grants by principal, tenant or ticket, now or at a past instant.
#[utoipa::path(get, path = "/api/v1/rbac/grants", tag = "rbac", params(GrantsQuery),
    security(("service_token" = ["rbac:read"]), ("session" = [])),
    responses((status = 200, body = GrantsResponse), (status = 403), (status = 422), (status = 503)))]
#[tracing::instrument(skip_all)]
pub async fn list_grants(
    state: web::Data<RbacState>,
    caller: Caller,
    q: web::Query<GrantsQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    for (field, v) in [("principal_id", &q.principal_id), ("tenant_id", &q.tenant_id), ("ticket_id", &q.ticket_id)] {
        if let Some(v) = v {
            check_id(field, v)?;
        }
    }
    if q.ticket_id.is_some() && q.tenant_id.is_none() {
        return Err(ApiError::invalid("tenant_id", "required with ticket_id"));
    }
    let limit = q.limit.unwrap_or(500);
    if !(1..=5000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 5000"));
    }
    let scope = match (&q.tenant_id, &q.ticket_id) {
        (Some(t), Some(k)) => Some(Scope::Ticket { tenant_id: t.clone(), ticket_id: k.clone() }),
        (Some(t), None) => Some(Scope::Tenant { tenant_id: t.clone() }),
        _ => None,
    };
    let own = matches!(&caller, Caller::User(u) if q.principal_id.as_deref() == Some(u.user_id.as_str()));
    authorize_read(&state, &caller, scope.as_ref(), own).await?;
    let revision = state.checker.sync().await?;
    let query = GrantQuery {
        principal_id: q.principal_id,
        tenant_id: q.tenant_id,
        ticket_id: q.ticket_id,
        at: q.at,
        include_inactive: q.include_inactive,
        limit,
    };
    let grants = history::grants(&state.db, &query).await?;
    Ok(HttpResponse::Ok().json(GrantsResponse { grants, revision }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PrincipalsQuery {
    /// Who could reach the ticket at this instant; default: now.
    pub at: Option<DateTime<Utc>>,
    /// Only principals holding this permission there.
    pub permission: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PrincipalsResponse {
    pub tenant_id: String,
    pub ticket_id: String,
    pub at: DateTime<Utc>,
    pub principals: Vec<Reach>,
    pub revision: i64,
}

/// Who can reach a ticket, and through which grants (global, the tenant's, the ticket's).
#[utoipa::path(get, path = "/api/v1/rbac/tenants/{tenant_id}/tickets/{ticket_id}/principals", tag = "rbac",
    params(("tenant_id" = String, Path), ("ticket_id" = String, Path), PrincipalsQuery),
    security(("service_token" = ["rbac:read"]), ("session" = [])),
    responses((status = 200, body = PrincipalsResponse), (status = 403), (status = 422), (status = 503)))]
#[tracing::instrument(skip_all)]
pub async fn ticket_principals(
    state: web::Data<RbacState>,
    caller: Caller,
    path: web::Path<(String, String)>,
    q: web::Query<PrincipalsQuery>,
) -> Result<HttpResponse, ApiError> {
    let (tenant, ticket) = path.into_inner();
    check_id("tenant_id", &tenant)?;
    check_id("ticket_id", &ticket)?;
    if let Some(p) = &q.permission {
        check_permission("permission", p)?;
    }
    let scope = Scope::Ticket { tenant_id: tenant.clone(), ticket_id: ticket.clone() };
    authorize_read(&state, &caller, Some(&scope), false).await?;
    let revision = state.checker.sync().await?;
    let at = q.at.unwrap_or_else(Utc::now);
    let principals = history::ticket_reach(&state.db, &tenant, &ticket, at, q.permission.as_deref()).await?;
    Ok(HttpResponse::Ok().json(PrincipalsResponse { tenant_id: tenant, ticket_id: ticket, at, principals, revision }))
}
