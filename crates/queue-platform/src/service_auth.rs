//! Service-token authentication for actix routes.
//!
//! A route states which callers it accepts by attaching a [`ServicePolicy`] as resource data;
//! a handler that takes a [`ServiceCaller`] then only runs for a caller whose token verifies
//! (audience = this service) and whose issuer and scopes the policy allows. A route without a
//! policy accepts nobody: forgetting the policy fails closed.
//!
//! A token is one use on a state-changing request: any method but GET, HEAD and OPTIONS spends
//! it (see `queue_svc_token::ReplayGuard`), unless the route is marked [`ReadOnlyRoute`] (a POST
//! that only reads, such as a permission check with a body). Marking is opt-out, so a new write
//! route is one-use without anyone remembering to ask for it.

use actix_web::dev::Payload;
use actix_web::http::Method;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use queue_svc_token::VerifiedToken;

use crate::error::ApiError;
use crate::state::Platform;

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

/// Route data (`web::resource(..).app_data(ReadOnlyRoute)`) for a route whose non-GET method
/// only reads: a service token may be used on it again for its lifetime.
#[derive(Debug, Clone, Copy)]
pub struct ReadOnlyRoute;

/// How a request may use its service token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenUse {
    /// A read: the token may be presented again.
    Reusable,
    /// A request that changes state: the token's first and only use on this replica.
    Once,
}

impl TokenUse {
    /// `Once` for every method but GET, HEAD and OPTIONS, unless the route is a [`ReadOnlyRoute`].
    pub fn of(req: &HttpRequest) -> Self {
        let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if safe || req.app_data::<ReadOnlyRoute>().is_some() { Self::Reusable } else { Self::Once }
    }
}

/// A verified service caller.
#[derive(Debug, Clone)]
pub struct ServiceCaller(pub VerifiedToken);

impl ServiceCaller {
    pub fn issuer(&self) -> &str {
        self.0.issuer()
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.0.has_scope(scope)
    }

    /// The explicit authorization call a handler makes when a route's scopes depend on input.
    pub fn require_scope(&self, scope: &str) -> Result<(), ApiError> {
        if self.has_scope(scope) { Ok(()) } else { Err(ApiError::Forbidden(format!("missing scope `{scope}`"))) }
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

/// Verifies a token for a request that uses it as `usage` says: for [`TokenUse::Once`] the
/// token is also spent, and refused (`401 token_replayed`) if this replica saw it spent before.
pub async fn verify_token_for(platform: &Platform, token: &str, usage: TokenUse) -> Result<VerifiedToken, ApiError> {
    let verified = verify_token(platform, token).await?;
    if usage == TokenUse::Once {
        spend(platform, &verified)?;
    }
    Ok(verified)
}

/// Spends a verified token on a state-changing request (see [`verify_token_for`]).
pub fn spend(platform: &Platform, token: &VerifiedToken) -> Result<(), ApiError> {
    platform.tokens.verifier.spend(token).map_err(|e| {
        // The jti is not a secret (the signature is what makes a token), and it is what an
        // operator needs to find the first use.
        tracing::warn!(issuer = token.issuer(), jti = %token.claims.jti, reason = %e, "service token refused");
        match e {
            queue_svc_token::TokenError::Replayed => ApiError::TokenReplayed,
            _ => ApiError::Unavailable("too many service tokens in flight; retry shortly".into()),
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
        let usage = TokenUse::of(req);
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
            // Spent only once the route has accepted the caller: a refused call burns nothing.
            if usage == TokenUse::Once {
                spend(&platform, &verified)?;
            }
            tracing::Span::current().record("caller", verified.issuer());
            Ok(ServiceCaller(verified))
        })
    }
}
