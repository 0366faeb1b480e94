//! `GET` and `POST /api/v1/rbac/roles`: the built-in roles and a tenant's own, and defining one.

use actix_web::{HttpRequest, HttpResponse, web};
use queue_platform::ApiError;
use serde::{Deserialize, Serialize};

use super::access::{actor, authorize_read, origin};
use crate::domain::model::{Role, Scope, check_id};
use crate::domain::roles::{self, NewRole};
use crate::state::RbacState;
use queue_platform::Caller;

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
#[tracing::instrument(skip_all)]
pub async fn roles(
    state: web::Data<RbacState>,
    caller: Caller,
    q: web::Query<RolesQuery>,
) -> Result<HttpResponse, ApiError> {
    if let Some(t) = &q.tenant_id {
        check_id("tenant_id", t)?;
        authorize_read(&state, &caller, Some(&Scope::Tenant { tenant_id: t.clone() }), false).await?;
    }
    let roles = roles::list(&state.db, q.tenant_id.as_deref()).await?;
    Ok(HttpResponse::Ok().json(RolesResponse { roles }))
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    pub name: String,
    pub tenant_id: String,
    pub permissions: Vec<String>,
    #[serde(default)]
    pub description: String,
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
#[tracing::instrument(skip_all)]
pub async fn create_role(
    req: HttpRequest,
    state: web::Data<RbacState>,
    caller: Caller,
    body: web::Json<RoleRequest>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let new = NewRole { name: b.name, tenant_id: b.tenant_id, permissions: b.permissions, description: b.description };
    let (role, revision) = roles::create(&state.writes, &actor(&state, &caller), new, &origin(&req)).await?;
    Ok(HttpResponse::Created().json(RoleCreated { role, revision }))
}
