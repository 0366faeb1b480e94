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
use crate::domain::rules;
use crate::state::RbacState;
use queue_platform::Caller;
use queue_rbac_client::rules as wire;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GrantsQuery {
    /// Only this principal's grants.
    #[param(value_type = Option<wire::Id>, inline)]
    pub principal_id: Option<String>,
    /// Only grants at this tenant's scope or one of its tickets'.
    #[param(value_type = Option<wire::Id>, inline)]
    pub tenant_id: Option<String>,
    /// Only grants at a ticket of this id (one tenant's with `tenant_id`).
    #[param(value_type = Option<wire::Id>, inline)]
    pub ticket_id: Option<String>,
    /// The grants in force at this instant (RFC 3339); default: now.
    pub at: Option<DateTime<Utc>>,
    /// Also revoked and expired grants (ignored with `at`).
    #[serde(default)]
    pub include_inactive: bool,
    /// At most this many (default 500, at most 5000).
    #[param(value_type = Option<rules::Limit>, inline)]
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"grants": [crate::domain::model::grant_example()], "revision": 43}))]
pub struct GrantsResponse {
    pub grants: Vec<Grant>,
    pub revision: i64,
}

/// Grants by principal, tenant or ticket, now or at a past instant.
#[utoipa::path(get, path = "/api/v1/rbac/grants", tag = "rbac", operation_id = "list_grants", params(GrantsQuery),
    security(("service_token" = ["rbac:read"]), ("session" = [])),
    responses((status = 200, description = "the grants, oldest first", body = GrantsResponse),
              (status = 422, description = "a query parameter breaks its pattern or range (`field` names it), or \
                                            a user named no tenant and not themselves")))]
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
    let limit = q.limit.unwrap_or(rules::DEFAULT_LIMIT);
    if !(1..=rules::MAX_LIMIT).contains(&limit) {
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
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PrincipalsQuery {
    /// Who could reach the ticket at this instant (RFC 3339); default: now.
    pub at: Option<DateTime<Utc>>,
    /// Only principals holding this permission there.
    #[param(value_type = Option<wire::Permission>, inline)]
    pub permission: Option<String>,
}

/// The ticket, in the path.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TicketPath {
    #[param(value_type = wire::Id, inline)]
    pub tenant_id: String,
    #[param(value_type = wire::Id, inline)]
    pub ticket_id: String,
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
    operation_id = "list_ticket_principals", params(TicketPath, PrincipalsQuery),
    security(("service_token" = ["rbac:read"]), ("session" = [])),
    responses((status = 200, description = "who reaches the ticket", body = PrincipalsResponse),
              (status = 422, description = "a path or query parameter breaks its pattern (`field` names it)")))]
#[tracing::instrument(skip_all)]
pub async fn ticket_principals(
    state: web::Data<RbacState>,
    caller: Caller,
    path: web::Path<TicketPath>,
    q: web::Query<PrincipalsQuery>,
) -> Result<HttpResponse, ApiError> {
    let TicketPath { tenant_id: tenant, ticket_id: ticket } = path.into_inner();
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
