//! The route table of queue-rbac. The platform endpoints (/healthz, /readyz, /metrics,
//! /.well-known/jwks.json, /openapi.json, /internal/v1/caller) are added by queue-platform.
//! Every route here takes a service token or a user session; what each caller may do is decided
//! in the handler (docs/rbac-service.md). A service token is spent by every POST/DELETE except
//! the checks, which only read (`ReadOnlyRoute`), so a caller may reuse one token for checks.

use actix_web::web;
use queue_platform::service_auth::ReadOnlyRoute;

use crate::handlers::{check, grants, history, reconcile, roles};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/rbac/check").app_data(ReadOnlyRoute).post(check::check))
        .service(web::resource("/api/v1/rbac/check/batch").app_data(ReadOnlyRoute).post(check::check_batch))
        .service(web::resource("/api/v1/rbac/roles").get(roles::roles).post(roles::create_role))
        .service(web::resource("/api/v1/rbac/grants").get(history::list_grants).post(grants::create_grant))
        .service(web::resource("/api/v1/rbac/grants/{id}").delete(grants::revoke_grant))
        .service(
            web::resource("/api/v1/rbac/tenants/{tenant_id}/tickets/{ticket_id}/principals")
                .get(history::ticket_principals),
        )
        .service(web::resource("/api/v1/rbac/reconcile").get(reconcile::reconcile));
}
