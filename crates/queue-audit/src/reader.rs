//! Who may read the log: a service with `audit:read` from `limits.readers` (the routes'
//! `ServicePolicy`), or — with `[users]` configured — a user whose session auth validates (the
//! `SessionValidator` registered as the session source of `queue_platform::Caller`) and who holds
//! `audit.read` for the tenant, as the rbac service answers (`queue_rbac_client`, asked with this
//! service's token, scope `rbac:check`).

use queue_platform::sessions::{SessionSource, SessionUser, SessionValidator};
use queue_platform::{ApiError, Platform};
use queue_rbac_client::{CheckRequest, RbacClient, Resource};
use std::sync::Arc;

use crate::config::UsersConfig;

/// The session source `Caller` validates users with (app data; one cache for every worker).
pub fn sessions(c: &UsersConfig) -> actix_web::web::Data<dyn SessionSource<User = SessionUser>> {
    SessionValidator::new(c.auth_url.clone(), c.session_cache_secs).into_data()
}

/// Users reading the log: their `audit.read` grants (rbac).
pub struct UserReads {
    rbac: RbacClient,
}

impl UserReads {
    pub fn new(c: &UsersConfig, platform: &Platform) -> Self {
        let minter = Arc::new(platform.tokens.minter.clone());
        Self { rbac: RbacClient::new(platform.http.clone(), c.rbac_url.clone(), minter) }
    }

    /// `403` unless rbac says `user` holds `audit.read` for `tenant`; `503` if rbac cannot say.
    #[tracing::instrument(skip_all)]
    pub async fn require_audit_read(&self, user: &SessionUser, tenant: &str) -> Result<(), ApiError> {
        let question = CheckRequest::new(user.user_id.clone(), "audit.read", Resource::tenant(tenant));
        let answer = self.rbac.check(&question).await.map_err(|e| {
            tracing::warn!(error = %e, "cannot check the reader's permission");
            match e {
                queue_rbac_client::RbacClientError::Local(_) => ApiError::internal(anyhow::anyhow!(e)),
                _ => ApiError::Unavailable("cannot check the reader's permission right now".into()),
            }
        })?;
        if answer.allowed {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("you do not hold `audit.read` for tenant `{tenant}`")))
        }
    }
}
