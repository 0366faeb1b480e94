//! Expired grants stop counting at their expiry (checks compare `expires_at` with the time of
//! the check); this job also writes each expiry into the audit log, once, from whichever replica
//! gets to it first (`FOR UPDATE SKIP LOCKED`; the event id is derived from the grant id, so a
//! retry after a lost answer is recognised by the audit service).

use chrono::Utc;
use diesel_async::AsyncConnection;
use queue_audit_client::{AuditClient, AuditEvent, Party};
use queue_platform::db::Db;
use sha2::{Digest, Sha256};
use std::time::Duration;
use uuid::Uuid;

use super::Error;
use super::model::Grant;
use super::prewrite::PLATFORM_TENANT;
use crate::db::{grants, links};
use crate::metrics::RbacMetrics;

/// The audit event id of a grant's expiry: the same for every replica and every retry.
fn expiry_event_id(grant: Uuid) -> Uuid {
    let digest = Sha256::digest(format!("queue-rbac/grant-expired/{grant}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

fn expiry_event(g: &Grant, tenant: &str) -> AuditEvent {
    AuditEvent {
        id: expiry_event_id(g.id),
        tenant_id: tenant.to_string(),
        actor: Party::new("service", "rbac"),
        action: "rbac.grant.expired".into(),
        target: Party::new("grant", g.id.to_string()),
        occurred_at: g.expires_at.unwrap_or_else(Utc::now),
        ip: None,
        user_agent: None,
        trace_id: None,
        payload: serde_json::json!({ "grant": g }),
    }
}

/// Records the expiries that are due; returns how many were recorded.
#[tracing::instrument(skip_all)]
async fn record_due(db: &Db, audit: &AuditClient, metrics: &RbacMetrics) -> Result<usize, Error> {
    let mut conn = db.conn().await?;
    let recorded = conn
        .transaction::<_, Error, _>(async |c| {
            let due = grants::unrecorded_expiries(c, 100).await?;
            let mut n = 0;
            for row in due {
                let g = Grant::from_row(row)?;
                let tenant = g.scope.tenant().unwrap_or(PLATFORM_TENANT).to_string();
                let event = expiry_event(&g, &tenant);
                if let Err(e) = audit.append(&event).await {
                    // Keep what is recorded so far; the rest waits for the next round.
                    tracing::warn!(error = %e, "cannot record grant expiries now");
                    break;
                }
                grants::mark_expiry_recorded(c, g.id).await?;
                links::link(c, event.id, &tenant, "rbac.grant.expired").await?;
                n += 1;
            }
            Ok(n)
        })
        .await?;
    if recorded > 0 {
        metrics.change("expiry_recorded");
    }
    Ok(recorded)
}

/// Runs [`record_due`] every `every` until the process ends.
pub fn spawn(db: Db, audit: AuditClient, metrics: RbacMetrics, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match record_due(&db, &audit, &metrics).await {
                Ok(n) if n > 0 => tracing::info!(recorded = n, "grant expiries written to the audit log"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "expiry round failed"),
            }
        }
    })
}
