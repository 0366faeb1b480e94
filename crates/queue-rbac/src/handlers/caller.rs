//! Who is calling: a service (a service token) or a user (a session, validated by the auth
//! service: `queue_platform::sessions`).

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use queue_platform::sessions::{Credential, SessionUser, credential};
use queue_platform::{ApiError, Platform};
use queue_svc_token::VerifiedToken;

use crate::state::RbacState;

#[derive(Debug, Clone)]
pub enum Caller {
    Service(VerifiedToken),
    User(SessionUser),
}

impl Caller {
    /// How audit events name this caller.
    pub fn actor(&self) -> queue_audit_client::Party {
        match self {
            Caller::Service(t) => queue_audit_client::Party::new("service", t.issuer()),
            Caller::User(u) => queue_audit_client::Party::new("user", &u.user_id),
        }
    }

    /// For `granted_by` / `revoked_by`: `service:raptor` or `user:<id>`.
    pub fn label(&self) -> String {
        match self {
            Caller::Service(t) => format!("service:{}", t.issuer()),
            Caller::User(u) => format!("user:{}", u.user_id),
        }
    }

    /// A service caller must be one of `issuers` and hold `scope`.
    pub fn service_may(&self, issuers: &[String], scope: &str) -> bool {
        match self {
            Caller::Service(t) => issuers.iter().any(|i| i == t.issuer()) && t.has_scope(scope),
            Caller::User(_) => false,
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let platform = req.app_data::<web::Data<Platform>>().cloned();
        let state = req.app_data::<web::Data<RbacState>>().cloned();
        let credential = credential(req);
        let usage = queue_platform::service_auth::TokenUse::of(req);
        Box::pin(async move {
            let platform = platform.ok_or_else(|| ApiError::internal(anyhow::anyhow!("platform state missing")))?;
            let state = state.ok_or_else(|| ApiError::internal(anyhow::anyhow!("rbac state missing")))?;
            match credential {
                None => Err(ApiError::Unauthorized("a service token or a user session is required".into())),
                Some(Credential::Service(token)) => {
                    // A grant, revoke or role change spends the token; checks (read-only routes) do not.
                    let verified = queue_platform::service_auth::verify_token_for(&platform, &token, usage).await?;
                    tracing::Span::current().record("caller", verified.issuer());
                    Ok(Caller::Service(verified))
                }
                Some(Credential::Session(token)) => {
                    let sessions = state
                        .sessions
                        .as_ref()
                        .ok_or_else(|| ApiError::Unauthorized("this service accepts service tokens only".into()))?;
                    Ok(Caller::User(sessions.validate(&platform, &token).await?))
                }
            }
        })
    }
}
