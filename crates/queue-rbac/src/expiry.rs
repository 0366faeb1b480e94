//! Expired grants stop counting at their expiry (checks compare `expires_at` with the time of
//! the check); this job also writes each expiry into the audit log, once, from whichever replica
//! gets to it first (`FOR UPDATE SKIP LOCKED`; the event id is derived from the grant id, so a
//! retry after a lost answer is recognised by the audit service).

use chrono::Utc;
use diesel_async::AsyncConnection;
use queue_audit_client::{AuditEvent, Party};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

use crate::grants::PLATFORM_TENANT;
use crate::state::RbacState;
use crate::store;

/// The audit event id of a grant's expiry: the same for every replica and every retry.
pub fn expiry_event_id(grant: Uuid) -> Uuid {
    let digest = Sha256::digest(format!("queue-rbac/grant-expired/{grant}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// Records the expiries that are due; returns how many were recorded.
pub async fn record_due(state: &RbacState) -> anyhow::Result<usize> {
    let mut conn = state.db.conn().await?;
    let audit = state.audit.clone();
    let recorded = conn
        .transaction::<_, anyhow::Error, _>(async |c| {
            let due = store::unrecorded_expiries(c, 100).await?;
            let mut n = 0;
            for g in due {
                let tenant = g.scope.tenant().unwrap_or(PLATFORM_TENANT).to_string();
                let event = AuditEvent {
                    id: expiry_event_id(g.id),
                    tenant_id: tenant.clone(),
                    actor: Party::new("service", "rbac"),
                    action: "rbac.grant.expired".into(),
                    target: Party::new("grant", g.id.to_string()),
                    occurred_at: g.expires_at.unwrap_or_else(Utc::now),
                    ip: None,
                    user_agent: None,
                    trace_id: None,
                    payload: serde_json::json!({ "grant": g }),
                };
                if let Err(e) = audit.append(&event).await {
                    // Keep what is recorded so far; the rest waits for the next round.
                    tracing::warn!(error = %e, "cannot record grant expiries now");
                    break;
                }
                store::mark_expiry_recorded(c, g.id).await?;
                store::link_audit(c, event.id, &tenant, "rbac.grant.expired").await?;
                n += 1;
            }
            Ok(n)
        })
        .await?;
    if recorded > 0 {
        state.metrics.change("expiry_recorded");
    }
    Ok(recorded)
}

pub fn spawn(state: Arc<RbacState>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match record_due(&state).await {
                Ok(n) if n > 0 => tracing::info!(recorded = n, "grant expiries written to the audit log"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "expiry round failed"),
            }
        }
    })
}
