//! Delivers a service's outbox table to the audit service.
//!
//! Rows are taken oldest first under `FOR UPDATE SKIP LOCKED`, so several replicas can run a
//! relay on one table without delivering a row twice at the same time (and if they ever did, the
//! event id makes the second delivery a no-op). A retryable failure stops the round and backs
//! the row off exponentially; a refusal marks the row failed so it cannot block the rest.

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, RunQueryDsl};
use queue_platform::db::Db;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::client::{AuditClient, AuditClientError, AuditEvent};

/// The columns a relay needs (add them to the service's own migration; `<table>` is yours).
pub const OUTBOX_DDL: &str = "CREATE TABLE <table> (
  id uuid PRIMARY KEY, seq bigserial NOT NULL UNIQUE, event jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(), attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(), delivered_at timestamptz,
  audit_seq bigint, audit_mac text, failed_at timestamptz, last_error text)";

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Rows per round.
    pub batch: i64,
    /// How often to look when nobody wakes the relay.
    pub poll_interval: Duration,
    /// First retry delay; doubles per attempt up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch: 100,
            poll_interval: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
        }
    }
}

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Jsonb)]
    event: serde_json::Value,
    #[diesel(sql_type = Integer)]
    attempts: i32,
}

#[derive(Clone)]
pub struct OutboxRelay {
    db: Db,
    table: &'static str,
    client: AuditClient,
    settings: RelaySettings,
    wake: Arc<Notify>,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub delivered: usize,
    pub failed: usize,
    /// The audit service was unreachable; the rest waits.
    pub stalled: bool,
}

impl OutboxRelay {
    /// `table`: schema-qualified, e.g. `auth.audit_outbox` (a constant of the calling service).
    pub fn new(db: Db, table: &'static str, client: AuditClient, settings: RelaySettings) -> Self {
        Self { db, table, client, settings, wake: Arc::new(Notify::new()) }
    }

    /// Call after committing new rows: the relay looks at once instead of at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Runs until the task is aborted.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let round = self.round().await;
                let pause = match round {
                    Ok(r) if r.delivered + r.failed > 0 && !r.stalled => continue,
                    Ok(_) => self.settings.poll_interval.min(self.settings.backoff_max),
                    Err(e) => {
                        tracing::warn!(table = self.table, error = %e, "audit relay: database error");
                        self.settings.poll_interval
                    }
                };
                let _ = tokio::time::timeout(pause, self.wake.notified()).await;
            }
        })
    }

    fn backoff(&self, attempts: i32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.clamp(0, 20) as u32);
        self.settings.backoff_initial.saturating_mul(factor).min(self.settings.backoff_max)
    }

    /// Delivers what is due, oldest first, until a retryable failure or nothing is left.
    pub async fn round(&self) -> Result<Round, diesel::result::Error> {
        let mut conn = self.db.conn().await.map_err(|e| {
            diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::Unknown, Box::new(e.to_string()))
        })?;
        let table = self.table;
        let client = self.client.clone();
        let batch = self.settings.batch;
        let this = self.clone();
        conn.transaction::<_, diesel::result::Error, _>(async move |conn| {
            let rows: Vec<Row> = diesel::sql_query(format!(
                "SELECT id, event, attempts FROM {table} WHERE delivered_at IS NULL AND failed_at IS NULL \
                 AND next_attempt_at <= now() ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED"
            ))
            .bind::<BigInt, _>(batch)
            .load(conn)
            .await?;
            if let Some(round) = deliver_together(conn, table, &client, &rows).await? {
                return Ok(round);
            }
            let mut round = Round::default();
            for row in rows {
                let event: AuditEvent = match serde_json::from_value(row.event) {
                    Ok(e) => e,
                    Err(e) => {
                        mark_failed(conn, table, row.id, &format!("unreadable event: {e}")).await?;
                        round.failed += 1;
                        continue;
                    }
                };
                match client.append(&event).await {
                    Ok(a) => {
                        diesel::sql_query(format!(
                            "UPDATE {table} SET delivered_at = now(), audit_seq = $2, audit_mac = $3, \
                             attempts = attempts + 1, last_error = NULL WHERE id = $1"
                        ))
                        .bind::<SqlUuid, _>(row.id)
                        .bind::<BigInt, _>(a.seq)
                        .bind::<Text, _>(&a.mac)
                        .execute(conn)
                        .await?;
                        round.delivered += 1;
                    }
                    Err(e @ AuditClientError::Unavailable(_)) => {
                        let delay = this.backoff(row.attempts);
                        let next: DateTime<Utc> =
                            Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(60));
                        diesel::sql_query(format!(
                            "UPDATE {table} SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 \
                             WHERE id = $1"
                        ))
                        .bind::<SqlUuid, _>(row.id)
                        .bind::<Timestamptz, _>(next)
                        .bind::<Nullable<Text>, _>(Some(e.to_string()))
                        .execute(conn)
                        .await?;
                        tracing::warn!(table, event = %row.id, error = %e, "audit relay: will retry");
                        round.stalled = true;
                        break;
                    }
                    Err(e) => {
                        tracing::error!(table, event = %row.id, error = %e, "audit relay: event refused");
                        mark_failed(conn, table, row.id, &e.to_string()).await?;
                        round.failed += 1;
                    }
                }
            }
            Ok(round)
        })
        .await
    }
}

/// Delivers the round's rows with one call of the batch endpoint (atomic: all or none) and marks
/// them delivered with one statement. `None` when that does not settle them (a single row, an
/// unreadable event, any failure): the caller then delivers them one by one, which tells a
/// refused event from the rest and backs off on an outage.
async fn deliver_together(
    conn: &mut diesel_async::AsyncPgConnection,
    table: &str,
    client: &AuditClient,
    rows: &[Row],
) -> Result<Option<Round>, diesel::result::Error> {
    use diesel::sql_types::Array;
    if rows.len() < 2 {
        return Ok(None);
    }
    let Ok(events) =
        rows.iter().map(|r| serde_json::from_value::<AuditEvent>(r.event.clone())).collect::<Result<Vec<_>, _>>()
    else {
        return Ok(None);
    };
    let appended = match client.append_batch(&events).await {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(table, error = %e, rows = rows.len(), "audit relay: batch not taken; one by one");
            return Ok(None);
        }
    };
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let seqs: Vec<i64> = appended.iter().map(|a| a.seq).collect();
    let macs: Vec<String> = appended.into_iter().map(|a| a.mac).collect();
    diesel::sql_query(format!(
        "UPDATE {table} AS o SET delivered_at = now(), audit_seq = u.seq, audit_mac = u.mac, \
         attempts = o.attempts + 1, last_error = NULL \
         FROM unnest($1::uuid[], $2::bigint[], $3::text[]) AS u(id, seq, mac) WHERE o.id = u.id"
    ))
    .bind::<Array<SqlUuid>, _>(ids)
    .bind::<Array<BigInt>, _>(seqs)
    .bind::<Array<Text>, _>(macs)
    .execute(conn)
    .await?;
    Ok(Some(Round { delivered: rows.len(), ..Round::default() }))
}

async fn mark_failed(
    conn: &mut diesel_async::AsyncPgConnection,
    table: &str,
    id: Uuid,
    error: &str,
) -> Result<(), diesel::result::Error> {
    diesel::sql_query(format!(
        "UPDATE {table} SET failed_at = now(), attempts = attempts + 1, last_error = $2 WHERE id = $1"
    ))
    .bind::<SqlUuid, _>(id)
    .bind::<Text, _>(error)
    .execute(conn)
    .await
    .map(drop)
}
