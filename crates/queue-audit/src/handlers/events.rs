//! Writing and reading events.

use actix_web::{HttpResponse, web};
use queue_audit_client::Appended;
use queue_platform::{ApiError, Caller, ServiceCaller};
use serde::Deserialize;
use serde_json::Value;

use crate::domain::error::AppendError;
use crate::state::AuditState;
use crate::wire::parse_event;

pub fn map_append(e: AppendError) -> ApiError {
    match e {
        AppendError::Conflict(id) => ApiError::Conflict(format!("event {id} was already written with other content")),
        AppendError::Unavailable(_) => ApiError::Unavailable("database unavailable".into()),
        AppendError::Internal(e) => ApiError::Internal(e),
    }
}

/// Append one event.
#[utoipa::path(post, path = "/api/v1/audit/events", tag = "audit", security(("service_token" = ["audit:write"])),
    request_body = Object,
    responses((status = 201, body = Appended), (status = 409), (status = 413), (status = 422), (status = 429), (status = 503)))]
pub async fn append(
    state: web::Data<AuditState>,
    caller: ServiceCaller,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    state.admit(&caller, 1)?;
    let event = parse_event(&body, "", state.chain.max_payload_bytes)?;
    state.admit_action(&caller, "", &event.action)?;
    let tenant = event.tenant_id.clone();
    let mut out = state.appender.append(&tenant, vec![event]).await.map_err(map_append)?;
    let first = out.pop().ok_or_else(|| ApiError::internal(anyhow::anyhow!("append returned nothing")))?;
    Ok(HttpResponse::Created().json(first))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    events: Vec<Value>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct BatchResult {
    /// In the order of the request.
    results: Vec<Appended>,
}

/// Append many events of one tenant in one round trip, atomically.
#[utoipa::path(post, path = "/api/v1/audit/events/batch", tag = "audit", security(("service_token" = ["audit:write"])),
    request_body = Object,
    responses((status = 201, body = BatchResult), (status = 409), (status = 413), (status = 422), (status = 429), (status = 503)))]
pub async fn append_batch(
    state: web::Data<AuditState>,
    caller: ServiceCaller,
    body: web::Json<Batch>,
) -> Result<HttpResponse, ApiError> {
    let raw = body.into_inner().events;
    if raw.is_empty() || raw.len() > state.chain.max_batch {
        return Err(ApiError::invalid("events", format!("must hold 1 to {} events", state.chain.max_batch)));
    }
    state.admit(&caller, raw.len() as u32)?;
    let mut events = Vec::with_capacity(raw.len());
    for (i, v) in raw.iter().enumerate() {
        events.push(parse_event(v, &format!("events[{i}]."), state.chain.max_payload_bytes)?);
    }
    let tenant = events[0].tenant_id.clone();
    if let Some(i) = events.iter().position(|e| e.tenant_id != tenant) {
        return Err(ApiError::invalid(format!("events[{i}].tenant_id"), "a batch holds events of one tenant"));
    }
    // One foreign action refuses the whole batch: a batch is atomic.
    for (i, e) in events.iter().enumerate() {
        state.admit_action(&caller, &format!("events[{i}]."), &e.action)?;
    }
    let results = state.appender.append(&tenant, events).await.map_err(map_append)?;
    Ok(HttpResponse::Created().json(BatchResult { results }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    tenant_id: String,
    /// Keyset pagination: events with seq greater than this.
    #[serde(default)]
    after_seq: i64,
    /// 1 to 1000, default 100.
    limit: Option<i64>,
    action: Option<String>,
    actor_id: Option<String>,
    target_id: Option<String>,
    /// RFC 3339; occurred at or after.
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// RFC 3339; occurred before.
    until: Option<chrono::DateTime<chrono::Utc>>,
}

/// Read events of a tenant, oldest first, with filters.
#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit", security(("service_token" = ["audit:read"]), ("session" = [])),
    params(ListQuery), responses((status = 200), (status = 422)))]
pub async fn list(
    state: web::Data<AuditState>,
    caller: Caller,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    state.admit_reader(&caller, &q.tenant_id).await?;
    let q = q.into_inner();
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 1000"));
    }
    let filter = crate::domain::read::Filter {
        action: q.action,
        actor_id: q.actor_id,
        target_id: q.target_id,
        since: q.since,
        until: q.until,
    };
    let events =
        crate::domain::read::list(&state.db, &q.tenant_id, q.after_seq, limit, &filter).await.map_err(map_append)?;
    let next = events.last().map(|e| e.seq);
    Ok(HttpResponse::Ok().json(serde_json::json!({"events": events, "next_after_seq": next})))
}
