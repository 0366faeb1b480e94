//! What a request says about its sender: the signed-in user (auth's [`SessionSource`] for
//! `queue_platform::SignedIn`, the session token from `Authorization: Bearer` or the
//! `queue_session` cookie) and the client's address and user agent.

use actix_web::{HttpRequest, web};
use futures_util::future::LocalBoxFuture;
use queue_platform::sessions::SessionSource;
use queue_platform::{ApiError, Platform};

use crate::domain::RequestInfo;
use crate::domain::sessions::{self, Session};
use crate::state::AuthState;

/// Auth's own sessions, validated against its database (the other services ask auth over HTTP:
/// `queue_platform::sessions::SessionValidator`). Registered as app data, it is what
/// `queue_platform::SignedIn<Session>` validates with: any session kind (handlers narrow with
/// `Session::require_full`).
pub struct LocalSessions(pub web::Data<AuthState>);

impl SessionSource for LocalSessions {
    type User = Session;

    fn validate<'a>(&'a self, _: &'a Platform, token: &'a str) -> LocalBoxFuture<'a, Result<Session, ApiError>> {
        Box::pin(async move {
            let state = &self.0;
            let mut conn = state.conn().await?;
            sessions::validate(&mut conn, &state.config.sessions, state.now(), token)
                .await?
                .ok_or_else(|| ApiError::Unauthorized("the session is invalid or has expired".into()))
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
