//! Passkey ceremonies and credential management.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use queue_platform::{ApiError, SignedIn};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::passkeys::{self, LoginOutcome, Purpose};
use crate::domain::sessions::{self, Kind, Session};
use crate::domain::users::{self, EmailAddress};
use crate::domain::{Error, audit, fields, limits};
use crate::extract::info;
use crate::state::AuthState;

/// A ceremony begun: its id (for the finish) and the options for `navigator.credentials`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"ceremony_id": "3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c", "options": {"publicKey": {"challenge": "oQSe48BnmzeUPHmK_14m8TESkmQES46qW3WC6W4IFqc", "timeout": 300000, "rpId": "example.com", "allowCredentials": [], "userVerification": "required"}, "mediation": "conditional"}}))]
pub struct CeremonyStarted {
    pub ceremony_id: Uuid,
    /// WebAuthn's options as webauthn-rs writes them (`publicKey`, and `mediation` for a login):
    /// pass them to `navigator.credentials.create()` or `.get()`.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

impl CeremonyStarted {
    fn new(ceremony_id: Uuid, options: &impl Serialize) -> Result<Self, ApiError> {
        let options = serde_json::to_value(options).map_err(ApiError::internal)?;
        Ok(Self { ceremony_id, options })
    }
}

/// A re-authentication recorded on the session.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Reverified {
    pub verified_at: DateTime<Utc>,
}

/// The user's passkeys.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PasskeyList {
    pub credentials: Vec<passkeys::CredentialInfo>,
}

/// Step-up for adding a way in: a full session's passkey assertion must be recent.
fn step_up(state: &AuthState, s: &sessions::Session) -> Result<(), ApiError> {
    Ok(sessions::require_recent_verification(s, state.now(), state.config.sessions.step_up_secs)?)
}

/// Start registering a passkey: an enrollment or recovery session (their purpose), or a full
/// session whose user verified with a passkey within `sessions.step_up_secs` (else 403
/// `step_up_required`: re-authenticate first).
#[utoipa::path(post, path = "/api/v1/auth/webauthn/register/start", tag = "webauthn", operation_id = "start_passkey_registration",
    security(("session" = [])),
    responses((status = 200, body = CeremonyStarted, description = "`options` is the WebAuthn CreationChallengeResponse"),
              (status = 403, description = "`step_up_required`: verify with a passkey first (`…/webauthn/reauth/start`)")))]
pub async fn register_start(state: web::Data<AuthState>, user: SignedIn<Session>) -> Result<HttpResponse, ApiError> {
    step_up(&state, &user.0)?;
    let mut conn = state.conn().await?;
    let u =
        users::get(&mut conn, user.0.user_id).await?.ok_or_else(|| ApiError::Unauthorized("no such user".into()))?;
    let (id, ccr) = passkeys::register_start(
        &mut conn,
        &state.webauthn,
        state.config.webauthn.ceremony_ttl_secs,
        state.now(),
        &user.0,
        &u,
    )
    .await?;
    Ok(HttpResponse::Ok().json(CeremonyStarted::new(id, &ccr)?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterFinish {
    pub ceremony_id: Uuid,
    /// The browser's RegisterPublicKeyCredential (`credential.toJSON()`).
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
    /// Absent: `Passkey`.
    #[schema(schema_with = fields::schema::passkey_name_or_null)]
    pub name: Option<String>,
}

/// Finish registering: stores the passkey and mails the user that a passkey was added. The
/// same step-up as `register/start`.
#[utoipa::path(post, path = "/api/v1/auth/webauthn/register/finish", tag = "webauthn", operation_id = "finish_passkey_registration",
    security(("session" = [])), request_body = RegisterFinish,
    responses((status = 201, body = crate::domain::passkeys::CredentialInfo),
              (status = 403, description = "`step_up_required`: verify with a passkey first"),
              (status = 404, description = "No registration ceremony by that id for this session (unknown, used or expired)"),
              (status = 409, description = "The passkey is already registered")))]
pub async fn register_finish(
    state: web::Data<AuthState>,
    user: SignedIn<Session>,
    req: HttpRequest,
    body: web::Json<super::Object<RegisterFinish>>,
) -> Result<HttpResponse, ApiError> {
    step_up(&state, &user.0)?;
    let body = body.into_inner().0;
    let mut conn = state.conn().await?;
    let out = passkeys::register_finish(
        &mut conn,
        &state.webauthn,
        state.now(),
        &info(&req),
        &state.mail,
        &user.0,
        body.ceremony_id,
        body.credential,
        body.name,
    )
    .await?;
    state.mail.wake();
    state.committed();
    Ok(HttpResponse::Created().json(out))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "ada@example.com"}))]
pub struct LoginStart {
    /// Absent: usernameless (a discoverable credential).
    #[schema(schema_with = fields::schema::email_or_null)]
    pub email: Option<String>,
    /// Absent: the default tenant.
    #[schema(schema_with = fields::schema::tenant_id_or_null)]
    pub tenant_id: Option<String>,
}

/// Start a login. The answer has the same shape whether or not the address is known.
#[utoipa::path(post, path = "/api/v1/auth/webauthn/login/start", tag = "webauthn", operation_id = "start_passkey_login",
    request_body = LoginStart,
    responses((status = 200, body = CeremonyStarted, description = "`options` is the WebAuthn RequestChallengeResponse"), (status = 429)))]
pub async fn login_start(
    state: web::Data<AuthState>,
    req: HttpRequest,
    body: web::Json<super::Object<LoginStart>>,
) -> Result<HttpResponse, ApiError> {
    let tenant = body.tenant_id.clone().unwrap_or_else(|| state.config.auth.default_tenant.clone());
    users::check_tenant(&tenant)?;
    let email = body.email.as_deref().map(EmailAddress::parse).transpose()?;
    let now = state.now();
    let info = info(&req);
    let lim = &state.config.limits;
    let mut conn = state.conn().await?;
    let account = email.as_ref().map(|e| limits::account(&tenant, e.as_str()));
    match (&info.ip_key(), &account) {
        (Some(ip), Some(a)) => limits::check_both(&mut conn, lim, now, ("login_ip", ip), ("login_account", a)).await?,
        (Some(ip), None) => limits::check(&mut conn, lim, now, "login_ip", ip).await?,
        (None, Some(a)) => limits::check(&mut conn, lim, now, "login_account", a).await?,
        (None, None) => {}
    }
    // One transaction, one commit: the attempt counted against the address and the ceremony
    // stored. Past the cap, the count (already over it) and the ceremony both roll back.
    let (id, rcr) = conn
        .transaction::<_, Error, _>(async |conn| {
            if let Some(ip) = &info.ip_key() {
                let window = chrono::Duration::seconds(lim.window_secs);
                limits::hit(conn, now, "login_start_ip", ip, lim.per_ip_attempts, window).await?;
            }
            passkeys::login_start(
                conn,
                &state.webauthn,
                &state.pepper,
                state.config.webauthn.ceremony_ttl_secs,
                now,
                &tenant,
                email.as_ref(),
            )
            .await
        })
        .await?;
    Ok(HttpResponse::Ok().json(CeremonyStarted::new(id, &rcr)?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginFinish {
    pub ceremony_id: Uuid,
    /// The browser's PublicKeyCredential (`credential.toJSON()`).
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

/// Finish a login: mints a full session (`Set-Cookie` and the body).
#[utoipa::path(post, path = "/api/v1/auth/webauthn/login/finish", tag = "webauthn", operation_id = "finish_passkey_login",
    request_body = LoginFinish,
    responses((status = 200, body = crate::handlers::SessionEnvelope), (status = 401, description = "The passkey could not be verified"),
              (status = 404, description = "No login ceremony by that id (unknown, used or expired)"), (status = 429)))]
pub async fn login_finish(
    state: web::Data<AuthState>,
    req: HttpRequest,
    body: web::Json<super::Object<LoginFinish>>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner().0;
    let now = state.now();
    let info = info(&req);
    let lim = &state.config.limits;
    let mut conn = state.conn().await?;
    if let Some(ip) = &info.ip_key() {
        limits::check(&mut conn, lim, now, "login_ip", ip).await?;
    }
    // The session is minted in the login's own transaction (one commit for the whole finish).
    let (minter, minter_info) = (state.clone(), info.clone());
    let outcome = passkeys::login_finish(
        &mut conn,
        &state.webauthn,
        now,
        &info,
        Purpose::Login,
        body.ceremony_id,
        body.credential,
        move |conn, user| {
            let (user_id, tenant) = (user.id, user.tenant_id.clone());
            Box::pin(async move {
                let cfg = &minter.config.sessions;
                sessions::create(conn, cfg, now, &minter_info, user_id, &tenant, Kind::Full).await
            })
        },
    )
    .await?;
    match outcome {
        LoginOutcome::Ok { user, then: minted, .. } => {
            let account = limits::account(&user.tenant_id, &user.email);
            match &info.ip_key() {
                Some(ip) => limits::success_both(&mut conn, ("login_ip", ip), ("login_account", &account)).await?,
                None => limits::success(&mut conn, "login_account", &account).await?,
            }
            state.committed();
            Ok(super::session_response(&state, minted, serde_json::json!({})))
        }
        LoginOutcome::Failed { user_id, reason, .. } => {
            let u = match user_id {
                Some(id) => users::get(&mut conn, id).await?,
                None => None,
            };
            let tenant =
                u.as_ref().map(|u| u.tenant_id.clone()).unwrap_or_else(|| state.config.auth.default_tenant.clone());
            let who = u.as_ref().map(|u| audit::user(u.id)).unwrap_or_else(audit::anonymous);
            conn.transaction::<_, Error, _>(async |conn| {
                audit::record(conn, now, &info, assertion_failed(&tenant, who, &reason, "passkey")).await?;
                if let Some(ip) = &info.ip_key() {
                    limits::failure(conn, lim, now, &info, &tenant, "login_ip", ip).await?;
                }
                if let Some(u) = &u {
                    limits::failure(
                        conn,
                        lim,
                        now,
                        &info,
                        &tenant,
                        "login_account",
                        &limits::account(&u.tenant_id, &u.email),
                    )
                    .await?;
                }
                Ok(())
            })
            .await?;
            state.committed();
            Err(ApiError::Unauthorized("the passkey could not be verified".into()))
        }
    }
}

/// Start a re-authentication (step-up) with a full session: a challenge for the user's own
/// passkeys, bound to this session.
#[utoipa::path(post, path = "/api/v1/auth/webauthn/reauth/start", tag = "webauthn", operation_id = "start_passkey_reauth",
    security(("session" = [])),
    responses((status = 200, body = CeremonyStarted, description = "`options` is the WebAuthn RequestChallengeResponse"),
              (status = 409, description = "The account has no passkey to verify with")))]
pub async fn reauth_start(state: web::Data<AuthState>, user: SignedIn<Session>) -> Result<HttpResponse, ApiError> {
    let s = user.require_full()?;
    let mut conn = state.conn().await?;
    let (id, rcr) =
        passkeys::reauth_start(&mut conn, &state.webauthn, state.config.webauthn.ceremony_ttl_secs, state.now(), s)
            .await?;
    Ok(HttpResponse::Ok().json(CeremonyStarted::new(id, &rcr)?))
}

/// Finish a re-authentication: a verified assertion by one of the user's passkeys records a
/// fresh user verification on this session (`verified_at`), which adding a passkey and
/// generating backup codes need.
#[utoipa::path(post, path = "/api/v1/auth/webauthn/reauth/finish", tag = "webauthn", operation_id = "finish_passkey_reauth",
    security(("session" = [])), request_body = LoginFinish,
    responses((status = 200, body = Reverified), (status = 401, description = "No session, or the passkey could not be verified"),
              (status = 404, description = "No re-authentication ceremony by that id for this session")))]
pub async fn reauth_finish(
    state: web::Data<AuthState>,
    user: SignedIn<Session>,
    req: HttpRequest,
    body: web::Json<super::Object<LoginFinish>>,
) -> Result<HttpResponse, ApiError> {
    let s = user.require_full()?.clone();
    let body = body.into_inner().0;
    let now = state.now();
    let info = info(&req);
    let mut conn = state.conn().await?;
    let session_id = s.id;
    let outcome = passkeys::login_finish(
        &mut conn,
        &state.webauthn,
        now,
        &info,
        Purpose::Reauth { session_id },
        body.ceremony_id,
        body.credential,
        move |conn, _user| Box::pin(async move { sessions::mark_verified(conn, session_id, now).await }),
    )
    .await?;
    match outcome {
        LoginOutcome::Ok { .. } => {
            state.committed();
            Ok(HttpResponse::Ok().json(Reverified { verified_at: now }))
        }
        LoginOutcome::Failed { reason, .. } => {
            let who = audit::user(s.user_id);
            conn.transaction::<_, Error, _>(async |conn| {
                audit::record(conn, now, &info, assertion_failed(&s.tenant_id, who, &reason, "passkey_reauth")).await?;
                Ok(())
            })
            .await?;
            state.committed();
            Err(ApiError::Unauthorized("the passkey could not be verified".into()))
        }
    }
}

/// The audit event of a passkey assertion that did not verify (a login or a re-authentication):
/// a signature counter going backwards is a possible clone and gets its own action.
fn assertion_failed<'a>(
    tenant_id: &'a str,
    who: queue_audit_client::Party,
    reason: &str,
    method: &str,
) -> audit::Event<'a> {
    let action = if reason == "counter_regressed" { "auth.passkey.counter_regressed" } else { "auth.login.failed" };
    audit::Event {
        tenant_id,
        actor: who.clone(),
        action,
        target: who,
        payload: serde_json::json!({"reason": reason, "method": method}),
    }
}

/// The user's passkeys.
#[utoipa::path(get, path = "/api/v1/auth/webauthn/credentials", tag = "webauthn", operation_id = "list_passkeys",
    security(("session" = [])), responses((status = 200, body = PasskeyList)))]
pub async fn list(state: web::Data<AuthState>, user: SignedIn<Session>) -> Result<HttpResponse, ApiError> {
    let s = user.require_full()?;
    let mut conn = state.conn().await?;
    let list = passkeys::list(&mut conn, s.user_id).await?;
    Ok(HttpResponse::Ok().json(PasskeyList { credentials: list }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Work laptop"}))]
pub struct Rename {
    #[schema(schema_with = fields::schema::passkey_name)]
    pub name: String,
}

/// Rename a passkey.
#[utoipa::path(patch, path = "/api/v1/auth/webauthn/credentials/{id}", tag = "webauthn", operation_id = "rename_passkey",
    security(("session" = [])), request_body = Rename, params(("id" = Uuid, Path)),
    responses((status = 200, body = crate::domain::passkeys::CredentialInfo), (status = 404, description = "No such passkey of this user")))]
pub async fn rename(
    state: web::Data<AuthState>,
    user: SignedIn<Session>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: web::Json<super::Object<Rename>>,
) -> Result<HttpResponse, ApiError> {
    let s = user.require_full()?;
    let mut conn = state.conn().await?;
    let out = passkeys::rename(&mut conn, state.now(), &info(&req), s, *id, &body.name).await?;
    state.committed();
    Ok(HttpResponse::Ok().json(out))
}

/// Remove a passkey (never the last one); the user's other sessions are revoked.
#[utoipa::path(delete, path = "/api/v1/auth/webauthn/credentials/{id}", tag = "webauthn", operation_id = "remove_passkey",
    security(("session" = [])), params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, description = "No such passkey of this user"),
              (status = 409, description = "The last way in: a user keeps at least one passkey")))]
pub async fn remove(
    state: web::Data<AuthState>,
    user: SignedIn<Session>,
    req: HttpRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let s = user.require_full()?;
    let mut conn = state.conn().await?;
    passkeys::remove(&mut conn, state.now(), &info(&req), s, *id).await?;
    state.committed();
    Ok(HttpResponse::NoContent().finish())
}
