//! Writing and reading events.

use actix_web::{HttpResponse, web};
use queue_audit_client::Appended;
use queue_platform::{ApiError, Caller, ServiceCaller};
use serde::Deserialize;
use serde_json::Value;

use crate::domain::error::AppendError;
use crate::domain::read::EventOut;
use crate::state::AuditState;
use crate::wire::{self, BatchBody, EventBody, parse_event};

pub fn map_append(e: AppendError) -> ApiError {
    match e {
        AppendError::Conflict(id) => ApiError::Conflict(format!("event {id} was already written with other content")),
        AppendError::Unavailable(_) => ApiError::Unavailable("database unavailable".into()),
        AppendError::Internal(e) => ApiError::Internal(e),
    }
}

/// Append one event.
///
/// Idempotent by event id: the same id with the same content answers the first result again
/// (201); with other content, 409 and nothing is written.
#[utoipa::path(post, path = "/api/v1/audit/events", tag = "audit", operation_id = "append_event",
    security(("service_token" = ["audit:write"])),
    request_body = EventBody,
    responses(
        (status = 201, description = "Written (or written before with this content): where it landed in the tenant's chain.",
            body = Appended, example = json!({"id": "0b7e6f3a-5d2c-4f1e-9a8b-3c4d5e6f7a8b", "seq": 1042,
                "mac": "5f0c3e9a1b7d2c4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e"})),
        (status = 403, description = "The token's issuer is not a configured writer, lacks `audit:write`, or may not write this action (`limits.writers`)."),
        (status = 409, description = "This event id was written before with other content; nothing was written."),
        (status = 413, description = "The body, or the event's `payload` (as canonical JSON), is larger than the service accepts."),
        (status = 429, description = "The caller's rate limit (events per second) is spent."),
    ))]
pub async fn append(
    state: web::Data<AuditState>,
    caller: ServiceCaller,
    body: web::Json<Value>,
) -> Result<HttpResponse, ApiError> {
    state.admit(&caller, 1)?;
    let event = parse_event(&body, "", state.chain.max_payload_bytes)?;
    state.admit_action(&caller, "", &event.action)?;
    let mut out = state.appender.append(vec![event]).await.map_err(map_append)?;
    let first = out.pop().ok_or_else(|| ApiError::internal(anyhow::anyhow!("append returned nothing")))?;
    Ok(HttpResponse::Created().json(first))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    events: Vec<Value>,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(example = json!({"results": [{"id": "0b7e6f3a-5d2c-4f1e-9a8b-3c4d5e6f7a8b", "seq": 1042,
    "mac": "5f0c3e9a1b7d2c4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e"}]}))]
pub struct BatchResult {
    /// In the order of the request.
    results: Vec<Appended>,
}

/// Append many events in one round trip, atomically: all or none, whatever their tenants.
///
/// Each event is idempotent by its id as in `POST /api/v1/audit/events`; one conflicting
/// event refuses the whole batch.
#[utoipa::path(post, path = "/api/v1/audit/events/batch", tag = "audit", operation_id = "append_event_batch",
    security(("service_token" = ["audit:write"])),
    request_body = BatchBody,
    responses(
        (status = 201, description = "All written, in the order of the request.", body = BatchResult),
        (status = 403, description = "The token's issuer is not a configured writer, lacks `audit:write`, or may not write one of the actions (`limits.writers`); nothing was written."),
        (status = 409, description = "An event id was written before with other content; nothing was written."),
        (status = 413, description = "The body, or an event's `payload` (as canonical JSON), is larger than the service accepts."),
        (status = 422, description = "Not a batch this operation takes (`field` names the event and its field)."),
        (status = 429, description = "The caller's rate limit (events per second) is spent."),
    ))]
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
    // One foreign action refuses the whole batch: a batch is atomic.
    for (i, e) in events.iter().enumerate() {
        state.admit_action(&caller, &format!("events[{i}]."), &e.action)?;
    }
    let results = state.appender.append(events).await.map_err(map_append)?;
    Ok(HttpResponse::Created().json(BatchResult { results }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[param(schema_with = wire::tenant_id_schema, required = true)]
    tenant_id: String,
    /// Keyset pagination: events with seq greater than this.
    #[serde(default)]
    after_seq: i64,
    /// How many events at most, default 100.
    #[param(schema_with = limit_schema)]
    limit: Option<i64>,
    /// Only this action.
    #[param(schema_with = wire::action_schema)]
    action: Option<String>,
    /// Only events by this actor id.
    #[param(schema_with = wire::party_id_schema)]
    actor_id: Option<String>,
    /// Only events on this target id.
    #[param(schema_with = wire::party_id_schema)]
    target_id: Option<String>,
    /// RFC 3339; occurred at or after.
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// RFC 3339; occurred before.
    until: Option<chrono::DateTime<chrono::Utc>>,
}

/// The most events or checkpoints one read returns (`limit`), and the default.
pub const LIMIT_MAX: i64 = 1000;
pub const LIMIT_DEFAULT: i64 = 100;

/// `limit`'s schema, from the bounds [`limit`] checks.
pub fn limit_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64)))
        .minimum(Some(1))
        .maximum(Some(LIMIT_MAX))
        .default(Some(LIMIT_DEFAULT.into()))
        .build()
}

/// `limit`, checked: 1 to [`LIMIT_MAX`], [`LIMIT_DEFAULT`] when absent.
pub fn limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(LIMIT_DEFAULT);
    if !(1..=LIMIT_MAX).contains(&limit) {
        return Err(ApiError::invalid("limit", format!("must be between 1 and {LIMIT_MAX}")));
    }
    Ok(limit)
}

/// A query value outside its schema: 422 naming it (as a body field would be).
pub fn checked(field: &str, value: Option<&str>, check: fn(&str) -> Result<(), String>) -> Result<(), ApiError> {
    match value.map(check) {
        Some(Err(reason)) => Err(ApiError::invalid(field, reason)),
        _ => Ok(()),
    }
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct EventPage {
    /// Oldest first.
    events: Vec<EventOut>,
    /// The `after_seq` of the next page; null when this page is empty.
    next_after_seq: Option<i64>,
}

/// Read events of a tenant, oldest first, with filters.
#[utoipa::path(get, path = "/api/v1/audit/events", tag = "audit", operation_id = "list_events",
    security(("service_token" = ["audit:read"]), ("session" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of events.", body = EventPage),
        (status = 403, description = "The token's issuer is not a configured reader or lacks `audit:read`; or the user does not hold `audit.read` for the tenant."),
        (status = 422, description = "A query parameter outside its schema (`field` names it)."),
        (status = 429, description = "The caller's rate limit is spent."),
    ))]
pub async fn list(
    state: web::Data<AuditState>,
    caller: Caller,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    checked("tenant_id", Some(&q.tenant_id), wire::check_tenant_id)?;
    checked("action", q.action.as_deref(), wire::check_action)?;
    checked("actor_id", q.actor_id.as_deref(), wire::check_party_id)?;
    checked("target_id", q.target_id.as_deref(), wire::check_party_id)?;
    let limit = limit(q.limit)?;
    state.admit_reader(&caller, &q.tenant_id).await?;
    let q = q.into_inner();
    let filter = crate::domain::read::Filter {
        action: q.action,
        actor_id: q.actor_id,
        target_id: q.target_id,
        since: q.since,
        until: q.until,
    };
    let events =
        crate::domain::read::list(&state.db, &q.tenant_id, q.after_seq, limit, &filter).await.map_err(map_append)?;
    let next_after_seq = events.last().map(|e| e.seq);
    Ok(HttpResponse::Ok().json(EventPage { events, next_after_seq }))
}
