//! Request extractors: the signed-in user (a session token from the `queue_session` cookie or
//! `Authorization: Bearer`) and what a request says about its sender.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use queue_platform::ApiError;

use crate::domain::RequestInfo;
use crate::domain::sessions::{self, Kind, Session};
use crate::state::AuthState;

/// The session token a request carries, if any.
pub fn session_token(req: &HttpRequest) -> Option<String> {
    if let Some(t) = queue_platform::service_auth::bearer(req) {
        return Some(t.to_string());
    }
    let header = req.headers().get(actix_web::http::header::COOKIE)?.to_str().ok()?;
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == crate::COOKIE)
        .map(|(_, v)| v.to_string())
}

/// A request from a signed-in user (any session kind; handlers narrow with `require_full`).
#[derive(Debug, Clone)]
pub struct SessionUser(pub Session);

impl SessionUser {
    /// Everything but registering a passkey needs a full session.
    pub fn require_full(&self) -> Result<&Session, ApiError> {
        if self.0.kind == Kind::Full {
            Ok(&self.0)
        } else {
            Err(ApiError::Forbidden(format!(
                "a {} session may only register a passkey; sign in with a passkey first",
                self.0.kind.as_str()
            )))
        }
    }
}

impl FromRequest for SessionUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AuthState>>().cloned();
        let token = session_token(req);
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal(anyhow::anyhow!("auth state missing")))?;
            let token = token.ok_or_else(|| ApiError::Unauthorized("sign in first".into()))?;
            let mut conn = state.conn().await?;
            let session = sessions::validate(&mut conn, &state.config.sessions, state.now(), &token)
                .await?
                .ok_or_else(|| ApiError::Unauthorized("the session is invalid or has expired".into()))?;
            Ok(SessionUser(session))
        })
    }
}

/// The client's address and user agent. The address is the TCP peer, unless the peer is in
/// `auth.trusted_proxies`: then the right-most `X-Forwarded-For` address that is not a trusted
/// proxy (`queue_platform::net::TrustedNetworks::client_ip`), so a client behind the proxy is
/// itself, and a forged header from anyone is never believed.
pub fn info(req: &HttpRequest) -> RequestInfo {
    let state = req.app_data::<web::Data<AuthState>>();
    let ip = req.peer_addr().map(|peer| match state {
        Some(s) => s.config.auth.trusted_proxies.client_ip(
            peer.ip(),
            req.headers().get_all("x-forwarded-for").map(actix_web::http::header::HeaderValue::as_bytes),
        ),
        None => peer.ip(),
    });
    RequestInfo {
        ip: ip.map(|i| i.to_string()),
        user_agent: req
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect()),
        trace_id: None,
    }
}
