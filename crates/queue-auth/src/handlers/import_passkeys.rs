//! `POST /internal/v1/import/passkeys`: Raptor's passkeys, sent by `queuectl legacy import`
//! (issue 19) after their users.

use actix_web::{HttpRequest, HttpResponse, web};
use queue_platform::{ApiError, ServiceCaller};

use crate::domain::import_batch::{ImportBatch, ImportResults};
use crate::domain::legacy_passkeys::{self, LegacyPasskey};
use crate::extract::info;
use crate::state::AuthState;

/// Import passkeys registered at Raptor (py_webauthn's fields): each becomes a webauthn-rs passkey
/// of the user imported with that legacy id, usable to sign in by email or usernameless; one
/// result per record, in order. The same record again is `unchanged` (nothing written); a record
/// changed at Raptor is `updated` (the reason names the fields); one that cannot work at Queue is
/// `refused` with the reason (an algorithm other than ES256, ES384, RS256; an unreadable key; a
/// user handle another user has; an unknown user). `dry_run` computes the outcomes and writes
/// nothing.
#[utoipa::path(post, path = "/internal/v1/import/passkeys", tag = "import", operation_id = "import_passkeys",
    security(("service_token" = ["users:import"])), request_body = ImportBatch<LegacyPasskey>,
    responses((status = 200, body = ImportResults, description = "One result per record, in order")))]
pub async fn import(
    state: web::Data<AuthState>,
    caller: ServiceCaller,
    req: HttpRequest,
    body: web::Json<super::Object<ImportBatch<LegacyPasskey>>>,
) -> Result<HttpResponse, ApiError> {
    body.check_size()?;
    let now = state.now();
    let info = info(&req);
    let mut conn = state.conn().await?;
    let results = legacy_passkeys::import(&mut conn, now, &info, caller.issuer(), &body.records, body.dry_run).await?;
    if !body.dry_run {
        state.committed();
    }
    Ok(HttpResponse::Ok().insert_header(("cache-control", "no-store")).json(ImportResults { results }))
}
