//! Who is calling: the one extractor every service uses for a request that a service or a user
//! may make.
//!
//! [`Caller`] is a service (its token verified on the terms of the route's
//! [`ServicePolicy`](crate::service_auth::ServicePolicy), one use on state-changing requests, as
//! [`ServiceCaller`] says) or a user (a session, validated by the [`SessionSource`] the service
//! registered as app data; without one a session is refused with `401 this service accepts
//! service tokens only`). [`SignedIn`] narrows to users for routes that no service calls.
//!
//! Authorization stays in the handler: `Caller` says who, the handler says what they may do
//! (for a service, `service_may`; for a user, the service's own rules).

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;

use crate::error::ApiError;
use crate::service_auth::ServiceCaller;
use crate::sessions::{Credential, SessionSource, SessionUser, credential, session_token};
use crate::state::Platform;

/// A service or a user. `U` is what the service's [`SessionSource`] yields: a [`SessionUser`]
/// (validated by the auth service) everywhere but in auth itself.
#[derive(Debug, Clone)]
pub enum Caller<U = SessionUser> {
    Service(ServiceCaller),
    User(U),
}

impl<U> Caller<U> {
    /// `service` or `user`: the kind of party audit events name.
    pub fn kind(&self) -> &'static str {
        match self {
            Caller::Service(_) => "service",
            Caller::User(_) => "user",
        }
    }

    /// A service caller must be one of `issuers` and hold `scope`; a user never passes.
    pub fn service_may(&self, issuers: &[String], scope: &str) -> bool {
        match self {
            Caller::Service(s) => issuers.iter().any(|i| i == s.issuer()) && s.has_scope(scope),
            Caller::User(_) => false,
        }
    }
}

impl Caller<SessionUser> {
    /// The issuer of a service, the id of a user: with [`kind`](Self::kind), the party audit
    /// events name (`Party::new(caller.kind(), caller.id())`).
    pub fn id(&self) -> &str {
        match self {
            Caller::Service(s) => s.issuer(),
            Caller::User(u) => &u.user_id,
        }
    }

    /// `service:raptor` or `user:<id>`, for columns such as `granted_by`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.kind(), self.id())
    }

    /// The rate-limit bucket: the calling service, or `user:<id>`.
    pub fn bucket(&self) -> String {
        match self {
            Caller::Service(s) => s.issuer().to_string(),
            Caller::User(_) => self.label(),
        }
    }
}

impl<U: 'static> FromRequest for Caller<U> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        match credential(req) {
            Some(Credential::Session(token)) => {
                let user = user_of::<U>(req, token);
                Box::pin(async move { Ok(Caller::User(user.await?)) })
            }
            // Nothing, where sessions are taken too: say that either will do.
            None if req.app_data::<web::Data<dyn SessionSource<User = U>>>().is_some() => {
                Box::pin(async { Err(ApiError::Unauthorized("a service token or a user session is required".into())) })
            }
            // A service token, or nothing: the service side says what is missing.
            _ => {
                let service = ServiceCaller::from_request(req, payload);
                Box::pin(async move { Ok(Caller::Service(service.await?)) })
            }
        }
    }
}

/// A request from a signed-in user only: the request's session token (the bearer token, else
/// the `queue_session` cookie: `sessions::session_token`) validated by the service's
/// [`SessionSource`]; `401 sign in first` without one.
#[derive(Debug, Clone)]
pub struct SignedIn<U>(pub U);

impl<U> SignedIn<U> {
    pub fn into_inner(self) -> U {
        self.0
    }
}

impl<U> std::ops::Deref for SignedIn<U> {
    type Target = U;

    fn deref(&self) -> &U {
        &self.0
    }
}

impl<U: 'static> FromRequest for SignedIn<U> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        match session_token(req) {
            Some(token) => {
                let user = user_of::<U>(req, token);
                Box::pin(async move { Ok(SignedIn(user.await?)) })
            }
            None => Box::pin(async { Err(ApiError::Unauthorized("sign in first".into())) }),
        }
    }
}

/// Validates `token` with the service's registered [`SessionSource`].
fn user_of<U: 'static>(req: &HttpRequest, token: String) -> LocalBoxFuture<'static, Result<U, ApiError>> {
    let platform = req.app_data::<web::Data<Platform>>().cloned();
    let source = req.app_data::<web::Data<dyn SessionSource<User = U>>>().cloned();
    Box::pin(async move {
        let platform = platform.ok_or_else(|| ApiError::internal(anyhow::anyhow!("platform state missing")))?;
        let source = source.ok_or_else(|| ApiError::Unauthorized("this service accepts service tokens only".into()))?;
        source.validate(&platform, &token).await
    })
}
