//! Email verification: send a code and link; confirm either.

use actix_web::{HttpRequest, HttpResponse, web};
use diesel_async::AsyncConnection;
use queue_platform::ApiError;
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder};
use utoipa::openapi::{RefOr, Schema};
use uuid::Uuid;

use crate::domain::email::{self, Proof};
use crate::domain::fields;
use crate::domain::sessions::{self, Kind};
use crate::domain::users::EmailAddress;
use crate::extract::info;
use crate::state::AuthState;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "ada@example.com"}))]
pub struct SendRequest {
    #[schema(schema_with = fields::schema::email)]
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
#[utoipa::path(post, path = "/api/v1/auth/email/verification", tag = "email", operation_id = "send_email_verification",
    request_body = SendRequest,
    responses((status = 202, body = Accepted), (status = 400, description = "`tenant_id` named: sign-up names no tenant"), (status = 422), (status = 429)))]
pub async fn send(
    state: web::Data<AuthState>,
    req: HttpRequest,
    body: web::Json<super::Object<SendRequest>>,
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

/// `{email, code}` or `{token}` (the schema is written out below: one or the other).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    /// With `code`.
    pub email: Option<String>,
    pub code: Option<String>,
    /// The link's token, instead of `email` + `code`.
    pub token: Option<String>,
    /// Refused (400): sign-up names no tenant. Read only to answer it clearly.
    #[serde(default)]
    pub tenant_id: Option<IgnoredAny>,
}

impl utoipa::PartialSchema for ConfirmRequest {
    /// The two proofs as alternatives, each with the rule its fields are checked by: serde reads
    /// the body as one struct of optional fields, so the derive could not say "one or the other".
    fn schema() -> RefOr<Schema> {
        let closed = || ObjectBuilder::new().additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let code = closed()
            .title(Some("code"))
            .property("email", fields::EMAIL.schema())
            .property("code", fields::EMAIL_CODE.schema())
            .required("email")
            .required("code");
        let link = closed().title(Some("link")).property("token", fields::LINK_TOKEN.schema()).required("token");
        OneOfBuilder::new()
            .item(code)
            .item(link)
            .examples([json!({"email": "ada@example.com", "code": "04719382"})])
            .into()
    }
}

impl utoipa::ToSchema for ConfirmRequest {}

/// The answer to a confirmation; `session` is set (and the cookie) only for a new enrollment
/// session.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"user_id": "0e9a1c52-8f6e-4b39-a3a4-5f0f3c1d2b7e", "verified": true, "created": true,
    "session": {"id": "5b1f8d0e-2c4a-4e8f-9d3b-7a6c5e4f3a21", "token": "q3Vt1Yb0m2cHc8Wk5n9dPzL4xRaTfGhJiKlMnOpQrSs",
        "kind": "enrollment", "user_id": "0e9a1c52-8f6e-4b39-a3a4-5f0f3c1d2b7e",
        "idle_expires_at": "2026-12-07T15:30:00Z", "absolute_expires_at": "2026-12-07T15:30:00Z"}}))]
pub struct Confirmed {
    pub user_id: Uuid,
    /// Always `true`.
    pub verified: bool,
    /// Whether the user was created by this confirmation.
    pub created: bool,
    /// The enrollment session; `null` when the user already has a passkey, or when the request
    /// holds a full session (then `kept_session` is `true`).
    pub session: Option<super::SessionOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_session: Option<bool>,
}

/// Confirm with the code (or the link token): marks the address verified, creates the user if
/// new (in the default tenant: the address's provisioned user when there is one), and returns
/// an enrollment session (may only register a passkey). No session is given to a user who
/// already has a passkey (an email alone never replaces a passkey), nor when the request
/// already holds a full session: a link never replaces the session a browser is signed in with
/// (`kept_session: true`, no cookie).
#[utoipa::path(post, path = "/api/v1/auth/email/verification/confirm", tag = "email", operation_id = "confirm_email_verification",
    request_body = ConfirmRequest,
    responses((status = 200, body = Confirmed), (status = 401, description = "The code or link is wrong, expired or used up"), (status = 400, description = "`tenant_id` named: sign-up names no tenant"), (status = 422), (status = 429)))]
pub async fn confirm(
    state: web::Data<AuthState>,
    req: HttpRequest,
    body: web::Json<super::Object<ConfirmRequest>>,
) -> Result<HttpResponse, ApiError> {
    names_no_tenant(&body.tenant_id)?;
    let tenant = &state.config.auth.default_tenant;
    let email;
    let proof = match (&body.email, &body.code, &body.token) {
        (Some(e), Some(c), None) => {
            email = EmailAddress::parse(e)?;
            fields::EMAIL_CODE.check(c)?;
            Proof::Code { email: &email, code: c }
        }
        (None, None, Some(t)) if fields::LINK_TOKEN.fits(t) => Proof::Link { token: t },
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
    let answer = Confirmed {
        user_id: confirmed.user.id,
        verified: true,
        created: confirmed.created,
        session: None,
        kept_session: None,
    };
    if confirmed.has_passkey {
        return Ok(HttpResponse::Ok().json(answer));
    }
    if signed_in(&state, &req, &mut conn).await? {
        return Ok(HttpResponse::Ok().json(Confirmed { kept_session: Some(true), ..answer }));
    }
    let cfg = &state.config.sessions;
    let minted = conn
        .transaction::<_, crate::domain::Error, _>(async |conn| {
            sessions::create(conn, cfg, now, &info, confirmed.user.id, &confirmed.user.tenant_id, Kind::Enrollment)
                .await
        })
        .await?;
    state.committed();
    // `session_response` fills in the session.
    let extra = serde_json::to_value(answer).map_err(ApiError::internal)?;
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
