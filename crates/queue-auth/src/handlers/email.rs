//! Email verification: send a code and link; confirm either.

use actix_web::{HttpRequest, HttpResponse, web};
use diesel_async::AsyncConnection;
use queue_platform::ApiError;
use serde::{Deserialize, Serialize};

use crate::domain::email::{self, Proof};
use crate::domain::sessions::{self, Kind};
use crate::domain::users::{self, EmailAddress};
use crate::extract::info;
use crate::state::AuthState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub email: String,
    pub tenant_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Always `accepted`, whether or not the address is known.
    pub status: &'static str,
}

fn tenant_of(state: &AuthState, t: &Option<String>) -> Result<String, ApiError> {
    let t = t.clone().unwrap_or_else(|| state.config.auth.default_tenant.clone());
    users::check_tenant(&t)?;
    Ok(t)
}

/// Send a verification code and link. The same 202 whether or not the address is known.
#[utoipa::path(post, path = "/api/v1/auth/email/verification", tag = "email", request_body = SendRequest,
    responses((status = 202, body = Accepted), (status = 422), (status = 429)))]
pub async fn send(
    state: web::Data<AuthState>,
    req: HttpRequest,
    body: web::Json<SendRequest>,
) -> Result<HttpResponse, ApiError> {
    let email = EmailAddress::parse(&body.email)?;
    let tenant = tenant_of(&state, &body.tenant_id)?;
    let mut conn = state.conn().await?;
    email::send(&mut conn, &state.config.email, &state.pepper, &state.mail, state.now(), &info(&req), &tenant, &email)
        .await?;
    state.mail.wake();
    state.committed();
    Ok(HttpResponse::Accepted().json(Accepted { status: "accepted" }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    /// With `code`.
    pub email: Option<String>,
    pub code: Option<String>,
    /// The link's token, instead of `email` + `code`.
    pub token: Option<String>,
    pub tenant_id: Option<String>,
}

/// Confirm with the code (or the link token): marks the address verified, creates the user if
/// new, and returns an enrollment session (may only register a passkey). A user who already
/// has a passkey gets no session: an email alone never replaces a passkey.
#[utoipa::path(post, path = "/api/v1/auth/email/verification/confirm", tag = "email", request_body = ConfirmRequest,
    responses((status = 200, body = crate::handlers::SessionEnvelope), (status = 422), (status = 429)))]
pub async fn confirm(
    state: web::Data<AuthState>,
    req: HttpRequest,
    body: web::Json<ConfirmRequest>,
) -> Result<HttpResponse, ApiError> {
    let tenant = tenant_of(&state, &body.tenant_id)?;
    let email;
    let proof = match (&body.email, &body.code, &body.token) {
        (Some(e), Some(c), None) => {
            email = EmailAddress::parse(e)?;
            if c.len() != 8 || !c.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ApiError::invalid("code", "8 digits"));
            }
            Proof::Code { email: &email, code: c }
        }
        (None, None, Some(t)) if t.len() == crate::domain::crypto::TOKEN_LEN => Proof::Link { token: t },
        (None, None, Some(_)) => return Err(email::refused()),
        _ => return Err(ApiError::invalid("body", "give `email` and `code`, or `token`")),
    };
    let now = state.now();
    let info = info(&req);
    let mut conn = state.conn().await?;
    let confirmed =
        email::confirm(&mut conn, &state.config.email, &state.config.limits, &state.pepper, now, &info, &tenant, proof)
            .await;
    state.committed();
    let confirmed = confirmed?;
    let extra = serde_json::json!({"user_id": confirmed.user.id, "verified": true, "created": confirmed.created});
    if confirmed.has_passkey {
        let mut extra = extra;
        extra["session"] = serde_json::Value::Null;
        return Ok(HttpResponse::Ok().json(extra));
    }
    let cfg = &state.config.sessions;
    let minted = conn
        .transaction::<_, crate::domain::Error, _>(async |conn| {
            sessions::create(conn, cfg, now, &info, confirmed.user.id, &confirmed.user.tenant_id, Kind::Enrollment)
                .await
        })
        .await?;
    state.committed();
    Ok(super::session_response(&state, minted, extra))
}
