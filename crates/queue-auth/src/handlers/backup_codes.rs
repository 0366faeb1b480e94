//! Backup codes (behind `flags.auth_backup_codes`, the seeds' FLAG_AUTH_BACKUP_CODES).

use actix_web::{HttpRequest, HttpResponse, web};
use diesel_async::AsyncConnection;
use queue_platform::{ApiError, SignedIn};
use serde::{Deserialize, Serialize};

use crate::domain::sessions::{self, Kind, Session, Which};
use crate::domain::users::{self, EmailAddress};
use crate::domain::{Error, audit, backup_codes, fields, limits};
use crate::extract::info;
use crate::state::AuthState;

fn enabled(state: &AuthState) -> Result<(), ApiError> {
    if state.config.flags.auth_backup_codes {
        Ok(())
    } else {
        Err(ApiError::NotFound("backup codes are not enabled".into()))
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"codes": ["7KQM-2XJD-9WPA", "H3ZT-8C1V-QM4N"], "remaining": 2}))]
pub struct NewCodes {
    /// Shown once; store them somewhere safe.
    pub codes: Vec<String>,
    pub remaining: usize,
}

/// Generate a new set of 10 codes (the old set becomes void; the user is mailed). Needs a full
/// session whose user verified with a passkey within `sessions.step_up_secs` (else 403
/// `step_up_required`).
#[utoipa::path(post, path = "/api/v1/auth/backup-codes", tag = "backup-codes", operation_id = "generate_backup_codes",
    security(("session" = [])),
    responses((status = 201, body = NewCodes),
              (status = 403, description = "Not a full session, or `step_up_required`: verify with a passkey first"),
              (status = 404, description = "Backup codes are not enabled")))]
pub async fn generate(
    state: web::Data<AuthState>,
    user: SignedIn<Session>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    enabled(&state)?;
    let s = user.require_full()?;
    sessions::require_recent_verification(s, state.now(), state.config.sessions.step_up_secs)?;
    let mut conn = state.conn().await?;
    let codes = backup_codes::generate(&mut conn, &state.pepper, &state.mail, state.now(), &info(&req), s).await?;
    state.mail.wake();
    state.committed();
    let codes: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
    Ok(HttpResponse::Created()
        .insert_header(("cache-control", "no-store"))
        .json(NewCodes { remaining: codes.len(), codes }))
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"remaining": 7}))]
pub struct Remaining {
    pub remaining: i64,
}

/// How many unused codes remain.
#[utoipa::path(get, path = "/api/v1/auth/backup-codes", tag = "backup-codes", operation_id = "count_backup_codes",
    security(("session" = [])),
    responses((status = 200, body = Remaining), (status = 404, description = "Backup codes are not enabled")))]
pub async fn remaining(state: web::Data<AuthState>, user: SignedIn<Session>) -> Result<HttpResponse, ApiError> {
    enabled(&state)?;
    let s = user.require_full()?;
    let mut conn = state.conn().await?;
    Ok(HttpResponse::Ok().json(Remaining { remaining: backup_codes::remaining(&mut conn, s.user_id).await? }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "ada@example.com", "code": "7KQM-2XJD-9WPA"}))]
pub struct Redeem {
    #[schema(schema_with = fields::schema::email)]
    pub email: String,
    /// One of the user's codes (case, spaces and dashes do not matter).
    #[schema(schema_with = fields::schema::backup_code)]
    pub code: String,
    /// Absent: the default tenant.
    #[schema(schema_with = fields::schema::tenant_id_or_null)]
    pub tenant_id: Option<String>,
}

/// A recovery session (may only register a passkey) and the codes left.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Redeemed {
    pub session: crate::handlers::SessionOut,
    pub remaining: i64,
}

/// Redeem a code: single use; returns a recovery session (may only register a passkey),
/// revokes the user's other sessions and mails the user. Every failure answers the same, by
/// the same path (an unknown address redeems against a decoy).
#[utoipa::path(post, path = "/api/v1/auth/backup-codes/redeem", tag = "backup-codes", operation_id = "redeem_backup_code",
    request_body = Redeem,
    responses((status = 200, body = Redeemed), (status = 401, description = "The email or code is not valid"),
              (status = 404, description = "Backup codes are not enabled"), (status = 429)))]
pub async fn redeem(
    state: web::Data<AuthState>,
    req: HttpRequest,
    body: web::Json<super::Object<Redeem>>,
) -> Result<HttpResponse, ApiError> {
    enabled(&state)?;
    let tenant = body.tenant_id.clone().unwrap_or_else(|| state.config.auth.default_tenant.clone());
    users::check_tenant(&tenant)?;
    let email = EmailAddress::parse(&body.email)?;
    fields::BACKUP_CODE.check(&body.code)?;
    let now = state.now();
    let info = info(&req);
    let lim = &state.config.limits;
    let account = limits::account(&tenant, email.as_str());
    let mut conn = state.conn().await?;
    if let Some(ip) = &info.ip_key() {
        limits::check(&mut conn, lim, now, "redeem_ip", ip).await?;
    }
    limits::check(&mut conn, lim, now, "redeem_account", &account).await?;
    let user =
        backup_codes::redeem(&mut conn, &state.pepper, &state.mail, now, &info, &tenant, &email, &body.code).await?;
    let Some(user) = user else {
        conn.transaction::<_, Error, _>(async |conn| {
            audit::record(
                conn,
                now,
                &info,
                audit::Event {
                    tenant_id: &tenant,
                    actor: audit::anonymous(),
                    action: "auth.login.failed",
                    target: queue_audit_client::Party::new("email", email.as_str()),
                    payload: serde_json::json!({"method": "backup_code"}),
                },
            )
            .await?;
            if let Some(ip) = &info.ip_key() {
                limits::failure(conn, lim, now, &info, &tenant, "redeem_ip", ip).await?;
            }
            limits::failure(conn, lim, now, &info, &tenant, "redeem_account", &account).await
        })
        .await?;
        state.committed();
        return Err(ApiError::Unauthorized("the email or code is not valid".into()));
    };
    let cfg = &state.config.sessions;
    let minted = conn
        .transaction::<_, Error, _>(async |conn| {
            sessions::revoke(conn, now, &info, user.id, &user.tenant_id, Which::All, "backup_code_redeemed").await?;
            sessions::create(conn, cfg, now, &info, user.id, &user.tenant_id, Kind::Recovery).await
        })
        .await?;
    limits::success(&mut conn, "redeem_account", &account).await?;
    state.mail.wake();
    state.committed();
    let remaining = backup_codes::remaining(&mut conn, user.id).await?;
    Ok(super::session_response(&state, minted, serde_json::json!({"remaining": remaining})))
}
