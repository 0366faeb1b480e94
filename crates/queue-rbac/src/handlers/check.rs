//! `POST /api/v1/rbac/check` and `/check/batch`: is a principal allowed a permission on a tenant
//! or ticket? A service from `callers.checkers` with `rbac:check` may ask for anyone, a user for
//! themselves.

use actix_web::{HttpResponse, web};
use queue_platform::ApiError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::checker::Decision;
use crate::domain::model::{Resource, check_id, check_permission};
use crate::state::RbacState;
use queue_platform::Caller;

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
        Ok(self.resource.validate(&format!("{prefix}resource"))?)
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
#[tracing::instrument(skip_all)]
pub async fn check(
    state: web::Data<RbacState>,
    caller: Caller,
    body: web::Json<CheckRequest>,
) -> Result<HttpResponse, ApiError> {
    body.validate("")?;
    authorize_check(&state, &caller, &body.principal_id)?;
    let (d, revision) = state.checker.check(&body.principal_id, &body.permission, &body.resource).await?;
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
#[tracing::instrument(skip_all, fields(checks = body.checks.len()))]
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
    let checks: Vec<_> =
        body.checks.iter().map(|c| (c.principal_id.as_str(), c.permission.as_str(), &c.resource)).collect();
    let (results, revision) = state.checker.check_many(&checks).await?;
    Ok(HttpResponse::Ok().json(BatchCheckResponse { results, revision }))
}
