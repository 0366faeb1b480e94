//! `GET /api/v1/rbac/reconcile`: changes in the shadow tables without an audit event.

use actix_web::{HttpResponse, web};
use queue_platform::ApiError;

use crate::domain::model::Scope;
use crate::domain::reach;
use crate::domain::reconcile::{self, ReconcileReport};
use crate::state::RbacState;
use queue_platform::Caller;

/// Changes in the shadow tables without an audit event (a grant changed by hand in SQL, say).
#[utoipa::path(get, path = "/api/v1/rbac/reconcile", tag = "rbac", operation_id = "reconcile_report",
    security(("service_token" = ["rbac:read"]), ("session" = [])),
    responses((status = 200, description = "the unaudited changes", body = ReconcileReport)))]
#[tracing::instrument(skip_all)]
pub async fn reconcile(state: web::Data<RbacState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    match &caller {
        Caller::Service(_) if caller.service_may(&state.callers.readers, "rbac:read") => {}
        Caller::User(u) if reach::holds(&state.checker, &u.user_id, "security.manage", &Scope::Global {}).await? => {}
        _ => return Err(ApiError::Forbidden("reconcile needs rbac:read (service) or security.manage (global)".into())),
    }
    Ok(HttpResponse::Ok().json(reconcile::report(&state.db).await?))
}
