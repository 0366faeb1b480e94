//! Reading events with filters, in seq order, by keyset pagination.

use diesel::prelude::{ExpressionMethods, NullableExpressionMethods, QueryDsl};
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::db::schema::audit::customer_audit_events as events;
use crate::domain::append::set_tenant;
use crate::domain::chain;
use crate::domain::error::AppendError;
use queue_platform::db::Db;

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub action: Option<String>,
    pub actor_id: Option<String>,
    pub target_id: Option<String>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EventOut {
    pub id: uuid::Uuid,
    pub tenant_id: String,
    pub seq: i64,
    pub actor: serde_json::Value,
    pub action: String,
    pub target: serde_json::Value,
    pub occurred_at: String,
    pub recorded_at: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub trace_id: Option<String>,
    pub payload: serde_json::Value,
    pub mac: String,
    pub key_id: i32,
}

type Row = (
    uuid::Uuid,
    String,
    i64,
    String,
    String,
    String,
    String,
    String,
    chrono::DateTime<chrono::Utc>,
    chrono::DateTime<chrono::Utc>,
    Option<String>,
    Option<String>,
    Option<String>,
    serde_json::Value,
    Vec<u8>,
    i32,
);

pub async fn list(db: &Db, tenant: &str, after_seq: i64, limit: i64, f: &Filter) -> Result<Vec<EventOut>, AppendError> {
    let mut conn = db.conn().await.map_err(|e| AppendError::Unavailable(e.to_string()))?;
    let t = tenant.to_string();
    let f = f.clone();
    conn.transaction::<_, AppendError, _>(async |c| {
        set_tenant(c, &t).await?;
        let mut q = events::table
            .filter(events::tenant_id.eq(&t))
            .filter(events::seq.gt(after_seq))
            .order(events::seq.asc())
            .limit(limit)
            .into_boxed();
        if let Some(a) = &f.action {
            q = q.filter(events::action.eq(a.clone()));
        }
        if let Some(a) = &f.actor_id {
            q = q.filter(events::actor_id.eq(a.clone()));
        }
        if let Some(a) = &f.target_id {
            q = q.filter(events::target_id.eq(a.clone()));
        }
        if let Some(s) = f.since {
            q = q.filter(events::occurred_at.ge(s));
        }
        if let Some(u) = f.until {
            q = q.filter(events::occurred_at.lt(u));
        }
        let rows: Vec<Row> = q
            .select((
                events::event_id,
                events::tenant_id,
                events::seq,
                events::actor_type,
                events::actor_id,
                events::action,
                events::target_type,
                events::target_id,
                events::occurred_at,
                events::recorded_at,
                events::ip,
                events::user_agent,
                events::trace_id,
                // Generated from the NOT NULL payload_canonical, so never NULL, though PostgreSQL
                // (and so the generated schema) calls a generated column nullable.
                events::payload.assume_not_null(),
                events::mac,
                events::key_id,
            ))
            .load(c)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| EventOut {
                id: r.0,
                tenant_id: r.1,
                seq: r.2,
                actor: serde_json::json!({"type": r.3, "id": r.4}),
                action: r.5,
                target: serde_json::json!({"type": r.6, "id": r.7}),
                occurred_at: chain::timestamp(&r.8),
                recorded_at: chain::timestamp(&r.9),
                ip: r.10,
                user_agent: r.11,
                trace_id: r.12,
                payload: r.13,
                mac: chain::hex(&r.14),
                key_id: r.15,
            })
            .collect())
    })
    .await
}
