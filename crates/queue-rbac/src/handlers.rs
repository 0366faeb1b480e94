//! HTTP handlers of queue-rbac.

use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use queue_platform::ApiError;
use queue_platform::server::RequestTraceId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::caller::Caller;
use crate::checker::{CheckError, Decision};
use crate::grants::{self, GrantRequest, Origin, RoleRequest};
use crate::model::{Grant, Resource, Role, Scope, check_id, check_permission};
use crate::reconcile::{self, ReconcileReport};
use crate::state::RbacState;
use crate::store::{self, GrantFilter};

fn unavailable(e: CheckError) -> ApiError {
    tracing::warn!(error = %e, "check failed");
    ApiError::Unavailable("database unavailable".into())
}

fn db_down(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "database error");
    ApiError::Unavailable("database unavailable".into())
}

fn origin(req: &HttpRequest) -> Origin {
    Origin {
        ip: req.peer_addr().map(|a| a.ip().to_string()),
        user_agent: req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect()),
        trace_id: req.extensions().get::<RequestTraceId>().map(|t| t.0.clone()),
    }
}

/// Does `user` hold `permission` through a grant whose scope contains `scope`?
async fn user_holds(state: &RbacState, user: &str, permission: &str, scope: &Scope) -> Result<bool, ApiError> {
    let revision = state.checker.sync().await.map_err(unavailable)?;
    let grants = state.checker.grants_of(user, revision).await.map_err(unavailable)?;
    let now = Utc::now();
    Ok(grants.iter().any(|g| {
        g.expires_at.is_none_or(|e| e > now) && g.scope.contains(scope) && g.permissions.iter().any(|p| p == permission)
    }))
}

/// Reading grants: a service from `callers.readers` with `rbac:read`, or a user holding
/// `rbac.read` over `scope` (a user may always read their own grants).
async fn authorize_read(state: &RbacState, caller: &Caller, scope: Option<&Scope>, own: bool) -> Result<(), ApiError> {
    match caller {
        Caller::Service(_) if caller.service_may(&state.callers.readers, "rbac:read") => Ok(()),
        Caller::Service(t) => Err(ApiError::Forbidden(format!("service `{}` may not read grants", t.issuer()))),
        Caller::User(_) if own => Ok(()),
        Caller::User(u) => {
            let scope = scope.ok_or_else(|| {
                ApiError::invalid("tenant_id", "give the tenant (or principal_id = yourself) to read grants")
            })?;
            if user_holds(state, &u.user_id, "rbac.read", scope).await? {
                Ok(())
            } else {
                Err(ApiError::Forbidden("you do not hold `rbac.read` there".into()))
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub principal_id: String,
    pub permission: String,
    pub resource: Resource,
}

impl CheckRequest {
    fn validate(&self, prefix: &str) -> Result<(), ApiError> {
        check_id(&format!("{prefix}principal_id"), &self.principal_id)?;
        check_permission(&format!("{prefix}permission"), &self.permission)?;
        self.resource.validate(&format!("{prefix}resource"))
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckResponse {
    pub allowed: bool,
    /// The grants that allow it.
    pub grant_ids: Vec<Uuid>,
    /// The revision the answer reflects: every change up to it, and none after it.
    pub revision: i64,
}

/// Checks: a service from `callers.checkers` with `rbac:check` for anyone, a user for themselves.
fn authorize_check(state: &RbacState, caller: &Caller, principal: &str) -> Result<(), ApiError> {
    match caller {
        Caller::Service(_) if caller.service_may(&state.callers.checkers, "rbac:check") => Ok(()),
        Caller::Service(t) => Err(ApiError::Forbidden(format!("service `{}` may not ask checks", t.issuer()))),
        Caller::User(u) if u.user_id == principal => Ok(()),
        Caller::User(_) => Err(ApiError::Forbidden("a user may only check their own permissions".into())),
    }
}

/// Is a principal allowed a permission on a tenant or ticket?
#[utoipa::path(post, path = "/api/v1/rbac/check", tag = "rbac", request_body = CheckRequest,
    security(("service_token" = ["rbac:check"]), ("session" = [])),
    responses((status = 200, body = CheckResponse), (status = 401), (status = 403), (status = 422), (status = 503)))]
pub async fn check(
    state: web::Data<RbacState>,
    caller: Caller,
    body: web::Json<CheckRequest>,
) -> Result<HttpResponse, ApiError> {
    body.validate("")?;
    authorize_check(&state, &caller, &body.principal_id)?;
    let (d, revision) =
        state.checker.check(&body.principal_id, &body.permission, &body.resource).await.map_err(unavailable)?;
    Ok(HttpResponse::Ok().json(CheckResponse { allowed: d.allowed, grant_ids: d.grant_ids, revision }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCheckRequest {
    pub checks: Vec<CheckRequest>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchCheckResponse {
    /// In the order of the request.
    pub results: Vec<Decision>,
    pub revision: i64,
}

/// Many checks in one call, all answered at one revision.
#[utoipa::path(post, path = "/api/v1/rbac/check/batch", tag = "rbac", request_body = BatchCheckRequest,
    security(("service_token" = ["rbac:check"]), ("session" = [])),
    responses((status = 200, body = BatchCheckResponse), (status = 401), (status = 403), (status = 422), (status = 503)))]
pub async fn check_batch(
    state: web::Data<RbacState>,
    caller: Caller,
    body: web::Json<BatchCheckRequest>,
) -> Result<HttpResponse, ApiError> {
    if body.checks.is_empty() || body.checks.len() > 1000 {
        return Err(ApiError::invalid("checks", "must hold 1 to 1000 checks"));
    }
    for (i, c) in body.checks.iter().enumerate() {
        c.validate(&format!("checks[{i}]."))?;
        authorize_check(&state, &caller, &c.principal_id)?;
    }
    let revision = state.checker.sync().await.map_err(unavailable)?;
    let principals: Vec<&str> = body.checks.iter().map(|c| c.principal_id.as_str()).collect();
    let grants = state.checker.grants_of_many(&principals, revision).await.map_err(unavailable)?;
    let none: std::sync::Arc<[crate::model::ActiveGrant]> = std::sync::Arc::from(Vec::new());
    let results: Vec<Decision> = body
        .checks
        .iter()
        .map(|c| {
            let g = grants.get(&c.principal_id).unwrap_or(&none);
            let d = crate::checker::decide(g, &c.permission, &c.resource);
            state.metrics.checked(d.allowed);
            d
        })
        .collect();
    Ok(HttpResponse::Ok().json(BatchCheckResponse { results, revision }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RolesQuery {
    /// Also list this tenant's own roles.
    pub tenant_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RolesResponse {
    pub roles: Vec<Role>,
}

/// The built-in roles (any caller) and a tenant's own (only for who may read that tenant's
/// grants: a tenant's custom roles say how it is organised, which is not another tenant's
/// business).
#[utoipa::path(get, path = "/api/v1/rbac/roles", tag = "rbac", params(RolesQuery),
    security(("service_token" = ["rbac:read"]), ("session" = [])),
    responses((status = 200, body = RolesResponse), (status = 401), (status = 403), (status = 503)))]
pub async fn roles(
    state: web::Data<RbacState>,
    caller: Caller,
    q: web::Query<RolesQuery>,
) -> Result<HttpResponse, ApiError> {
    if let Some(t) = &q.tenant_id {
        check_id("tenant_id", t)?;
        authorize_read(&state, &caller, Some(&Scope::Tenant { tenant_id: t.clone() }), false).await?;
    }
    let mut conn = state.db.conn().await.map_err(db_down)?;
    let roles = store::roles(&mut conn, q.tenant_id.as_deref()).await.map_err(db_down)?;
    Ok(HttpResponse::Ok().json(RolesResponse { roles }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RoleCreated {
    pub role: Role,
    pub revision: i64,
}

/// Define a tenant's own role (audited before it is applied).
#[utoipa::path(post, path = "/api/v1/rbac/roles", tag = "rbac", request_body = RoleRequest,
    security(("service_token" = ["rbac:grant"]), ("session" = [])),
    responses((status = 201, body = RoleCreated), (status = 403), (status = 409), (status = 422), (status = 503)))]
pub async fn create_role(
    req: HttpRequest,
    state: web::Data<RbacState>,
    caller: Caller,
    body: web::Json<RoleRequest>,
) -> Result<HttpResponse, ApiError> {
    let (role, revision) = grants::create_role(&state, &caller, body.into_inner(), &origin(&req)).await?;
    Ok(HttpResponse::Created().json(RoleCreated { role, revision }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GrantCreated {
    pub grant: Grant,
    /// The audit event written (and committed) before the grant was applied.
    pub audit_event_id: Uuid,
    pub revision: i64,
}

/// Grant a role to a principal at a scope; audited before it is applied.
#[utoipa::path(post, path = "/api/v1/rbac/grants", tag = "rbac", request_body = GrantRequest,
    security(("service_token" = ["rbac:grant"]), ("session" = [])),
    responses((status = 201, body = GrantCreated), (status = 401), (status = 403), (status = 422),
              (status = 503, description = "the audit service did not record the grant; nothing changed")))]
pub async fn create_grant(
    req: HttpRequest,
    state: web::Data<RbacState>,
    caller: Caller,
    body: web::Json<GrantRequest>,
) -> Result<HttpResponse, ApiError> {
    let (grant, revision) = grants::create(&state, &caller, body.into_inner(), &origin(&req)).await?;
    let audit_event_id = grant.audit_event_id;
    Ok(HttpResponse::Created().json(GrantCreated { grant, audit_event_id, revision }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    pub reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GrantRevoked {
    pub grant: Grant,
    pub audit_event_id: Uuid,
    pub revision: i64,
}

/// Revoke a grant; audited before it is applied.
#[utoipa::path(delete, path = "/api/v1/rbac/grants/{id}", tag = "rbac", request_body = RevokeRequest,
    params(("id" = Uuid, Path, description = "grant id")),
    security(("service_token" = ["rbac:grant"]), ("session" = [])),
    responses((status = 200, body = GrantRevoked), (status = 403), (status = 404), (status = 409), (status = 422),
              (status = 503, description = "the audit service did not record the revoke; nothing changed")))]
pub async fn revoke_grant(
    req: HttpRequest,
    state: web::Data<RbacState>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: web::Json<RevokeRequest>,
) -> Result<HttpResponse, ApiError> {
    let (grant, audit_event_id, revision) =
        grants::revoke(&state, &caller, id.into_inner(), &body.reason, &origin(&req)).await?;
    Ok(HttpResponse::Ok().json(GrantRevoked { grant, audit_event_id, revision }))
}

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
    let own =
        matches!(&caller, crate::caller::Caller::User(u) if q.principal_id.as_deref() == Some(u.user_id.as_str()));
    authorize_read(&state, &caller, scope.as_ref(), own).await?;
    let revision = state.checker.sync().await.map_err(unavailable)?;
    let filter = GrantFilter {
        principal_id: q.principal_id,
        tenant_id: q.tenant_id,
        ticket_id: q.ticket_id,
        at: q.at,
        include_inactive: q.include_inactive,
        limit,
    };
    let mut conn = state.db.conn().await.map_err(db_down)?;
    let grants = store::grants(&mut conn, &filter).await.map_err(db_down)?;
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
pub struct Reach {
    pub principal_id: String,
    /// The permissions these grants give on the ticket.
    pub permissions: Vec<String>,
    pub grants: Vec<Grant>,
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
    let revision = state.checker.sync().await.map_err(unavailable)?;
    let at = q.at.unwrap_or_else(Utc::now);
    let mut conn = state.db.conn().await.map_err(db_down)?;
    let rows = store::grants_reaching_ticket(&mut conn, &tenant, &ticket, at).await.map_err(db_down)?;
    let mut principals: Vec<Reach> = Vec::new();
    for (grant, permissions) in rows {
        if q.permission.as_ref().is_some_and(|p| !permissions.contains(p)) {
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
    Ok(HttpResponse::Ok().json(PrincipalsResponse { tenant_id: tenant, ticket_id: ticket, at, principals, revision }))
}

/// Changes in the shadow tables without an audit event (a grant changed by hand in SQL, say).
#[utoipa::path(get, path = "/api/v1/rbac/reconcile", tag = "rbac",
    security(("service_token" = ["rbac:read"]), ("session" = [])),
    responses((status = 200, body = ReconcileReport), (status = 403), (status = 503)))]
pub async fn reconcile(state: web::Data<RbacState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    match &caller {
        Caller::Service(_) if caller.service_may(&state.callers.readers, "rbac:read") => {}
        Caller::User(u) if user_holds(&state, &u.user_id, "security.manage", &Scope::Global).await? => {}
        _ => return Err(ApiError::Forbidden("reconcile needs rbac:read (service) or security.manage (global)".into())),
    }
    let mut conn = state.db.conn().await.map_err(db_down)?;
    let report = reconcile::reconcile(&mut conn).await.map_err(db_down)?;
    Ok(HttpResponse::Ok().json(report))
}
