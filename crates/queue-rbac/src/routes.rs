//! The route table of queue-rbac. The platform endpoints (/healthz, /readyz, /metrics,
//! /.well-known/jwks.json, /openapi.json, /internal/v1/caller) are added by queue-platform.
//! Every route here takes a service token or a user session; what each caller may do is decided
//! in the handler (docs/rbac-service.md): every trusted issuer's token is verified
//! (`ServicePolicy::any_trusted`), and the handler holds the issuer to `[callers]`. A service token is spent by every POST/DELETE except
//! the checks, which only read (`ReadOnlyRoute`), so a caller may reuse one token for checks.

use actix_web::web;
use queue_platform::ServicePolicy;
use queue_platform::service_auth::ReadOnlyRoute;

use crate::handlers::{check, grants, history, import, reconcile, roles};

/// An import batch (1000 records, a grant's reason up to 1000 characters) is larger than other
/// requests: its own body limit, above `server.max_body_bytes`.
const IMPORT_MAX_BODY: usize = 8 * 1024 * 1024;

fn import_body() -> web::JsonConfig {
    web::JsonConfig::default().limit(IMPORT_MAX_BODY).error_handler(queue_platform::error::json_error_handler)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    let route = |path: &str| web::resource(path).app_data(ServicePolicy::any_trusted().data());
    cfg.service(route("/api/v1/rbac/check").app_data(ReadOnlyRoute).post(check::check))
        .service(route("/api/v1/rbac/check/batch").app_data(ReadOnlyRoute).post(check::check_batch))
        .service(route("/api/v1/rbac/roles").get(roles::roles).post(roles::create_role))
        .service(route("/api/v1/rbac/grants").get(history::list_grants).post(grants::create_grant))
        .service(route("/api/v1/rbac/grants/{id}").delete(grants::revoke_grant))
        .service(
            route("/api/v1/rbac/tenants/{tenant_id}/tickets/{ticket_id}/principals").get(history::ticket_principals),
        )
        .service(route("/api/v1/rbac/reconcile").get(reconcile::reconcile))
        .service(route("/internal/v1/import/roles").app_data(import_body()).post(import::import_roles))
        .service(route("/internal/v1/import/grants").app_data(import_body()).post(import::import_grants))
        .service(route("/internal/v1/import/principals").app_data(import_body()).post(import::import_principals))
        .service(route("/internal/v1/import/status").get(import::import_status));
}
