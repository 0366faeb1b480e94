//! Service-token authentication for actix routes.
//!
//! A route states which callers it accepts by attaching a [`ServicePolicy`] as resource data;
//! a handler that takes a [`ServiceCaller`] then only runs for a caller whose token verifies
//! (audience = this service) and whose issuer and scopes the policy allows. A route without a
//! policy accepts nobody: forgetting the policy fails closed.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use queue_svc_token::VerifiedToken;

use crate::error::ApiError;
use crate::server::Platform;

#[derive(Debug, Clone, Default)]
pub struct ServicePolicy {
    /// Issuers allowed on this route; `None` means every issuer the service trusts.
    issuers: Option<Vec<String>>,
    scopes: Vec<String>,
}

impl ServicePolicy {
    /// Only these issuers (each must also be trusted in config).
    pub fn issuers(list: &[&str]) -> Self {
        Self { issuers: Some(list.iter().map(|s| s.to_string()).collect()), scopes: Vec::new() }
    }

    /// Any issuer the service trusts.
    pub fn any_trusted() -> Self {
        Self { issuers: None, scopes: Vec::new() }
    }

    /// Also require this scope.
    pub fn scope(mut self, scope: &str) -> Self {
        self.scopes.push(scope.to_string());
        self
    }

    /// Wraps the policy for `web::resource(..).app_data(..)`.
    pub fn data(self) -> web::Data<Self> {
        web::Data::new(self)
    }

    fn check(&self, token: &VerifiedToken) -> Result<(), ApiError> {
        if let Some(allowed) = &self.issuers
            && !allowed.iter().any(|i| i == token.issuer())
        {
            return Err(ApiError::Forbidden(format!("issuer `{}` may not call this route", token.issuer())));
        }
        if let Some(missing) = self.scopes.iter().find(|s| !token.has_scope(s)) {
            return Err(ApiError::Forbidden(format!("missing scope `{missing}`")));
        }
        Ok(())
    }
}

/// A verified service caller.
#[derive(Debug, Clone)]
pub struct ServiceCaller(pub VerifiedToken);

impl ServiceCaller {
    pub fn issuer(&self) -> &str {
        self.0.issuer()
    }

    /// The explicit authorization call a handler makes when a route's scopes depend on input.
    pub fn require_scope(&self, scope: &str) -> Result<(), ApiError> {
        if self.0.has_scope(scope) { Ok(()) } else { Err(ApiError::Forbidden(format!("missing scope `{scope}`"))) }
    }
}

/// Verifies a service token for this service: `401` if it does not verify, `503` if the keys
/// to verify it cannot be fetched now. Route policies are the caller's business.
pub async fn verify_token(platform: &Platform, token: &str) -> Result<VerifiedToken, ApiError> {
    platform.tokens.verifier.verify(token).await.map_err(|e| {
        tracing::info!(reason = %e, "service token refused");
        match e {
            queue_svc_token::TokenError::KeysUnavailable(_) => {
                ApiError::Unavailable("cannot verify service tokens right now".into())
            }
            _ => ApiError::Unauthorized("invalid service token".into()),
        }
    })
}

/// The bearer token of a request, if any.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(actix_web::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl FromRequest for ServiceCaller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let policy = req.app_data::<web::Data<ServicePolicy>>().cloned();
        let platform = req.app_data::<web::Data<Platform>>().cloned();
        let token = bearer(req).map(str::to_string);
        Box::pin(async move {
            let Some(policy) = policy else {
                tracing::error!("route takes a ServiceCaller but has no ServicePolicy; refusing");
                return Err(ApiError::Forbidden("this route accepts no service callers".into()));
            };
            let platform = platform.ok_or_else(|| ApiError::internal(anyhow::anyhow!("platform state missing")))?;
            let token = token.ok_or_else(|| ApiError::Unauthorized("missing service token".into()))?;
            let verified = verify_token(&platform, &token).await?;
            policy
                .check(&verified)
                .inspect_err(|e| tracing::info!(issuer = verified.issuer(), reason = %e, "service caller refused"))?;
            tracing::Span::current().record("caller", verified.issuer());
            Ok(ServiceCaller(verified))
        })
    }
}
