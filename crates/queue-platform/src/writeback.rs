//! The write-back to Raptor after a cutover: what users change at Queue is sent to Raptor's
//! internal API (`/internal/queue/v1/…`, docs/raptor.md) so that a rollback locks nobody out.
//!
//! A service that writes back (auth, rbac) keeps an outbox table with the columns of
//! [`WRITEBACK_DDL`] and inserts a row ([`Change`], [`enqueue`]) in the same transaction as the
//! change it reflects. A [`WritebackRelay`] sends the rows to `[legacy] writeback_url`:
//!
//! * **Order**: rows that share an `order_key` (e.g. one passkey's create, its counter updates,
//!   its delete) go one after the other, oldest first; a row waits while an older row of its key
//!   is undelivered and not failed. Across keys, oldest first.
//! * **Raptor's id** of a record created by write-back is only known once the create is
//!   answered: a later row's `path` may hold `{legacy_id}`, and the create's delivery fills it in
//!   for the pending rows of its `order_key`. A row may name one of the service's
//!   [`OnDelivered`] statements, run when it is delivered (e.g. storing the id as the passkey's
//!   `legacy_id`).
//! * **Coalescing**: a row with a `coalesce_key` is superseded (marked delivered without being
//!   sent, `superseded_by` set) when a newer undelivered row has the same key: only the latest
//!   counter of a passkey goes.
//! * **Failures**: connect errors, timeouts, 408, 429 and 5xx back the row off exponentially
//!   and stop the round (the peer is unwell; the rest waits). Any other 4xx is permanent: the row
//!   is marked `failed_at` with the answer in `last_error` and stays visible in the backlog
//!   ([`backlog`]); it never blocks the rows behind it. Before a 401, 403 or 404 fails a row,
//!   Raptor's `GET /internal/queue/v1/health` is asked: when it does not answer 200 (the API is
//!   off, or does not accept this service's tokens) the row is retried instead, so a
//!   misconfiguration at Raptor does not fail the whole backlog for good.
//! * **Replicas**: rows are taken under `FOR UPDATE SKIP LOCKED`, and the order check sees a row
//!   another replica is sending as undelivered, so two relays never send the same row, nor a
//!   key's rows out of order.
//!
//! Each request carries a fresh service token minted as the service (audience `raptor`, scope
//! `raptor:writeback`): Raptor refuses a replayed `jti`, so a retry never reuses one. Raptor's
//! endpoints are idempotent, so a row sent again after a lost answer changes nothing.

use chrono::{DateTime, Utc};
use diesel::OptionalExtension;
use diesel::sql_types::{BigInt, Integer, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::config::ConfigError;
use crate::db::Db;
use crate::http_client::HttpClient;

/// The columns a write-back outbox needs (the service's own migration; `<table>` is yours).
pub const WRITEBACK_DDL: &str = "CREATE TABLE <table> (
  id bigserial PRIMARY KEY,
  created_at timestamptz NOT NULL DEFAULT now(),
  kind text NOT NULL,                 -- what changed, e.g. passkey.create (the backlog groups by it)
  method text NOT NULL CHECK (method IN ('POST', 'PATCH', 'DELETE')),
  path text NOT NULL,                 -- under writeback_url; may hold {legacy_id}
  body jsonb,                         -- NULL: no body (DELETE)
  order_key text NOT NULL,            -- rows of one key go in order
  coalesce_key text,                  -- a newer pending row with this key supersedes this one
  subject uuid,                       -- the Queue record (for on_delivered)
  on_delivered text,                  -- the service's statement run with the answer's id
  attempts integer NOT NULL DEFAULT 0,
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  delivered_at timestamptz,
  superseded_by bigint,
  failed_at timestamptz,
  last_error text,
  legacy_id text                      -- the id Raptor answered with, if any
);
CREATE INDEX <table>_pending ON <table> (id) WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX <table>_order ON <table> (order_key, id) WHERE delivered_at IS NULL AND failed_at IS NULL";

/// The audience of write-back tokens, and the scope they carry.
pub const AUDIENCE: &str = "raptor";
pub const SCOPE: &str = "raptor:writeback";
/// Raptor's readiness for write-back (same token as the changes).
pub const HEALTH: &str = "/internal/queue/v1/health";
/// Where `{legacy_id}` stands in a path until the create that knows it is answered.
pub const LEGACY_ID: &str = "{legacy_id}";

/// `[legacy]` in a service's config: where write-back goes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LegacyConfig {
    /// Raptor's base URL (its internal API is under `/internal/queue/v1/`). Absent or empty:
    /// write-back is off and the rows wait in the outbox, so nothing is lost.
    #[serde(deserialize_with = "empty_url_is_none")]
    pub writeback_url: Option<url::Url>,
    /// One request's timeout.
    pub writeback_timeout_ms: u64,
    /// Rows per round.
    pub writeback_batch: i64,
    /// How often the relay looks when nobody wakes it.
    pub writeback_poll_interval_ms: u64,
    /// First retry delay; doubles per attempt up to the maximum.
    pub writeback_backoff_initial_ms: u64,
    pub writeback_backoff_max_ms: u64,
}

impl Default for LegacyConfig {
    fn default() -> Self {
        Self {
            writeback_url: None,
            writeback_timeout_ms: 5000,
            writeback_batch: 50,
            writeback_poll_interval_ms: 2000,
            writeback_backoff_initial_ms: 500,
            writeback_backoff_max_ms: 60_000,
        }
    }
}

fn empty_url_is_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<url::Url>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    match text.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => url::Url::parse(t).map(Some).map_err(serde::de::Error::custom),
    }
}

impl LegacyConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(u) = &self.writeback_url
            && !matches!(u.scheme(), "http" | "https")
        {
            return Err(ConfigError::new("legacy.writeback_url", "must be an http or https URL"));
        }
        if self.writeback_timeout_ms < 100 {
            return Err(ConfigError::new("legacy.writeback_timeout_ms", "must be at least 100"));
        }
        if self.writeback_batch < 1 {
            return Err(ConfigError::new("legacy.writeback_batch", "must be at least 1"));
        }
        if self.writeback_backoff_initial_ms < 1 || self.writeback_backoff_max_ms < self.writeback_backoff_initial_ms {
            return Err(ConfigError::new(
                "legacy.writeback_backoff_max_ms",
                "must be at least writeback_backoff_initial_ms (itself at least 1)",
            ));
        }
        Ok(())
    }

    pub fn settings(&self) -> RelaySettings {
        RelaySettings {
            batch: self.writeback_batch,
            timeout: Duration::from_millis(self.writeback_timeout_ms),
            poll_interval: Duration::from_millis(self.writeback_poll_interval_ms),
            backoff_initial: Duration::from_millis(self.writeback_backoff_initial_ms),
            backoff_max: Duration::from_millis(self.writeback_backoff_max_ms),
        }
    }
}

/// One change to send; [`enqueue`] writes it on the caller's connection (its transaction).
#[derive(Debug, Clone)]
pub struct Change {
    pub kind: &'static str,
    pub method: &'static str,
    pub path: String,
    pub body: Option<serde_json::Value>,
    pub order_key: String,
    pub coalesce_key: Option<String>,
    pub subject: Option<Uuid>,
    /// The name of an [`OnDelivered`] statement the relay knows.
    pub on_delivered: Option<&'static str>,
}

impl Change {
    /// A change with a JSON body, ordered by `order_key`.
    pub fn new(kind: &'static str, method: &'static str, path: String, order_key: String) -> Self {
        Self { kind, method, path, body: None, order_key, coalesce_key: None, subject: None, on_delivered: None }
    }

    pub fn body(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }

    pub fn coalesce(mut self, key: String) -> Self {
        self.coalesce_key = Some(key);
        self
    }

    /// Run `statement` with `subject` and the id in the answer once delivered.
    pub fn on_delivered(mut self, statement: &'static str, subject: Uuid) -> Self {
        self.on_delivered = Some(statement);
        self.subject = Some(subject);
        self
    }
}

/// Writes `change` into `table` on `conn` (call it inside the transaction of the change).
pub async fn enqueue(conn: &mut AsyncPgConnection, table: &str, change: &Change) -> Result<(), diesel::result::Error> {
    diesel::sql_query(format!(
        "INSERT INTO {table} (kind, method, path, body, order_key, coalesce_key, subject, on_delivered) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    ))
    .bind::<Text, _>(change.kind)
    .bind::<Text, _>(change.method)
    .bind::<Text, _>(&change.path)
    .bind::<Nullable<Jsonb>, _>(&change.body)
    .bind::<Text, _>(&change.order_key)
    .bind::<Nullable<Text>, _>(&change.coalesce_key)
    .bind::<Nullable<SqlUuid>, _>(change.subject)
    .bind::<Nullable<Text>, _>(change.on_delivered)
    .execute(conn)
    .await
    .map(drop)
}

/// A statement the relay runs (in the transaction that marks the row delivered) with `$1` the
/// row's `subject` (uuid), `$2` the id Raptor answered with (text; NULL when the answer has
/// none) and `$3` the row's body (jsonb), e.g. storing the id as the record's `legacy_id`, or
/// remembering what Raptor now holds. Rows name it; the SQL lives in the service, never in a row.
#[derive(Debug, Clone, Copy)]
pub struct OnDelivered {
    pub name: &'static str,
    pub sql: &'static str,
}

#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub batch: i64,
    pub timeout: Duration,
    pub poll_interval: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        LegacyConfig::default().settings()
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub delivered: usize,
    pub superseded: usize,
    pub failed: usize,
    /// Raptor was unreachable or unwell; the rest waits.
    pub stalled: bool,
}

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    method: String,
    #[diesel(sql_type = Text)]
    path: String,
    #[diesel(sql_type = Nullable<Jsonb>)]
    body: Option<serde_json::Value>,
    #[diesel(sql_type = Text)]
    order_key: String,
    #[diesel(sql_type = Nullable<SqlUuid>)]
    subject: Option<Uuid>,
    #[diesel(sql_type = Nullable<Text>)]
    on_delivered: Option<String>,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Nullable<BigInt>)]
    newer: Option<i64>,
}

/// How a send ended.
enum Outcome {
    Delivered(Option<String>),
    Retry(String),
    Refused(String),
}

#[derive(Clone)]
struct RelayMetrics {
    sent: IntCounterVec,
    backlog: IntGaugeVec,
}

impl RelayMetrics {
    fn new(registry: Option<&Registry>) -> Self {
        let sent = IntCounterVec::new(
            Opts::new("legacy_writeback_total", "Write-back rows by kind and outcome"),
            &["kind", "outcome"],
        )
        .expect("static metric definition");
        let backlog = IntGaugeVec::new(
            Opts::new("legacy_writeback_backlog", "Write-back rows not delivered, by state (pending, failed)"),
            &["state"],
        )
        .expect("static metric definition");
        if let Some(r) = registry {
            // Registration only fails on a duplicate name: one relay per service.
            let _ = r.register(Box::new(sent.clone()));
            let _ = r.register(Box::new(backlog.clone()));
        }
        Self { sent, backlog }
    }
}

/// Sends a service's write-back outbox to Raptor.
#[derive(Clone)]
pub struct WritebackRelay {
    db: Db,
    table: &'static str,
    base: String,
    http: HttpClient,
    minter: Arc<queue_svc_token::Minter>,
    statements: &'static [OnDelivered],
    settings: RelaySettings,
    wake: Arc<Notify>,
    metrics: RelayMetrics,
}

impl WritebackRelay {
    /// `table`: schema-qualified (`auth.legacy_writeback`); `base`: Raptor's base URL;
    /// `statements`: the [`OnDelivered`] statements rows may name; `registry`: where the
    /// `legacy_writeback_*` metrics go.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Db,
        table: &'static str,
        base: &url::Url,
        http: HttpClient,
        minter: Arc<queue_svc_token::Minter>,
        statements: &'static [OnDelivered],
        settings: RelaySettings,
        registry: Option<&Registry>,
    ) -> Self {
        Self {
            db,
            table,
            base: base.as_str().trim_end_matches('/').to_string(),
            http,
            minter,
            statements,
            settings,
            wake: Arc::new(Notify::new()),
            metrics: RelayMetrics::new(registry),
        }
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
                let pause = match self.round().await {
                    Ok(r) if r.delivered + r.superseded + r.failed > 0 && !r.stalled => continue,
                    Ok(_) => self.settings.poll_interval,
                    Err(e) => {
                        tracing::warn!(table = self.table, error = %e, "write-back relay: database error");
                        self.settings.poll_interval
                    }
                };
                self.observe_backlog().await;
                let _ = tokio::time::timeout(pause, self.wake.notified()).await;
            }
        })
    }

    async fn observe_backlog(&self) {
        let Ok(mut conn) = self.db.conn().await else { return };
        if let Ok(b) = backlog(&mut conn, self.table).await {
            self.metrics.backlog.with_label_values(&["pending"]).set(b.pending);
            self.metrics.backlog.with_label_values(&["failed"]).set(b.failed);
        }
    }

    fn backoff(&self, attempts: i32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.clamp(0, 20) as u32);
        self.settings.backoff_initial.saturating_mul(factor).min(self.settings.backoff_max)
    }

    /// Sends what is due (the head of each order key), oldest first, until a retryable failure
    /// or nothing is left in this batch.
    #[tracing::instrument(skip(self), fields(table = self.table))]
    pub async fn round(&self) -> Result<Round, diesel::result::Error> {
        let mut conn = self.db.conn().await.map_err(|e| {
            diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::Unknown, Box::new(e.to_string()))
        })?;
        let this = self.clone();
        conn.transaction::<_, diesel::result::Error, _>(async move |conn| {
            let rows = this.due(conn).await?;
            let mut round = Round::default();
            for mut row in rows {
                if row.path.contains(LEGACY_ID) {
                    this.learn_legacy_id(conn, &mut row).await?;
                }
                if let Some(newer) = row.newer {
                    this.supersede(conn, &row, newer).await?;
                    round.superseded += 1;
                    continue;
                }
                match this.send(&row).await {
                    Outcome::Delivered(id) => {
                        this.delivered(conn, &row, id).await?;
                        round.delivered += 1;
                    }
                    Outcome::Retry(e) => {
                        this.retry(conn, &row, &e).await?;
                        round.stalled = true;
                        break;
                    }
                    Outcome::Refused(e) => {
                        tracing::error!(row = row.id, kind = %row.kind, error = %e, "write-back refused by Raptor");
                        this.fail(conn, row.id, &row.kind, &e).await?;
                        round.failed += 1;
                    }
                }
            }
            Ok(round)
        })
        .await
    }

    async fn due(&self, conn: &mut AsyncPgConnection) -> Result<Vec<Row>, diesel::result::Error> {
        let table = self.table;
        diesel::sql_query(format!(
            "SELECT r.id, r.kind, r.method, r.path, r.body, r.order_key, r.subject, r.on_delivered, r.attempts, \
               (SELECT max(n.id) FROM {table} n WHERE r.coalesce_key IS NOT NULL AND n.coalesce_key = r.coalesce_key \
                  AND n.id > r.id AND n.delivered_at IS NULL AND n.failed_at IS NULL) AS newer \
             FROM {table} r \
             WHERE r.delivered_at IS NULL AND r.failed_at IS NULL AND r.next_attempt_at <= now() \
               AND NOT EXISTS (SELECT 1 FROM {table} e WHERE e.order_key = r.order_key AND e.id < r.id \
                               AND e.delivered_at IS NULL AND e.failed_at IS NULL) \
             ORDER BY r.id LIMIT $1 FOR UPDATE OF r SKIP LOCKED"
        ))
        .bind::<BigInt, _>(self.settings.batch)
        .load(conn)
        .await
    }

    /// A row enqueued with `{legacy_id}` after its create's delivery filled in the rows then
    /// waiting (the create was being sent while this change committed) takes the id the create
    /// was answered with.
    async fn learn_legacy_id(&self, conn: &mut AsyncPgConnection, row: &mut Row) -> Result<(), diesel::result::Error> {
        #[derive(diesel::QueryableByName)]
        struct Known {
            #[diesel(sql_type = Text)]
            legacy_id: String,
        }
        let table = self.table;
        let known: Option<Known> = diesel::sql_query(format!(
            "SELECT legacy_id FROM {table} WHERE order_key = $1 AND id < $2 AND delivered_at IS NOT NULL \
               AND legacy_id IS NOT NULL ORDER BY id DESC LIMIT 1"
        ))
        .bind::<Text, _>(&row.order_key)
        .bind::<BigInt, _>(row.id)
        .get_result(conn)
        .await
        .optional()?;
        if let Some(k) = known {
            row.path = row.path.replace(LEGACY_ID, &k.legacy_id);
            diesel::sql_query(format!("UPDATE {table} SET path = $2 WHERE id = $1"))
                .bind::<BigInt, _>(row.id)
                .bind::<Text, _>(&row.path)
                .execute(conn)
                .await?;
        }
        Ok(())
    }

    async fn send(&self, row: &Row) -> Outcome {
        if row.path.contains(LEGACY_ID) {
            return Outcome::Refused("Raptor's id is unknown: the create before this change was not delivered".into());
        }
        let method = match reqwest::Method::from_bytes(row.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => return Outcome::Refused(format!("unknown method `{}`", row.method)),
        };
        let token = match self.minter.mint(AUDIENCE, &[SCOPE], 60) {
            Ok(t) => t,
            Err(e) => return Outcome::Retry(format!("cannot mint a service token: {e}")),
        };
        let url = format!("{}{}", self.base, row.path);
        let mut request = self.http.reqwest().request(method, &url).bearer_auth(token).timeout(self.settings.timeout);
        if let Some(body) = &row.body {
            request = request.json(body);
        }
        let response = match self.http.send(request).await {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(format!("{} {url}: {e}", row.method)),
        };
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            let id = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| match v.get("id") {
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
                _ => None,
            });
            return Outcome::Delivered(id);
        }
        let said = format!("{} {} answered {status}: {}", row.method, row.path, snippet(&text));
        match status.as_u16() {
            408 | 429 | 500.. => Outcome::Retry(said),
            // About this row, or about the API as a whole (off: 404; not trusting this service
            // yet: 401, 403)? Only the first is the row's failure; the second must not fail
            // every row of the backlog for good.
            401 | 403 | 404 => match self.health().await {
                Ok(()) => Outcome::Refused(said),
                Err(why) => Outcome::Retry(format!("{said}; {why}")),
            },
            _ => Outcome::Refused(said),
        }
    }

    /// `GET /internal/queue/v1/health` with this service's token: whether Raptor's write-back API
    /// is on and accepts this service (its readiness, endpoint 8 of the contract).
    async fn health(&self) -> Result<(), String> {
        let token = self.minter.mint(AUDIENCE, &[SCOPE], 60).map_err(|e| format!("cannot mint a token: {e}"))?;
        let url = format!("{}{HEALTH}", self.base);
        let request = self.http.reqwest().get(&url).bearer_auth(token).timeout(self.settings.timeout);
        match self.http.send(request).await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!(
                "GET {HEALTH} answered {}: Raptor's write-back API is off or does not accept `{}` (the rows wait)",
                r.status(),
                self.minter.issuer()
            )),
            Err(e) => Err(format!("GET {HEALTH}: {e}")),
        }
    }

    async fn delivered(
        &self,
        conn: &mut AsyncPgConnection,
        row: &Row,
        legacy_id: Option<String>,
    ) -> Result<(), diesel::result::Error> {
        let table = self.table;
        diesel::sql_query(format!(
            "UPDATE {table} SET delivered_at = now(), attempts = attempts + 1, last_error = NULL, legacy_id = $2 \
             WHERE id = $1"
        ))
        .bind::<BigInt, _>(row.id)
        .bind::<Nullable<Text>, _>(&legacy_id)
        .execute(conn)
        .await?;
        self.metrics.sent.with_label_values(&[&row.kind, "delivered"]).inc();
        if let Some(id) = &legacy_id {
            // The rows waiting behind this one learn Raptor's id.
            diesel::sql_query(format!(
                "UPDATE {table} SET path = replace(path, '{LEGACY_ID}', $2) \
                 WHERE order_key = $1 AND id > $3 AND delivered_at IS NULL AND failed_at IS NULL"
            ))
            .bind::<Text, _>(&row.order_key)
            .bind::<Text, _>(id)
            .bind::<BigInt, _>(row.id)
            .execute(conn)
            .await?;
        }
        let Some(name) = &row.on_delivered else { return Ok(()) };
        match (self.statements.iter().find(|s| s.name == name), row.subject) {
            (Some(s), Some(subject)) => {
                diesel::sql_query(s.sql)
                    .bind::<SqlUuid, _>(subject)
                    .bind::<Nullable<Text>, _>(&legacy_id)
                    .bind::<Nullable<Jsonb>, _>(&row.body)
                    .execute(conn)
                    .await?;
            }
            _ => tracing::error!(row = row.id, statement = %name, "write-back: unknown on_delivered statement"),
        }
        Ok(())
    }

    async fn supersede(
        &self,
        conn: &mut AsyncPgConnection,
        row: &Row,
        newer: i64,
    ) -> Result<(), diesel::result::Error> {
        diesel::sql_query(format!("UPDATE {} SET delivered_at = now(), superseded_by = $2 WHERE id = $1", self.table))
            .bind::<BigInt, _>(row.id)
            .bind::<BigInt, _>(newer)
            .execute(conn)
            .await?;
        self.metrics.sent.with_label_values(&[&row.kind, "superseded"]).inc();
        Ok(())
    }

    async fn retry(&self, conn: &mut AsyncPgConnection, row: &Row, error: &str) -> Result<(), diesel::result::Error> {
        let delay = self.backoff(row.attempts);
        let next: DateTime<Utc> =
            Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(60));
        diesel::sql_query(format!(
            "UPDATE {} SET attempts = attempts + 1, next_attempt_at = $2, last_error = $3 WHERE id = $1",
            self.table
        ))
        .bind::<BigInt, _>(row.id)
        .bind::<Timestamptz, _>(next)
        .bind::<Text, _>(error)
        .execute(conn)
        .await?;
        self.metrics.sent.with_label_values(&[&row.kind, "retry"]).inc();
        tracing::warn!(row = row.id, kind = %row.kind, error, ?delay, "write-back: will retry");
        Ok(())
    }

    async fn fail(
        &self,
        conn: &mut AsyncPgConnection,
        id: i64,
        kind: &str,
        error: &str,
    ) -> Result<(), diesel::result::Error> {
        diesel::sql_query(format!(
            "UPDATE {} SET failed_at = now(), attempts = attempts + 1, last_error = $2 WHERE id = $1",
            self.table
        ))
        .bind::<BigInt, _>(id)
        .bind::<Text, _>(error)
        .execute(conn)
        .await?;
        self.metrics.sent.with_label_values(&[kind, "failed"]).inc();
        Ok(())
    }
}

fn snippet(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}

/// The write-back backlog of one service: the `write_back` field of
/// `GET /internal/v1/import/status` (auth and rbac answer the same shape).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Backlog {
    /// Whether `[legacy] writeback_url` is set (off: rows are recorded and wait).
    pub enabled: bool,
    /// Rows not yet delivered (including those backing off).
    pub pending: i64,
    /// Rows Raptor refused for good: they stay until an operator looks.
    pub failed: i64,
    /// Age of the oldest pending row, in seconds.
    pub oldest_pending_age_secs: Option<i64>,
    /// Per kind (`passkey.create`, `session.revoke`, …), those with anything pending or failed.
    pub kinds: Vec<KindBacklog>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct KindBacklog {
    pub kind: String,
    pub pending: i64,
    pub failed: i64,
    pub oldest_pending_age_secs: Option<i64>,
    /// The latest error: of the newest failed row, else of a pending row that is retrying.
    pub last_error: Option<String>,
}

#[derive(diesel::QueryableByName)]
struct KindRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = BigInt)]
    pending: i64,
    #[diesel(sql_type = BigInt)]
    failed: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    oldest: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
}

/// Reads the backlog of `table` (`enabled` is the caller's to set).
pub async fn backlog(conn: &mut AsyncPgConnection, table: &str) -> Result<Backlog, diesel::result::Error> {
    let rows: Vec<KindRow> = diesel::sql_query(format!(
        "SELECT kind, \
           count(*) FILTER (WHERE failed_at IS NULL) AS pending, \
           count(*) FILTER (WHERE failed_at IS NOT NULL) AS failed, \
           floor(extract(epoch FROM now() - min(created_at) FILTER (WHERE failed_at IS NULL)))::bigint AS oldest, \
           coalesce((array_agg(last_error ORDER BY failed_at DESC NULLS LAST, id DESC) \
                     FILTER (WHERE failed_at IS NOT NULL))[1], \
                    (array_agg(last_error ORDER BY id DESC) FILTER (WHERE last_error IS NOT NULL))[1]) AS last_error \
         FROM {table} WHERE delivered_at IS NULL GROUP BY kind ORDER BY kind"
    ))
    .load(conn)
    .await?;
    let mut out = Backlog::default();
    for r in rows {
        out.pending += r.pending;
        out.failed += r.failed;
        out.oldest_pending_age_secs = match (out.oldest_pending_age_secs, r.oldest) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        out.kinds.push(KindBacklog {
            kind: r.kind,
            pending: r.pending,
            failed: r.failed,
            oldest_pending_age_secs: r.oldest,
            last_error: r.last_error,
        });
    }
    Ok(out)
}
