//! Verification, checkpoints and export.

use actix_web::{HttpResponse, web};
use futures_util::stream;
use queue_platform::{ApiError, Caller};
use serde::Deserialize;

use crate::domain::checkpoint;
use crate::domain::verify::{self, ExportLine, Report};
use crate::handlers::events::map_append;
use crate::state::AuditState;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    tenant_id: String,
    limit: Option<i64>,
}

/// Verify a tenant's chain against its data keys and signed checkpoints.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", security(("service_token" = ["audit:read"]), ("session" = [])),
    params(TenantQuery), responses((status = 200, body = Report)))]
pub async fn verify(
    state: web::Data<AuditState>,
    caller: Caller,
    q: web::Query<TenantQuery>,
) -> Result<HttpResponse, ApiError> {
    state.admit_reader(&caller, &q.tenant_id).await?;
    let report = verify::verify_tenant(&state.db, &state.keys, &q.tenant_id).await.map_err(map_append)?;
    state.metrics.observe_verify(report.ok, report.events);
    Ok(HttpResponse::Ok().json(report))
}

/// The newest signed checkpoints of a tenant's chain.
#[utoipa::path(get, path = "/api/v1/audit/checkpoints", tag = "audit", security(("service_token" = ["audit:read"]), ("session" = [])),
    params(TenantQuery), responses((status = 200)))]
pub async fn checkpoints(
    state: web::Data<AuditState>,
    caller: Caller,
    q: web::Query<TenantQuery>,
) -> Result<HttpResponse, ApiError> {
    state.admit_reader(&caller, &q.tenant_id).await?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let list = checkpoint::list(&state.db, &q.tenant_id, limit).await.map_err(map_append)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "checkpoints": list })))
}

/// NDJSON export of a tenant's chain that verifies offline: a header (with the wrapped data
/// keys and the checkpoint public key), every event, every checkpoint.
#[utoipa::path(get, path = "/api/v1/audit/export", tag = "audit", security(("service_token" = ["audit:read"]), ("session" = [])),
    params(TenantQuery), responses((status = 200, content_type = "application/x-ndjson")))]
pub async fn export(
    state: web::Data<AuditState>,
    caller: Caller,
    q: web::Query<TenantQuery>,
) -> Result<HttpResponse, ApiError> {
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
