//! Who am I, logout, the user's sessions, and validation for services.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use queue_platform::{ApiError, ServiceCaller, SignedIn};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::sessions::{self, Session, Which};
use crate::domain::{Error, users};
use crate::extract::info;
use crate::state::AuthState;

#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"user": {"id": "0e9a1c52-8f6e-4b39-a3a4-5f0f3c1d2b7e", "tenant_id": "acme", "email": "ada@example.com", "email_verified_at": "2026-12-07T14:58:12Z", "display_name": "Ada Lovelace", "status": "active", "created_at": "2026-12-07T14:58:12Z", "updated_at": "2026-12-07T14:58:12Z"}, "session": {"id": "5b1f8d0e-2c4a-4e8f-9d3b-7a6c5e4f3a21", "user_id": "0e9a1c52-8f6e-4b39-a3a4-5f0f3c1d2b7e", "tenant_id": "acme", "kind": "full", "created_at": "2026-12-07T15:00:00Z", "last_seen_at": "2026-12-07T15:02:41Z", "idle_expires_at": "2026-12-07T15:32:41Z", "absolute_expires_at": "2026-12-21T15:00:00Z", "ip": "203.0.113.7", "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0", "verified_at": "2026-12-07T15:00:00Z"}}))]
pub struct WhoAmI {
    pub user: users::User,
    pub session: Session,
}

/// Who am I (slides the idle timeout).
#[utoipa::path(get, path = "/api/v1/auth/session", tag = "sessions", operation_id = "whoami", security(("session" = [])),
    responses((status = 200, body = WhoAmI)))]
pub async fn whoami(state: web::Data<AuthState>, user: SignedIn<Session>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.conn().await?;
    let u =
        users::get(&mut conn, user.0.user_id).await?.ok_or_else(|| ApiError::Unauthorized("no such user".into()))?;
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(WhoAmI { user: u, session: user.0 }))
}

async fn revoke(
    state: &AuthState,
    req: &HttpRequest,
    s: &Session,
    which: Which,
    reason: &'static str,
) -> Result<usize, ApiError> {
    let now = state.now();
    let info = info(req);
    let mut conn = state.conn().await?;
    let n = conn
        .transaction::<_, Error, _>(async |conn| {
            sessions::revoke(conn, now, &info, s.user_id, &s.tenant_id, which, reason).await
        })
        .await?;
    state.committed();
    Ok(n)
}

/// Log out: revokes this session and clears the cookie.
#[utoipa::path(delete, path = "/api/v1/auth/session", tag = "sessions", operation_id = "logout", security(("session" = [])),
    responses((status = 204)))]
pub async fn logout(
    state: web::Data<AuthState>,
    user: SignedIn<Session>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    revoke(&state, &req, &user.0, Which::One(user.0.id), "logout").await?;
    Ok(HttpResponse::NoContent().insert_header(("set-cookie", state.cookie(None, 0))).finish())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionItem>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SessionItem {
    #[serde(flatten)]
    pub session: Session,
    pub current: bool,
}

/// The user's live sessions.
#[utoipa::path(get, path = "/api/v1/auth/sessions", tag = "sessions", operation_id = "list_sessions", security(("session" = [])),
    responses((status = 200, body = SessionList)))]
pub async fn list(state: web::Data<AuthState>, user: SignedIn<Session>) -> Result<HttpResponse, ApiError> {
    let s = user.require_full()?;
    let mut conn = state.conn().await?;
    let list = sessions::list(&mut conn, s.user_id, state.now()).await?;
    let sessions = list.into_iter().map(|x| SessionItem { current: x.id == s.id, session: x }).collect();
    Ok(HttpResponse::Ok().json(SessionList { sessions }))
}

/// Revoke one of the user's sessions.
#[utoipa::path(delete, path = "/api/v1/auth/sessions/{id}", tag = "sessions", operation_id = "revoke_session", security(("session" = [])),
    params(("id" = Uuid, Path)), responses((status = 204), (status = 404, description = "No such live session of this user")))]
pub async fn revoke_one(
    state: web::Data<AuthState>,
    user: SignedIn<Session>,
    req: HttpRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let s = user.require_full()?;
    if revoke(&state, &req, s, Which::One(*id), "revoked_by_user").await? == 0 {
        return Err(ApiError::NotFound("no such live session".into()));
    }
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"revoked": 2}))]
pub struct Revoked {
    pub revoked: usize,
}

/// Revoke every other session of the user.
#[utoipa::path(post, path = "/api/v1/auth/sessions/revoke-others", tag = "sessions", operation_id = "revoke_other_sessions",
    security(("session" = [])), responses((status = 200, body = Revoked)))]
pub async fn revoke_others(
    state: web::Data<AuthState>,
    user: SignedIn<Session>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let s = user.require_full()?;
    let n = revoke(&state, &req, s, Which::AllBut(s.id), "revoked_others").await?;
    Ok(HttpResponse::Ok().json(Revoked { revoked: n }))
}

/// Revoke every session of the user, this one included (a lost or stolen device).
#[utoipa::path(post, path = "/api/v1/auth/sessions/revoke-all", tag = "sessions", operation_id = "revoke_all_sessions",
    security(("session" = [])), responses((status = 200, body = Revoked)))]
pub async fn revoke_all(
    state: web::Data<AuthState>,
    user: SignedIn<Session>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let s = user.require_full()?;
    let n = revoke(&state, &req, s, Which::All, "revoked_all").await?;
    Ok(HttpResponse::Ok().insert_header(("set-cookie", state.cookie(None, 0))).json(Revoked { revoked: n }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"token": "q3Vt1Yb0m2cHc8Wk5n9dPzL4xRaTfGhJiKlMnOpQrSs"}))]
pub struct ValidateRequest {
    pub token: String,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"valid": true, "session_id": "5b1f8d0e-2c4a-4e8f-9d3b-7a6c5e4f3a21", "user_id": "0e9a1c52-8f6e-4b39-a3a4-5f0f3c1d2b7e", "tenant_id": "acme", "idle_expires_at": "2026-12-07T15:32:41Z", "absolute_expires_at": "2026-12-21T15:00:00Z"}))]
pub struct Validation {
    pub valid: bool,
    pub session_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub tenant_id: Option<String>,
    pub idle_expires_at: Option<DateTime<Utc>>,
    pub absolute_expires_at: Option<DateTime<Utc>>,
}

/// For services (the proxy): is this session token valid? Slides the idle timeout like any use.
/// Concurrent calls share one database query (coalesced validation).
/// Only full sessions are valid here: enrollment and recovery sessions exist only to register a
/// passkey with this service.
#[utoipa::path(post, path = "/internal/v1/sessions/validate", tag = "sessions", operation_id = "validate_session",
    security(("service_token" = ["sessions:validate"])), request_body = ValidateRequest,
    responses((status = 200, body = Validation)))]
pub async fn validate(
    state: web::Data<AuthState>,
    _caller: ServiceCaller,
    body: web::Json<super::Object<ValidateRequest>>,
) -> Result<HttpResponse, ApiError> {
    // A token of another length cannot match, so skip the query. Only
    // the hash goes on to the (coalescing) validator; the token itself is dropped here.
    let body = body.into_inner().0;
    let found = if body.token.len() == crate::domain::crypto::TOKEN_LEN {
        let hash = sessions::token_hash(&body.token);
        drop(body);
        state.validator.validate(hash).await?
    } else {
        None
    };
    let out = match found {
        Some(s) if s.kind == sessions::Kind::Full => Validation {
            valid: true,
            session_id: Some(s.id),
            user_id: Some(s.user_id),
            tenant_id: Some(s.tenant_id),
            idle_expires_at: Some(s.idle_expires_at),
            absolute_expires_at: Some(s.absolute_expires_at),
        },
        _ => Validation {
            valid: false,
            session_id: None,
            user_id: None,
            tenant_id: None,
            idle_expires_at: None,
            absolute_expires_at: None,
        },
    };
    Ok(HttpResponse::Ok().json(out))
}
