//! Security events into the outbox, in the caller's transaction. The relay
//! (queue-audit-client) delivers them to the audit service.

use chrono::{DateTime, Utc};
use diesel::ExpressionMethods;
use diesel_async::RunQueryDsl;
use queue_audit_client::{AuditEvent, Party};
use queue_platform::db::prepared;
use serde_json::Value;
use uuid::Uuid;

use super::{Conn, RequestInfo, Result};
use crate::db::schema::auth::audit_outbox;

/// The outbox table, for the relay.
pub const OUTBOX_TABLE: &str = "auth.audit_outbox";

pub struct Event<'a> {
    pub tenant_id: &'a str,
    pub actor: Party,
    pub action: &'static str,
    pub target: Party,
    pub payload: Value,
}

pub fn user(id: Uuid) -> Party {
    Party::new("user", id.to_string())
}

pub fn anonymous() -> Party {
    Party::new("anonymous", "-")
}

/// Writes the event into the outbox; it commits (or not) with the caller's transaction.
pub async fn record(conn: &mut Conn, now: DateTime<Utc>, info: &RequestInfo, e: Event<'_>) -> Result<Uuid> {
    let id = Uuid::new_v4();
    let event = AuditEvent {
        id,
        tenant_id: e.tenant_id.to_string(),
        actor: e.actor,
        action: e.action.to_string(),
        target: e.target,
        occurred_at: now,
        ip: info.ip.clone(),
        user_agent: info.user_agent.as_ref().map(|u| u.chars().take(512).collect()),
        trace_id: info.trace_id.clone().filter(|t| t.len() == 32),
        payload: e.payload,
    };
    let json = serde_json::to_value(&event).map_err(|e| super::Error::Api(queue_platform::ApiError::internal(e)))?;
    prepared(diesel::insert_into(audit_outbox::table).values((audit_outbox::id.eq(id), audit_outbox::event.eq(json))))
        .execute(conn)
        .await?;
    Ok(id)
}
