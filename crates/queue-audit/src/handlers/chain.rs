//! Verification, checkpoints and export.

use actix_web::{HttpResponse, web};
use futures_util::stream;
use queue_platform::{ApiError, Caller};
use serde::Deserialize;

use crate::domain::checkpoint::{self, Checkpoint};
use crate::domain::verify::{self, ExportLine, Report};
use crate::handlers::events::{self, map_append};
use crate::state::AuditState;
use crate::wire;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    #[param(schema_with = wire::tenant_id_schema, required = true)]
    pub(crate) tenant_id: String,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CheckpointQuery {
    #[param(schema_with = wire::tenant_id_schema, required = true)]
    tenant_id: String,
    /// How many checkpoints at most (newest first), default 100.
    #[param(schema_with = events::limit_schema)]
    limit: Option<i64>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct CheckpointPage {
    /// Newest first.
    checkpoints: Vec<Checkpoint>,
}

/// Verify a tenant's chain against its data keys and signed checkpoints.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", operation_id = "verify_chain",
    security(("service_token" = ["audit:read"]), ("session" = [])),
    params(TenantQuery),
    responses(
        (status = 200, description = "The verdict (a broken chain is `ok: false` with the first bad seq, still 200).", body = Report,
            example = json!({"ok": true, "tenant_id": "acme", "verified_through_seq": 1042, "events": 1042, "checkpoint_seq": 1000})),
        (status = 403, description = "The token's issuer is not a configured reader or lacks `audit:read`; or the user does not hold `audit.read` for the tenant."),
        (status = 422, description = "A query parameter outside its schema (`field` names it)."),
        (status = 429, description = "The caller's rate limit is spent."),
    ))]
pub async fn verify(
    state: web::Data<AuditState>,
    caller: Caller,
    q: web::Query<TenantQuery>,
) -> Result<HttpResponse, ApiError> {
    events::checked("tenant_id", Some(&q.tenant_id), wire::check_tenant_id)?;
    state.admit_reader(&caller, &q.tenant_id).await?;
    let report = verify::verify_tenant(&state.db, &state.keys, &q.tenant_id).await.map_err(map_append)?;
    state.metrics.observe_verify(report.ok, report.events);
    Ok(HttpResponse::Ok().json(report))
}

/// The newest signed checkpoints of a tenant's chain.
#[utoipa::path(get, path = "/api/v1/audit/checkpoints", tag = "audit", operation_id = "list_checkpoints",
    security(("service_token" = ["audit:read"]), ("session" = [])),
    params(CheckpointQuery),
    responses(
        (status = 200, description = "The newest checkpoints.", body = CheckpointPage),
        (status = 403, description = "The token's issuer is not a configured reader or lacks `audit:read`; or the user does not hold `audit.read` for the tenant."),
        (status = 422, description = "A query parameter outside its schema (`field` names it)."),
        (status = 429, description = "The caller's rate limit is spent."),
    ))]
pub async fn checkpoints(
    state: web::Data<AuditState>,
    caller: Caller,
    q: web::Query<CheckpointQuery>,
) -> Result<HttpResponse, ApiError> {
    events::checked("tenant_id", Some(&q.tenant_id), wire::check_tenant_id)?;
    let limit = events::limit(q.limit)?;
    state.admit_reader(&caller, &q.tenant_id).await?;
    let checkpoints = checkpoint::list(&state.db, &q.tenant_id, limit).await.map_err(map_append)?;
    Ok(HttpResponse::Ok().json(CheckpointPage { checkpoints }))
}

/// NDJSON export of a tenant's chain that verifies offline: a header (with the wrapped data
/// keys and the checkpoint public key), every event, every checkpoint.
#[utoipa::path(get, path = "/api/v1/audit/export", tag = "audit", operation_id = "export_chain",
    security(("service_token" = ["audit:read"]), ("session" = [])),
    params(TenantQuery),
    responses(
        (status = 200, description = "One JSON object per line: `{\"type\": \"header\", …}`, each `event`, each `checkpoint`.",
            content_type = "application/x-ndjson"),
        (status = 403, description = "The token's issuer is not a configured reader or lacks `audit:read`; or the user does not hold `audit.read` for the tenant."),
        (status = 422, description = "A query parameter outside its schema (`field` names it)."),
        (status = 429, description = "The caller's rate limit is spent."),
    ))]
pub async fn export(
    state: web::Data<AuditState>,
    caller: Caller,
    q: web::Query<TenantQuery>,
) -> Result<HttpResponse, ApiError> {
    events::checked("tenant_id", Some(&q.tenant_id), wire::check_tenant_id)?;
    state.admit_reader(&caller, &q.tenant_id).await?;
    let tenant = q.tenant_id.clone();
    let header = verify::export_header(&state.db, &state.keys, &tenant).await.map_err(map_append)?;
    let cps = verify::checkpoint_records(&state.db, &tenant).await.map_err(map_append)?;
    let db = state.db.clone();
    let pages = stream::unfold(Some(0i64), move |after| {
        let (db, tenant) = (db.clone(), tenant.clone());
        async move {
            let after = after?;
            match verify::page(&db, &tenant, after, 5_000).await {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let next = rows.last().map(|r| r.seq);
                    let mut buf = Vec::new();
                    for r in rows {
                        line(&mut buf, &ExportLine::Event(r));
                    }
                    Some((Ok::<_, actix_web::Error>(web::Bytes::from(buf)), next))
                }
                Err(e) => {
                    tracing::error!(error = %e, "export page failed");
                    Some((Err(actix_web::error::ErrorServiceUnavailable("export interrupted")), None))
                }
            }
        }
    });
    let mut head = Vec::new();
    line(&mut head, &header);
    let mut tail = Vec::new();
    for c in cps {
        line(&mut tail, &ExportLine::Checkpoint(c));
    }
    let body = futures_util::StreamExt::chain(
        futures_util::StreamExt::chain(stream::once(async { Ok(web::Bytes::from(head)) }), pages),
        stream::once(async { Ok(web::Bytes::from(tail)) }),
    );
    Ok(HttpResponse::Ok().content_type("application/x-ndjson").streaming(body))
}

fn line(buf: &mut Vec<u8>, l: &ExportLine) {
    if serde_json::to_writer(&mut *buf, l).is_ok() {
        buf.push(b'\n');
    }
}
