//! Raptor's identity data coming in (issue 19): `POST /internal/v1/import/{users,sessions,
//! backup-codes}` for the importers (`auth.importers`, scope `users:import`; `queuectl legacy
//! import`), and `GET /internal/v1/users?legacy_id=` to find a user by Raptor's customer id.
//! `GET /internal/v1/import/status` counts what auth holds from Raptor (`queuectl legacy status`).
//! The rules of each kind are in `domain::legacy`.

use actix_web::{HttpRequest, HttpResponse, web};
use queue_platform::{ApiError, ServiceCaller};
use serde::{Deserialize, Serialize};

use crate::domain::import_batch::{ImportBatch, ImportResults};
use crate::domain::legacy::backup_codes::LegacyBackupCode;
use crate::domain::legacy::batch::{self, Records};
use crate::domain::legacy::common::{self, Ctx};
use crate::domain::legacy::sessions::LegacySession;
use crate::domain::legacy::status::{self as legacy_status, KindStatus};
use crate::domain::legacy::users::{self as legacy_users, LegacyUser};
use crate::domain::users::User;
use crate::extract::info;
use crate::state::AuthState;

/// The largest body an import route reads: 1,000 records of a few hundred bytes each (the
/// service's `server.max_body_bytes` is for everything else).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

async fn run(
    state: &AuthState,
    caller: &ServiceCaller,
    req: &HttpRequest,
    records: Records,
    dry_run: bool,
) -> Result<HttpResponse, ApiError> {
    let info = info(req);
    let ctx = Ctx {
        now: state.now(),
        info: &info,
        actor: queue_audit_client::Party::new("service", caller.issuer()),
        sessions: &state.config.sessions,
    };
    let mut conn = state.conn().await?;
    let results = batch::import(&mut conn, &ctx, &records, dry_run).await?;
    if !dry_run {
        state.committed();
    }
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(ImportResults { results }))
}

/// Import Raptor's customers as users, by legacy id: `created`, `updated` (what changed, or
/// linked to the user of that (tenant, email) provisioned earlier), `unchanged`, or `refused`
/// (why: a bad field, an address held by another customer's user, a tenant change). One audit
/// event per created or updated user, `auth.legacy.user.imported` / `.updated`.
#[utoipa::path(post, path = "/internal/v1/import/users", tag = "import", operation_id = "import_users",
    security(("service_token" = ["users:import"])), request_body = ImportBatch<LegacyUser>,
    responses((status = 200, body = ImportResults, description = "One result per record, in order")))]
pub async fn users(
    state: web::Data<AuthState>,
    caller: ServiceCaller,
    req: HttpRequest,
    body: web::Json<super::Object<ImportBatch<LegacyUser>>>,
) -> Result<HttpResponse, ApiError> {
    let batch = body.into_inner().0;
    batch.check_size()?;
    run(&state, &caller, &req, Records::Users(batch.records), batch.dry_run).await
}

/// Import Raptor's sessions as full sessions (token as SHA-256 only; Raptor's absolute expiry
/// kept): `created`, `updated` (revoked at Raptor since, used there since, or its expiry
/// shortened), `unchanged`, `skipped` (expired, revoked or idle and never imported), `refused`.
#[utoipa::path(post, path = "/internal/v1/import/sessions", tag = "import", operation_id = "import_sessions",
    security(("service_token" = ["users:import"])), request_body = ImportBatch<LegacySession>,
    responses((status = 200, body = ImportResults, description = "One result per record, in order")))]
pub async fn sessions(
    state: web::Data<AuthState>,
    caller: ServiceCaller,
    req: HttpRequest,
    body: web::Json<super::Object<ImportBatch<LegacySession>>>,
) -> Result<HttpResponse, ApiError> {
    let batch = body.into_inner().0;
    batch.check_size()?;
    run(&state, &caller, &req, Records::Sessions(batch.records), batch.dry_run).await
}

/// Import Raptor's backup codes with their werkzeug hashes (redeemable once at
/// `/api/v1/auth/backup-codes/redeem`; used ones stay used; the newest set wins): `created`,
/// `updated` (used at Raptor since), `unchanged`, `skipped` (unused, and older than a code the
/// user has here), `refused` (an unsupported hash method, named).
#[utoipa::path(post, path = "/internal/v1/import/backup-codes", tag = "import", operation_id = "import_backup_codes",
    security(("service_token" = ["users:import"])), request_body = ImportBatch<LegacyBackupCode>,
    responses((status = 200, body = ImportResults, description = "One result per record, in order")))]
pub async fn backup_codes(
    state: web::Data<AuthState>,
    caller: ServiceCaller,
    req: HttpRequest,
    body: web::Json<super::Object<ImportBatch<LegacyBackupCode>>>,
) -> Result<HttpResponse, ApiError> {
    let batch = body.into_inner().0;
    batch.check_size()?;
    run(&state, &caller, &req, Records::BackupCodes(batch.records), batch.dry_run).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LegacyLookup {
    /// Raptor's customer id, decimal digits.
    #[param(pattern = "^[1-9][0-9]{0,18}$", example = "42")]
    pub legacy_id: String,
}

/// The user imported from Raptor's customer `legacy_id`, or 404 (also for a value that cannot be one).
#[utoipa::path(get, path = "/internal/v1/users", tag = "users", operation_id = "find_user_by_legacy_id",
    security(("service_token" = ["users:read"])), params(LegacyLookup),
    responses((status = 200, body = User), (status = 404, description = "No user has this legacy id")))]
pub async fn find_by_legacy_id(
    state: web::Data<AuthState>,
    _caller: ServiceCaller,
    query: web::Query<LegacyLookup>,
) -> Result<HttpResponse, ApiError> {
    let id = &query.legacy_id;
    let found = if common::is_legacy_id(id) {
        let mut conn = state.conn().await?;
        legacy_users::find(&mut conn, id).await?
    } else {
        // No user can have it: the same answer as an unknown one, without asking the database.
        None
    };
    match found {
        Some(u) => Ok(HttpResponse::Ok().json(u)),
        None => Err(ApiError::NotFound("no user has this legacy id".into())),
    }
}

/// What auth holds from Raptor, per kind.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportStatus {
    /// When the counts were taken (what "live" is measured against).
    pub at: chrono::DateTime<chrono::Utc>,
    /// users, sessions, backup-codes, passkeys, in the import's order.
    pub kinds: Vec<KindStatus>,
    /// What is still to be written back to Raptor (`auth.legacy_writeback`): a rollback waits
    /// for it (`queuectl proxy rollback`).
    pub write_back: queue_platform::writeback::Backlog,
}

/// What auth holds from Raptor (issue 19's cutover report; `queuectl legacy status` compares it
/// with Raptor): per kind the rows imported (legacy id set), the live ones among them (for
/// sessions: the sessions carried over), and the newest of Raptor's own times kept; and the
/// write-back backlog (pending and failed rows, per kind, the oldest's age, the last error).
/// Read-only; for the importers (scope `users:import`).
#[utoipa::path(get, path = "/internal/v1/import/status", tag = "import", operation_id = "import_status",
    security(("service_token" = ["users:import"])),
    responses((status = 200, body = ImportStatus, description = "Per kind: imported, live, newest Raptor time; the write-back backlog")))]
#[tracing::instrument(skip_all)]
pub async fn status(state: web::Data<AuthState>, _caller: ServiceCaller) -> Result<HttpResponse, ApiError> {
    let at = state.now();
    let mut conn = state.conn().await?;
    let kinds = legacy_status::status(&mut conn, at).await.map_err(queue_platform::db::DbError::from_query)?;
    let mut write_back = queue_platform::writeback::backlog(&mut conn, crate::domain::writeback::TABLE)
        .await
        .map_err(queue_platform::db::DbError::from_query)?;
    write_back.enabled = state.config.legacy.writeback_url.is_some();
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(ImportStatus { at, kinds, write_back }))
}
