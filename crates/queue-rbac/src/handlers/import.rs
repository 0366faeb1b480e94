//! `POST /internal/v1/import/roles` and `POST /internal/v1/import/grants`: Raptor's roles and
//! grants brought in by an importer (`callers.importers` with `rbac:import`; `queuectl legacy
//! import`), each record answered on its own (domain `import`); `GET /internal/v1/import/status`
//! counts what rbac holds from Raptor (`queuectl legacy status`).

use actix_web::{HttpRequest, HttpResponse, web};
use queue_platform::{ApiError, Caller};
use serde::{Deserialize, Serialize};

use super::access::origin;
use crate::domain::import::grants::LegacyGrant;
use crate::domain::import::principals::LegacyPrincipal;
use crate::domain::import::roles::LegacyRole;
use crate::domain::import::status::{self as import_status, KindStatus};
use crate::domain::import::{self, ImportResult, Importer};
use crate::state::RbacState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolesImport {
    /// 1 to 1000 of Raptor's roles.
    #[schema(min_items = 1, max_items = 1000)]
    pub records: Vec<LegacyRole>,
    /// Decide every outcome and write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantsImport {
    /// 1 to 1000 of Raptor's grants.
    #[schema(min_items = 1, max_items = 1000)]
    pub records: Vec<LegacyGrant>,
    /// Decide every outcome and write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrincipalsImport {
    /// 1 to 1000 imported users: Raptor's customer id and the Queue user id.
    #[schema(min_items = 1, max_items = 1000)]
    pub records: Vec<LegacyPrincipal>,
    /// Decide every outcome and write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportResults {
    /// One per record, in the batch's order.
    pub results: Vec<ImportResult>,
}

/// The importer of this batch: one of `callers.importers` holding `rbac:import` (users never).
fn importer<'a>(
    state: &'a RbacState,
    caller: &Caller,
    req: &HttpRequest,
    dry_run: bool,
) -> Result<Importer<'a>, ApiError> {
    if !caller.service_may(&state.callers.importers, "rbac:import") {
        return Err(ApiError::Forbidden(format!(
            "`{}` may not import (needs to be one of callers.importers, with scope rbac:import)",
            caller.label()
        )));
    }
    Ok(Importer {
        writes: &state.writes,
        label: caller.label(),
        party: queue_audit_client::Party::new(caller.kind(), caller.id()),
        origin: origin(req),
        dry_run,
    })
}

/// Import Raptor's roles: built-ins matched, tenants' roles created (each audited first).
#[utoipa::path(post, path = "/internal/v1/import/roles", tag = "import", operation_id = "import_roles",
    request_body = RolesImport,
    security(("service_token" = ["rbac:import"])),
    responses((status = 200, description = "one result per record, in order", body = ImportResults),
              (status = 403, description = "the caller is no importer"),
              (status = 422, description = "not 1 to 1000 records"),
              (status = 503, description = "the audit service did not record a change; the records before it are \
                                            done, the rest is not: send the batch again")))]
#[tracing::instrument(skip_all)]
pub async fn import_roles(
    req: HttpRequest,
    state: web::Data<RbacState>,
    caller: Caller,
    body: web::Json<RolesImport>,
) -> Result<HttpResponse, ApiError> {
    let imp = importer(&state, &caller, &req, body.dry_run)?;
    import::check_batch_size(body.records.len())?;
    let results = import::roles::import(&imp, &body.records).await?;
    Ok(HttpResponse::Ok().json(ImportResults { results }))
}

/// Import Raptor's grants with their history (each audited first).
#[utoipa::path(post, path = "/internal/v1/import/grants", tag = "import", operation_id = "import_grants",
    request_body = GrantsImport,
    security(("service_token" = ["rbac:import"])),
    responses((status = 200, description = "one result per record, in order", body = ImportResults),
              (status = 403, description = "the caller is no importer"),
              (status = 422, description = "not 1 to 1000 records"),
              (status = 503, description = "the audit service did not record the changes: none of the batch's new \
                                            grants is applied (revocations before the failure are): send the batch again")))]
#[tracing::instrument(skip_all)]
pub async fn import_grants(
    req: HttpRequest,
    state: web::Data<RbacState>,
    caller: Caller,
    body: web::Json<GrantsImport>,
) -> Result<HttpResponse, ApiError> {
    let imp = importer(&state, &caller, &req, body.dry_run)?;
    import::check_batch_size(body.records.len())?;
    let results = import::grants::import(&imp, &body.records).await?;
    Ok(HttpResponse::Ok().json(ImportResults { results }))
}

/// Which Queue users are which Raptor customers: rbac writes a grant back to Raptor only for a
/// user imported from Raptor (issue 19, item 3). `queuectl legacy import` sends every user auth
/// imported; new pairs are audited first, one event per batch.
#[utoipa::path(post, path = "/internal/v1/import/principals", tag = "import", operation_id = "import_principals",
    request_body = PrincipalsImport,
    security(("service_token" = ["rbac:import"])),
    responses((status = 200, description = "one result per record, in order: created, unchanged, or refused \
                                            (the user or the customer is paired otherwise already)", body = ImportResults),
              (status = 403, description = "the caller is no importer"),
              (status = 422, description = "not 1 to 1000 records"),
              (status = 503, description = "the audit service did not record the batch; nothing was written: send \
                                            it again")))]
#[tracing::instrument(skip_all)]
pub async fn import_principals(
    req: HttpRequest,
    state: web::Data<RbacState>,
    caller: Caller,
    body: web::Json<PrincipalsImport>,
) -> Result<HttpResponse, ApiError> {
    let imp = importer(&state, &caller, &req, body.dry_run)?;
    import::check_batch_size(body.records.len())?;
    let results = import::principals::import(&imp, &body.records).await?;
    Ok(HttpResponse::Ok().json(ImportResults { results }))
}

/// What rbac holds from Raptor, per kind, and what it still owes Raptor.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportStatus {
    /// When the counts were taken (what "live" is measured against).
    pub at: chrono::DateTime<chrono::Utc>,
    /// roles, grants.
    pub kinds: Vec<KindStatus>,
    /// The write-back backlog (issue 19, item 3): what is still to be sent to Raptor, or failed.
    pub write_back: queue_platform::writeback::Backlog,
}

/// What rbac holds from Raptor (issue 19's cutover report; `queuectl legacy status` compares it
/// with Raptor): per kind the rows imported (legacy id set), the live ones (grants in force),
/// and the newest of Raptor's own times kept. Read-only; for the importers (`rbac:import`).
#[utoipa::path(get, path = "/internal/v1/import/status", tag = "import", operation_id = "import_status",
    security(("service_token" = ["rbac:import"])),
    responses((status = 200, description = "per kind: imported, live, newest Raptor time", body = ImportStatus),
              (status = 403, description = "the caller is no importer")))]
#[tracing::instrument(skip_all)]
pub async fn import_status(state: web::Data<RbacState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    if !caller.service_may(&state.callers.importers, "rbac:import") {
        return Err(ApiError::Forbidden(format!(
            "`{}` may not read the import status (needs to be one of callers.importers, with scope rbac:import)",
            caller.label()
        )));
    }
    let at = chrono::Utc::now();
    let kinds = import_status::report(&state.db, at).await?;
    let write_back = crate::domain::writeback::backlog(
        &mut *state.db.conn().await.map_err(crate::domain::Error::from)?,
        state.write_back_enabled,
    )
    .await?;
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(ImportStatus { at, kinds, write_back }))
}
