//! Who may read the log: a service with `audit:read` from `limits.readers`, or — with `[users]`
//! configured — a user whose session auth validates and who holds `audit.read` for the tenant,
//! as the rbac service answers (asked with this service's token, scope `rbac:check`).

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use queue_platform::sessions::{Credential, SessionUser, SessionValidator, credential};
use queue_platform::{ApiError, Platform, ServiceCaller};
use std::time::Duration;

use crate::config::UsersConfig;
use crate::state::AuditState;

pub enum Reader {
    Service(ServiceCaller),
    User(SessionUser),
}

impl Reader {
    /// The rate-limit bucket: the calling service, or the user.
    pub fn bucket(&self) -> String {
        match self {
            Reader::Service(c) => c.issuer().to_string(),
            Reader::User(u) => format!("user:{}", u.user_id),
        }
    }
}

/// Users reading the log: their sessions (auth) and their `audit.read` grants (rbac).
pub struct UserReads {
    pub sessions: SessionValidator,
    pub rbac_url: url::Url,
}

impl UserReads {
    pub fn new(c: &UsersConfig) -> Self {
        Self { sessions: SessionValidator::new(c.auth_url.clone(), c.session_cache_secs), rbac_url: c.rbac_url.clone() }
    }

    /// `403` unless rbac says `user` holds `audit.read` for `tenant`; `503` if rbac cannot say.
    pub async fn require_audit_read(
        &self,
        platform: &Platform,
        user: &SessionUser,
        tenant: &str,
    ) -> Result<(), ApiError> {
        let unavailable = || ApiError::Unavailable("cannot check the reader's permission right now".into());
        let token = platform
            .tokens
            .minter
            .mint("rbac", &["rbac:check"], 60)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("cannot mint a token: {e}")))?;
        let url = self.rbac_url.join("/api/v1/rbac/check").map_err(ApiError::internal)?;
        let body = serde_json::json!({"principal_id": user.user_id, "permission": "audit.read",
                                      "resource": {"tenant_id": tenant}});
        let request = platform.http.post(url.as_str()).bearer_auth(token).json(&body).timeout(Duration::from_secs(3));
        let response = platform.http.send(request).await.map_err(|e| {
            tracing::warn!(error = %e, "rbac unreachable");
            unavailable()
        })?;
        if !response.status().is_success() {
            tracing::warn!(status = %response.status(), "rbac refused the check");
            return Err(unavailable());
        }
        let answer: serde_json::Value = response.json().await.map_err(|_| unavailable())?;
        if answer["allowed"] == true {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("you do not hold `audit.read` for tenant `{tenant}`")))
        }
    }
}

impl FromRequest for Reader {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        match credential(req) {
            Some(Credential::Session(token)) => {
                let platform = req.app_data::<web::Data<Platform>>().cloned();
                let state = req.app_data::<web::Data<AuditState>>().cloned();
                Box::pin(async move {
                    let platform =
                        platform.ok_or_else(|| ApiError::internal(anyhow::anyhow!("platform state missing")))?;
                    let state = state.ok_or_else(|| ApiError::internal(anyhow::anyhow!("audit state missing")))?;
                    let users = state
                        .users
                        .as_ref()
                        .ok_or_else(|| ApiError::Unauthorized("this service accepts service tokens only".into()))?;
                    Ok(Reader::User(users.sessions.validate(&platform, &token).await?))
                })
            }
            _ => {
                let service = ServiceCaller::from_request(req, payload);
                Box::pin(async move { Ok(Reader::Service(service.await?)) })
            }
        }
    }
}

impl AuditState {
    /// The per-caller rate limit, then, for a user, `audit.read` for `tenant`.
    pub async fn admit_reader(&self, platform: &Platform, reader: &Reader, tenant: &str) -> Result<(), ApiError> {
        self.admit_bucket(&reader.bucket(), 1)?;
        if let Reader::User(u) = reader {
            let users = self.users.as_ref().ok_or_else(|| ApiError::Unauthorized("no user reads".into()))?;
            users.require_audit_read(platform, u, tenant).await?;
        }
        Ok(())
    }
}
