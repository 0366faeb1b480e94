//! `POST /api/v1/rbac/grants` and `DELETE /api/v1/rbac/grants/{id}`: grant and revoke, each
//! audited before it is applied (the domain decides who may, from the caller as an actor).

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use queue_platform::ApiError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::access::{actor, origin};
use crate::domain::grants::{self, NewGrant};
use crate::domain::model::{Grant, Scope};
use crate::domain::rules;
use crate::state::RbacState;
use queue_platform::Caller;
use queue_rbac_client::rules as wire;

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"principal_id": "user-7f3a", "role": "viewer",
    "scope": {"type": "tenant", "tenant_id": "acme"}, "expires_at": "2030-06-30T00:00:00Z",
    "reason": "covers the support queue while Dana is away (INC-2211)"}))]
pub struct GrantRequest {
    #[schema(schema_with = wire::id_schema)]
    pub principal_id: String,
    /// A built-in role, or one of the scope's tenant.
    #[schema(schema_with = rules::role_name_schema)]
    pub role: String,
    pub scope: Scope,
    /// When the grant ends by itself (in the future); absent or null: never.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[schema(schema_with = rules::reason_schema)]
    pub reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"grant": crate::domain::model::grant_example(), "audit_event_id": "0f6d3b9e-2c41-4a8e-b5d7-9e1c3a2f8b60", "revision": 43}))]
pub struct GrantCreated {
    pub grant: Grant,
    /// The audit event written (and committed) before the grant was applied.
    pub audit_event_id: Uuid,
    pub revision: i64,
}

/// Grant a role to a principal at a scope; audited before it is applied.
#[utoipa::path(post, path = "/api/v1/rbac/grants", tag = "rbac", operation_id = "create_grant",
    request_body = GrantRequest,
    security(("service_token" = ["rbac:grant"]), ("session" = [])),
    responses((status = 201, description = "granted", body = GrantCreated),
              (status = 404, description = "no role of that name for this scope"),
              (status = 409, description = "`expires_at` is not in the future, or a tenant's own role asked for \
                                            outside that tenant"),
              (status = 503, description = "the audit service did not record the grant; nothing changed")))]
#[tracing::instrument(skip_all)]
pub async fn create_grant(
    req: HttpRequest,
    state: web::Data<RbacState>,
    caller: Caller,
    body: web::Json<GrantRequest>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let new = NewGrant {
        principal_id: b.principal_id,
        role: b.role,
        scope: b.scope,
        expires_at: b.expires_at,
        reason: b.reason,
    };
    let (grant, revision) = grants::create(&state.writes, &actor(&state, &caller), new, &origin(&req)).await?;
    let audit_event_id = grant.audit_event_id;
    Ok(HttpResponse::Created().json(GrantCreated { grant, audit_event_id, revision }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "Dana is back (INC-2211)"}))]
pub struct RevokeRequest {
    #[schema(schema_with = rules::reason_schema)]
    pub reason: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"grant": crate::domain::model::revoked_grant_example(),
    "audit_event_id": "7a2c9e41-5b3d-4f60-8e1a-c4d2b9f03e77", "revision": 44}))]
pub struct GrantRevoked {
    pub grant: Grant,
    pub audit_event_id: Uuid,
    pub revision: i64,
}

/// Revoke a grant; audited before it is applied.
#[utoipa::path(delete, path = "/api/v1/rbac/grants/{id}", tag = "rbac", operation_id = "revoke_grant",
    request_body = RevokeRequest,
    params(("id" = Uuid, Path, description = "grant id")),
    security(("service_token" = ["rbac:grant"]), ("session" = [])),
    responses((status = 200, description = "revoked", body = GrantRevoked),
              (status = 404, description = "no such grant"),
              (status = 409, description = "the grant is already revoked"),
              (status = 503, description = "the audit service did not record the revoke; nothing changed")))]
#[tracing::instrument(skip_all, fields(grant = %id))]
pub async fn revoke_grant(
    req: HttpRequest,
    state: web::Data<RbacState>,
    caller: Caller,
    id: web::Path<Uuid>,
    body: web::Json<RevokeRequest>,
) -> Result<HttpResponse, ApiError> {
    let (grant, audit_event_id, revision) =
        grants::revoke(&state.writes, &actor(&state, &caller), id.into_inner(), &body.reason, &origin(&req)).await?;
    Ok(HttpResponse::Ok().json(GrantRevoked { grant, audit_event_id, revision }))
}
