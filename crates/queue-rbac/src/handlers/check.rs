//! `POST /api/v1/rbac/check` and `/check/batch`: is a principal allowed a permission on a tenant
//! or ticket? A service from `callers.checkers` with `rbac:check` may ask for anyone, a user for
//! themselves.

use actix_web::{HttpResponse, web};
use queue_platform::{ApiError, Caller};
use queue_rbac_client::rules::MAX_BATCH_CHECKS;
use queue_rbac_client::{BatchCheckRequest, BatchCheckResponse, CheckRequest, CheckResponse, Decision};

use crate::domain::model::{Resource, check_id, check_permission};
use crate::state::RbacState;

/// The check's resource, once its ids are valid (field names prefixed with `prefix`).
fn validated(c: &CheckRequest, prefix: &str) -> Result<Resource, ApiError> {
    check_id(&format!("{prefix}principal_id"), &c.principal_id)?;
    check_permission(&format!("{prefix}permission"), &c.permission)?;
    let resource = Resource { tenant_id: c.resource.tenant_id.clone(), ticket_id: c.resource.ticket_id.clone() };
    resource.validate(&format!("{prefix}resource"))?;
    Ok(resource)
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
#[utoipa::path(post, path = "/api/v1/rbac/check", tag = "rbac", operation_id = "check_permission",
    request_body = CheckRequest,
    security(("service_token" = ["rbac:check"]), ("session" = [])),
    responses((status = 200, description = "the answer", body = CheckResponse)))]
#[tracing::instrument(skip_all)]
pub async fn check(
    state: web::Data<RbacState>,
    caller: Caller,
    body: web::Json<CheckRequest>,
) -> Result<HttpResponse, ApiError> {
    let resource = validated(&body, "")?;
    authorize_check(&state, &caller, &body.principal_id)?;
    let (d, revision) = state.checker.check(&body.principal_id, &body.permission, &resource).await?;
    Ok(HttpResponse::Ok().json(CheckResponse { allowed: d.allowed, grant_ids: d.grant_ids, revision }))
}

/// Many checks in one call, all answered at one revision.
#[utoipa::path(post, path = "/api/v1/rbac/check/batch", tag = "rbac", operation_id = "check_permissions",
    request_body = BatchCheckRequest,
    security(("service_token" = ["rbac:check"]), ("session" = [])),
    responses((status = 200, description = "the answers, in the order asked", body = BatchCheckResponse)))]
#[tracing::instrument(skip_all, fields(checks = body.checks.len()))]
pub async fn check_batch(
    state: web::Data<RbacState>,
    caller: Caller,
    body: web::Json<BatchCheckRequest>,
) -> Result<HttpResponse, ApiError> {
    if body.checks.is_empty() || body.checks.len() > MAX_BATCH_CHECKS {
        return Err(ApiError::invalid("checks", "must hold 1 to 1000 checks"));
    }
    let mut resources = Vec::with_capacity(body.checks.len());
    for (i, c) in body.checks.iter().enumerate() {
        resources.push(validated(c, &format!("checks[{i}]."))?);
        authorize_check(&state, &caller, &c.principal_id)?;
    }
    let checks: Vec<_> = body
        .checks
        .iter()
        .zip(&resources)
        .map(|(c, resource)| (c.principal_id.as_str(), c.permission.as_str(), resource))
        .collect();
    let (decisions, revision) = state.checker.check_many(&checks).await?;
    let results = decisions.into_iter().map(|d| Decision { allowed: d.allowed, grant_ids: d.grant_ids }).collect();
    Ok(HttpResponse::Ok().json(BatchCheckResponse { results, revision }))
}
