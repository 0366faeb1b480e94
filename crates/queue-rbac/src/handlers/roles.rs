//! `GET` and `POST /api/v1/rbac/roles`: the built-in roles and a tenant's own, and defining one.

use actix_web::{HttpRequest, HttpResponse, web};
use queue_platform::ApiError;
use serde::{Deserialize, Serialize};

use super::access::{actor, authorize_read, origin};
use crate::domain::model::{Role, Scope, check_id};
use crate::domain::roles::{self, NewRole};
use crate::domain::rules;
use crate::state::RbacState;
use queue_platform::Caller;
use queue_rbac_client::rules as wire;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RolesQuery {
    /// Also list this tenant's own roles.
    #[param(value_type = Option<wire::Id>, inline)]
    pub tenant_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RolesResponse {
    pub roles: Vec<Role>,
}

/// The built-in roles (any caller) and a tenant's own (only for who may read that tenant's
/// grants: a tenant's custom roles say how it is organised, which is not another tenant's
/// business).
#[utoipa::path(get, path = "/api/v1/rbac/roles", tag = "rbac", operation_id = "list_roles", params(RolesQuery),
    security(("service_token" = ["rbac:read"]), ("session" = [])),
    responses((status = 200, description = "the roles", body = RolesResponse),
              (status = 422, description = "`tenant_id` breaks its pattern")))]
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
#[schema(example = json!({"name": "triage", "tenant_id": "acme", "permissions": ["ticket.read", "ticket.write"],
    "description": "first line: reads and answers tickets"}))]
pub struct RoleRequest {
    #[schema(schema_with = rules::role_name_schema)]
    pub name: String,
    #[schema(schema_with = wire::id_schema)]
    pub tenant_id: String,
    /// Known permission names.
    #[schema(schema_with = rules::permissions_schema)]
    pub permissions: Vec<String>,
    #[serde(default)]
    #[schema(schema_with = rules::description_schema)]
    pub description: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"role": {"id": "3c9a7f12-6e4b-4d8a-a1f5-0b2e9c7d4a10", "name": "triage", "tenant_id": "acme",
    "builtin": false, "description": "first line: reads and answers tickets",
    "permissions": ["ticket.read", "ticket.write"]}, "revision": 45}))]
pub struct RoleCreated {
    pub role: Role,
    pub revision: i64,
}

/// Define a tenant's own role (audited before it is applied).
#[utoipa::path(post, path = "/api/v1/rbac/roles", tag = "rbac", operation_id = "create_role", request_body = RoleRequest,
    security(("service_token" = ["rbac:grant"]), ("session" = [])),
    responses((status = 201, description = "defined", body = RoleCreated),
              (status = 404, description = "a permission that does not exist"),
              (status = 409, description = "the tenant has a role of that name"),
              (status = 503, description = "the audit service did not record the role; nothing changed")))]
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
