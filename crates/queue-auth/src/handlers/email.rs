//! Email verification: send a code and link; confirm either.

use actix_web::{HttpRequest, HttpResponse, web};
use diesel_async::AsyncConnection;
use queue_platform::ApiError;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::domain::email::{self, Proof};
use crate::domain::sessions::{self, Kind};
use crate::domain::users::EmailAddress;
use crate::extract::info;
use crate::state::AuthState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    pub email: String,
    /// Refused (400): sign-up names no tenant. Read only to answer it clearly.
    #[serde(default)]
    #[schema(ignore)]
    pub tenant_id: Option<IgnoredAny>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Always `accepted`, whether or not the address is known.
    pub status: &'static str,
}

/// Tenant membership is given (provisioning by a service, an invitation), never taken: an
/// anonymous sign-up that names a tenant is refused, and changes nothing.
fn names_no_tenant(tenant_id: &Option<IgnoredAny>) -> Result<(), ApiError> {
    match tenant_id {
        None => Ok(()),
        Some(_) => Err(ApiError::BadRequest(
            "`tenant_id` is not accepted here: signing up names no tenant; a tenant membership is given by \
             provisioning or an invitation"
                .into(),
        )),
    }
}

/// Send a verification code and link. The same 202 whether or not the address is known. Names
/// no tenant: a `tenant_id` is refused (400).
#[utoipa::path(post, path = "/api/v1/auth/email/verification", tag = "email", request_body = SendRequest,
    responses((status = 202, body = Accepted), (status = 400, description = "`tenant_id` named: sign-up names no tenant"), (status = 422), (status = 429)))]
pub async fn send(
    state: web::Data<AuthState>,
    req: HttpRequest,
    body: web::Json<SendRequest>,
) -> Result<HttpResponse, ApiError> {
    names_no_tenant(&body.tenant_id)?;
    let email = EmailAddress::parse(&body.email)?;
    let tenant = &state.config.auth.default_tenant;
    let mut conn = state.conn().await?;
    email::send(&mut conn, &state.config.email, &state.pepper, &state.mail, state.now(), &info(&req), tenant, &email)
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
    /// Refused (400): sign-up names no tenant. Read only to answer it clearly.
    #[serde(default)]
    #[schema(ignore)]
    pub tenant_id: Option<IgnoredAny>,
}

/// Confirm with the code (or the link token): marks the address verified, creates the user if
/// new (in the default tenant: the address's provisioned user when there is one), and returns
/// an enrollment session (may only register a passkey). No session is given to a user who
/// already has a passkey (an email alone never replaces a passkey), nor when the request
/// already holds a full session: a link never replaces the session a browser is signed in with
/// (`kept_session: true`, no cookie).
#[utoipa::path(post, path = "/api/v1/auth/email/verification/confirm", tag = "email", request_body = ConfirmRequest,
    responses((status = 200, body = crate::handlers::SessionEnvelope), (status = 400, description = "`tenant_id` named: sign-up names no tenant"), (status = 422), (status = 429)))]
pub async fn confirm(
    state: web::Data<AuthState>,
    req: HttpRequest,
    body: web::Json<ConfirmRequest>,
) -> Result<HttpResponse, ApiError> {
    names_no_tenant(&body.tenant_id)?;
    let tenant = &state.config.auth.default_tenant;
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
        email::confirm(&mut conn, &state.config.email, &state.config.limits, &state.pepper, now, &info, tenant, proof)
            .await;
    state.committed();
    let confirmed = confirmed?;
    let extra = serde_json::json!({"user_id": confirmed.user.id, "verified": true, "created": confirmed.created});
    if confirmed.has_passkey {
        let mut extra = extra;
        extra["session"] = serde_json::Value::Null;
        return Ok(HttpResponse::Ok().json(extra));
    }
    if signed_in(&state, &req, &mut conn).await? {
        let mut extra = extra;
        extra["session"] = serde_json::Value::Null;
        extra["kept_session"] = true.into();
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

/// Whether the request carries a live full session (cookie or bearer): a verification must not
/// sign that browser out of it (nor into another account).
async fn signed_in(
    state: &AuthState,
    req: &HttpRequest,
    conn: &mut queue_platform::db::PgConn,
) -> Result<bool, ApiError> {
    let Some(token) = queue_platform::sessions::session_token(req) else { return Ok(false) };
    let live = sessions::validate(conn, &state.config.sessions, state.now(), &token).await?;
    Ok(live.is_some_and(|s| s.kind == Kind::Full))
}
