//! Who is asking, in the terms the domain and the audit log use, and who may read: the rules
//! the endpoints share (docs/rbac-service.md, "Who may call what").

use actix_web::{HttpMessage, HttpRequest};
use queue_platform::ApiError;
use queue_platform::server::RequestTraceId;

use crate::domain::model::Scope;
use crate::domain::{Actor, ActorKind, Origin, reach};
use crate::state::RbacState;
use queue_platform::Caller;

/// Where a request came from, for the audit event.
pub fn origin(req: &HttpRequest) -> Origin {
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

/// The caller as the actor of a change: a service is trusted when it is one of
/// `callers.granters` and holds `rbac:grant`.
pub fn actor(state: &RbacState, caller: &Caller) -> Actor {
    let kind = match caller {
        Caller::Service(t) => ActorKind::Service {
            issuer: t.issuer().to_string(),
            trusted: caller.service_may(&state.callers.granters, "rbac:grant"),
        },
        Caller::User(u) => ActorKind::User { user_id: u.user_id.clone() },
    };
    Actor { label: caller.label(), party: queue_audit_client::Party::new(caller.kind(), caller.id()), kind }
}

/// Reading grants: a service from `callers.readers` with `rbac:read`, or a user holding
/// `rbac.read` over `scope` (a user may always read their own grants).
pub async fn authorize_read(
    state: &RbacState,
    caller: &Caller,
    scope: Option<&Scope>,
    own: bool,
) -> Result<(), ApiError> {
    match caller {
        Caller::Service(_) if caller.service_may(&state.callers.readers, "rbac:read") => Ok(()),
        Caller::Service(t) => Err(ApiError::Forbidden(format!("service `{}` may not read grants", t.issuer()))),
        Caller::User(_) if own => Ok(()),
        Caller::User(u) => {
            let scope = scope.ok_or_else(|| {
                ApiError::invalid("tenant_id", "give the tenant (or principal_id = yourself) to read grants")
            })?;
            if reach::holds(&state.checker, &u.user_id, "rbac.read", scope).await? {
                Ok(())
            } else {
                Err(ApiError::Forbidden("you do not hold `rbac.read` there".into()))
            }
        }
    }
}
