//! User sessions: the credential of a request (a `queue_session` cookie, or a bearer token that
//! is not a service token) and the [`SessionSource`] a service validates it with. Services other
//! than auth use [`SessionValidator`]: auth's `POST /internal/v1/sessions/validate` with this
//! service's own token (scope `sessions:validate`), briefly cached by SHA-256 of the token
//! (tokens themselves are never kept). Auth validates its own sessions against its database.

use actix_web::{HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::state::Platform;

/// What a request presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A service token (a JWT: three dot-separated parts).
    Service(String),
    /// A user session token.
    Session(String),
}

/// The credential of a request, if any: the bearer token, else the `queue_session` cookie.
pub fn credential(req: &HttpRequest) -> Option<Credential> {
    if let Some(b) = crate::service_auth::bearer(req) {
        return Some(if b.split('.').count() == 3 {
            Credential::Service(b.to_string())
        } else {
            Credential::Session(b.to_string())
        });
    }
    session_cookies(req).find(|v| !v.is_empty()).map(|v| Credential::Session(v.to_string()))
}

/// The session token of a request that only users call (auth's account routes): the bearer
/// token, whatever it looks like, else the `queue_session` cookie, even empty (which then fails
/// validation rather than counting as absent).
pub fn session_token(req: &HttpRequest) -> Option<String> {
    if let Some(t) = crate::service_auth::bearer(req) {
        return Some(t.to_string());
    }
    session_cookies(req).next().map(str::to_string)
}

/// The cookie that carries a user session.
pub const COOKIE: &str = "queue_session";

/// The values of the request's `queue_session` cookies, in order.
fn session_cookies(req: &HttpRequest) -> impl Iterator<Item = &str> {
    let header = req.headers().get(actix_web::http::header::COOKIE).and_then(|v| v.to_str().ok());
    header
        .into_iter()
        .flat_map(|h| h.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// How a service turns a session token into its user: registered once as app data
/// (`cfg.app_data(source.into_data())`) and used by the `caller` extractors. A service that
/// registers none takes service tokens only.
pub trait SessionSource: Send + Sync + 'static {
    /// What a valid session yields.
    type User: 'static;

    /// The session's user, or the refusal (`401`, `403`, `503`) to answer with.
    fn validate<'a>(
        &'a self,
        platform: &'a Platform,
        token: &'a str,
    ) -> LocalBoxFuture<'a, Result<Self::User, ApiError>>;

    /// Wraps the source for `cfg.app_data(..)`.
    fn into_data(self) -> web::Data<dyn SessionSource<User = Self::User>>
    where
        Self: Sized,
    {
        web::Data::from(std::sync::Arc::new(self) as std::sync::Arc<dyn SessionSource<User = Self::User>>)
    }
}

/// A user session validated by the auth service (`SessionValidator`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionUser {
    pub user_id: String,
    pub session_id: String,
    pub tenant_id: Option<String>,
}

#[derive(serde::Deserialize)]
struct Validated {
    valid: bool,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
    /// Only full sessions act outside auth (enrollment and recovery sessions may not).
    #[serde(default)]
    kind: Option<String>,
}

/// Validates sessions with the auth service.
pub struct SessionValidator {
    auth_url: url::Url,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], (SessionUser, Instant)>>,
}

impl SessionValidator {
    /// `auth_url`: the auth service; `cache_secs`: how long a validated session is trusted
    /// without asking again (0 = always ask).
    pub fn new(auth_url: url::Url, cache_secs: u64) -> Self {
        Self { auth_url, ttl: Duration::from_secs(cache_secs), cache: Mutex::new(HashMap::new()) }
    }

    /// `401` for an invalid or expired session, `403` for a session that is not a full one,
    /// `503` when auth cannot be asked.
    pub async fn validate(&self, platform: &Platform, token: &str) -> Result<SessionUser, ApiError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if !self.ttl.is_zero() {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((u, until)) = cache.get(&key)
                && *until > Instant::now()
            {
                return Ok(u.clone());
            }
        }
        let unavailable = || ApiError::Unavailable("cannot validate the session right now".into());
        let service_token = platform
            .tokens
            .minter
            .mint("auth", &["sessions:validate"], 60)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("cannot mint a token: {e}")))?;
        let url = self.auth_url.join("/internal/v1/sessions/validate").map_err(ApiError::internal)?;
        let request = platform
            .http
            .post(url.as_str())
            .bearer_auth(service_token)
            .json(&serde_json::json!({ "token": token }))
            .timeout(Duration::from_secs(3));
        let response = platform.http.send(request).await.map_err(|e| {
            tracing::warn!(error = %e, "auth unreachable");
            unavailable()
        })?;
        if !response.status().is_success() {
            tracing::warn!(status = %response.status(), "auth refused the session validation");
            return Err(unavailable());
        }
        let v: Validated = response.json().await.map_err(|_| unavailable())?;
        let (true, Some(user_id), Some(session_id)) = (v.valid, v.user_id, v.session_id) else {
            return Err(ApiError::Unauthorized("invalid or expired session".into()));
        };
        if v.kind.as_deref().is_some_and(|k| k != "full") {
            return Err(ApiError::Forbidden("this session may only register a passkey".into()));
        }
        let user = SessionUser { user_id, session_id, tenant_id: v.tenant_id };
        if !self.ttl.is_zero() {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() > 100_000 {
                cache.clear();
            }
            cache.insert(key, (user.clone(), Instant::now() + self.ttl));
        }
        Ok(user)
    }
}

impl SessionSource for SessionValidator {
    type User = SessionUser;

    fn validate<'a>(
        &'a self,
        platform: &'a Platform,
        token: &'a str,
    ) -> LocalBoxFuture<'a, Result<SessionUser, ApiError>> {
        Box::pin(SessionValidator::validate(self, platform, token))
    }
}
