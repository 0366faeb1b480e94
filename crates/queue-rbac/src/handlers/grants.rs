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
use crate::state::RbacState;
use queue_platform::Caller;

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub principal_id: String,
    pub role: String,
    pub scope: Scope,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    pub reason: String,
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
