//! Pre-write audit (ADR-0055 in the seeds): the audit event of a change, carrying the whole
//! change, is written to the audit service first; only when it is committed there is the change
//! applied, in one transaction that also records which audit event it belongs to. If the audit
//! write fails or times out, nothing changes.
//!
//! Nothing is lost on a crash (issue 16, item 9): *before* the audit write, the compensating
//! event (`rbac.change.aborted`, naming the pre-written event) is committed to the outbox
//! `rbac_audit_outbox`, held back for `audit.compensate_after_secs`. The change's transaction
//! deletes it (claims it) and commits with it. If the change fails, the compensation is made due
//! at once; if the process dies in between, it stays in the outbox and the relay delivers it
//! when its hold ends, from whichever replica runs. A change whose compensation was already
//! delivered (it took longer than the hold) finds nothing to claim and is not applied, so the log
//! and the grants never disagree. docs/rbac-service.md, "Nothing lost on a crash".

use chrono::{DateTime, Utc};
use diesel_async::AsyncConnection;
use queue_audit_client::{AuditClient, AuditClientError, AuditEvent, Party};
use queue_platform::db::Db;
use serde_json::json;
use std::sync::Arc;
use tokio::sync::Notify;
use uuid::Uuid;

use super::checker::Checker;
use super::{Error, Origin};
use crate::db::grants::{self, NewGrantRow};
use crate::db::roles::{self, RoleRow};
use crate::db::writeback;
use crate::db::{Conn, links, outbox, revisions};
use crate::metrics::RbacMetrics;

/// Events per call of the audit service's batch endpoint when an import batch is pre-written
/// (its `chain.max_batch` is 500 by default).
pub const AUDIT_BATCH: usize = 100;

/// The audit-log tenant of platform-wide (global) changes.
pub const PLATFORM_TENANT: &str = "_platform";

/// Test-only: where to make the process die (`RBAC_TEST_FAILPOINT`), to show that a crash
/// between the audit write and the change loses nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    /// `abort()` right after a change's audit event was written, before the change.
    AbortAfterPrewrite,
}

impl Failpoint {
    /// `RBAC_TEST_FAILPOINT=abort-after-prewrite` (outside the `QUEUE_*` config namespace: it is
    /// no setting, and start-up logs a warning when it is set).
    pub fn from_env() -> Option<Self> {
        match std::env::var("RBAC_TEST_FAILPOINT").ok()?.as_str() {
            "abort-after-prewrite" => Some(Self::AbortAfterPrewrite),
            other => {
                tracing::warn!(failpoint = other, "unknown RBAC_TEST_FAILPOINT ignored");
                None
            }
        }
    }
}

/// What an audited change needs: the database, the audit service, the outbox relay's waker and
/// the checker (to wait for the replicas).
pub struct Prewriter {
    pub db: Db,
    pub audit: AuditClient,
    pub checker: Arc<Checker>,
    pub metrics: RbacMetrics,
    /// Wakes the outbox relay (a compensation became due).
    pub outbox: Arc<Notify>,
    /// Wakes the write-back relay (a change to write back to Raptor committed).
    pub write_back: Arc<Notify>,
    /// `audit.compensate_after_secs`.
    pub compensate_after_secs: u64,
    pub failpoint: Option<Failpoint>,
}

/// One change to write: its audit event's identity and content.
pub struct Change<'a> {
    pub event_id: Uuid,
    pub tenant: &'a str,
    pub action: &'static str,
    pub actor: Party,
    pub target: Party,
    pub occurred_at: DateTime<Utc>,
    pub payload: serde_json::Value,
}

impl Change<'_> {
    fn event(&self, origin: &Origin) -> AuditEvent {
        AuditEvent {
            id: self.event_id,
            tenant_id: self.tenant.to_string(),
            actor: self.actor.clone(),
            action: self.action.into(),
            target: self.target.clone(),
            occurred_at: self.occurred_at,
            ip: origin.ip.clone(),
            user_agent: origin.user_agent.clone(),
            trace_id: origin.trace_id.clone(),
            payload: self.payload.clone(),
        }
    }

    /// The compensating event: `rbac.change.aborted`, naming this change's event.
    fn compensation(&self) -> Change<'_> {
        Change {
            event_id: Uuid::new_v4(),
            tenant: self.tenant,
            action: "rbac.change.aborted",
            actor: self.actor.clone(),
            target: self.target.clone(),
            occurred_at: Utc::now(),
            payload: json!({ "aborted_event_id": self.event_id, "note": "the change this event announced was not applied" }),
        }
    }
}

/// The change itself, applied in its transaction after the audit write.
pub enum Apply<'a> {
    InsertGrant(&'a NewGrantRow<'a>),
    /// Revoke a grant unless it is revoked already (then there is nothing to do).
    Revoke {
        id: Uuid,
        by: &'a str,
        reason: &'a str,
        at: DateTime<Utc>,
        event: Uuid,
    },
    InsertRole {
        row: &'a RoleRow,
        permissions: &'a [String],
        created_by: &'a str,
        /// Now unless given (an imported role keeps Raptor's).
        created_at: Option<DateTime<Utc>>,
    },
    /// Link a role defined at Queue to the Raptor row it matches (nothing to do if it is linked
    /// already).
    LinkRole {
        id: Uuid,
        legacy_id: &'a str,
    },
    /// Give a grant made at Queue the Raptor row id its write-back created (nothing to do if it
    /// has one already).
    LinkGrant {
        id: Uuid,
        legacy_id: &'a str,
    },
    /// Record which Queue users are which Raptor customers (pairs not stored before).
    LinkPrincipals(&'a [(String, String)]),
}

impl Apply<'_> {
    /// False when there is nothing to do after all.
    async fn run(&self, c: &mut Conn) -> Result<bool, diesel::result::Error> {
        match self {
            Apply::InsertGrant(row) => grants::insert(c, row).await.map(|()| true),
            Apply::Revoke { id, by, reason, at, event } => grants::revoke(c, *id, by, reason, *at, *event).await,
            Apply::InsertRole { row, permissions, created_by, created_at } => {
                roles::insert(c, row, permissions, created_by, *created_at).await.map(|()| true)
            }
            Apply::LinkRole { id, legacy_id } => roles::link_legacy(c, *id, legacy_id).await,
            Apply::LinkGrant { id, legacy_id } => grants::link_legacy(c, *id, legacy_id).await,
            Apply::LinkPrincipals(pairs) => writeback::insert_principals(c, pairs).await.map(|()| true),
        }
    }
}

/// A compensating event held in the outbox for one pre-written change.
struct Held(Uuid);

/// What the change's transaction decided.
pub enum Applied {
    /// Committed, at this revision.
    Done(i64),
    /// Nothing to do after all (say, revoked meanwhile): rolled back, compensated.
    Nothing,
}

impl Prewriter {
    /// Writes `change`'s audit event, then applies it in a transaction that also claims the
    /// compensation and links the event; waits for the replicas after a commit. When there is
    /// nothing to do after all, the change is compensated.
    pub async fn write(&self, change: Change<'_>, origin: &Origin, apply: Apply<'_>) -> Result<Applied, Error> {
        self.write_with(change, origin, apply, None).await
    }

    /// [`Self::write`], and the row that writes the change back to Raptor (issue 19, item 3) in
    /// the change's own transaction: both commit, or neither.
    pub async fn write_with(
        &self,
        change: Change<'_>,
        origin: &Origin,
        apply: Apply<'_>,
        write_back: Option<&queue_platform::writeback::Change>,
    ) -> Result<Applied, Error> {
        let held = self.hold(&change, origin).await?;
        self.prewrite(&change.event(origin), &held).await?;
        let applied = self.apply(&change, &held, &apply, write_back).await;
        match applied {
            Ok(Some(revision)) => {
                if write_back.is_some() {
                    self.write_back.notify_one();
                }
                self.checker.await_replicas(revision).await;
                Ok(Applied::Done(revision))
            }
            Ok(None) => {
                self.release(&held).await;
                Ok(Applied::Nothing)
            }
            Err(e) => {
                self.release(&held).await;
                Err(e)
            }
        }
    }

    /// New grants of an import batch, pre-written together (`domain::import::grants`): every
    /// compensation held with one statement, then every event written with the audit service's
    /// batch endpoint ([`AUDIT_BATCH`] per call) before any change, then all the changes in one
    /// transaction that claims all the compensations and links all the events. Each record's
    /// event is still written before its change, and the log and the grants never disagree: if
    /// any part fails, nothing of the batch is applied and what may have been written is
    /// compensated. Returns the revision committed.
    pub async fn write_grants(
        &self,
        changes: &[Change<'_>],
        origin: &Origin,
        rows: &[NewGrantRow<'_>],
    ) -> Result<i64, Error> {
        let compensations: Vec<AuditEvent> = changes.iter().map(|c| c.compensation().event(origin)).collect();
        let held: Vec<Uuid> = compensations.iter().map(|e| e.id).collect();
        let bodies = compensations
            .iter()
            .map(|e| serde_json::to_value(e).map(|v| (e.id, v)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Internal(e.into()))?;
        {
            let mut conn = self.db.conn().await?;
            outbox::hold_many(&mut conn, &bodies, self.compensate_after_secs).await?;
        }
        let events: Vec<AuditEvent> = changes.iter().map(|c| c.event(origin)).collect();
        let mut sent = 0;
        for chunk in events.chunks(AUDIT_BATCH) {
            if let Err(e) = self.audit.append_batch(chunk).await {
                tracing::warn!(error = %e, events = events.len(), "pre-write audit of an import batch failed; nothing changed");
                self.metrics.change("audit_unavailable");
                // A refused call wrote nothing (the batch endpoint is atomic); after a timeout or
                // an outage it may have.
                let maybe_written =
                    if matches!(e, AuditClientError::Rejected { .. }) { sent } else { sent + chunk.len() };
                self.release_many(&held[..maybe_written]).await;
                if let Ok(mut conn) = self.db.conn().await
                    && let Err(e) = outbox::drop_many(&mut conn, &held[maybe_written..]).await
                {
                    tracing::warn!(error = %e, "cannot drop the compensations of unwritten events");
                }
                return Err(Error::NotApplied(
                    "the audit service did not record the changes, so nothing was changed".into(),
                ));
            }
            sent += chunk.len();
        }
        if self.failpoint == Some(Failpoint::AbortAfterPrewrite) {
            tracing::error!(events = events.len(), "RBAC_TEST_FAILPOINT: aborting after the audit write");
            std::process::abort();
        }
        let links: Vec<(Uuid, &str, &str)> = changes.iter().map(|c| (c.event_id, c.tenant, c.action)).collect();
        let mut conn = self.db.conn().await?;
        let applied = conn
            .transaction::<_, Abort, _>(async |c| {
                if outbox::claim_many(c, &held).await? != held.len() {
                    return Err(Abort::Compensated);
                }
                grants::insert_many(c, rows).await?;
                links::link_many(c, &links).await?;
                Ok(revisions::current(c).await?)
            })
            .await;
        match applied {
            Ok(revision) => {
                self.checker.await_replicas(revision).await;
                Ok(revision)
            }
            Err(e) => {
                self.release_many(&held).await;
                Err(match e {
                    Abort::Compensated => Error::NotApplied(
                        "the changes were not applied: they took too long and the audit log records them as aborted"
                            .into(),
                    ),
                    Abort::Nothing => {
                        Error::Internal(anyhow::anyhow!("an import batch's inserts reported nothing to do"))
                    }
                    Abort::Db(e) => Error::Unavailable(e.to_string()),
                })
            }
        }
    }

    /// [`Prewriter::release`] for the changes of a batch.
    async fn release_many(&self, held: &[Uuid]) {
        if held.is_empty() {
            return;
        }
        self.metrics.change("compensated");
        let released = match self.db.conn().await {
            Ok(mut conn) => outbox::release_many(&mut conn, held).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = released {
            tracing::warn!(error = %e, events = held.len(), "compensations stay held; the relay delivers them when the hold ends");
        }
        self.outbox.notify_one();
    }

    /// Commits the compensation of the change's event to the outbox, held back, before that
    /// event is written: from here on, whatever happens to this process, the audit log ends up
    /// saying either that the change happened or that it did not.
    async fn hold(&self, change: &Change<'_>, origin: &Origin) -> Result<Held, Error> {
        let event = change.compensation().event(origin);
        let body = serde_json::to_value(&event).map_err(|e| Error::Internal(e.into()))?;
        let mut conn = self.db.conn().await?;
        outbox::hold(&mut conn, event.id, &body, self.compensate_after_secs).await?;
        Ok(Held(event.id))
    }

    /// The change did not happen: the compensation is due now. If even this fails (the database
    /// is gone), it is delivered when its hold ends.
    async fn release(&self, held: &Held) {
        self.metrics.change("compensated");
        let released = match self.db.conn().await {
            Ok(mut conn) => outbox::release(&mut conn, held.0).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = released {
            tracing::warn!(error = %e, event_id = %held.0, "compensation stays held; the relay delivers it when the hold ends");
        }
        self.outbox.notify_one();
    }

    /// Writes the change's audit event and waits for its commit. On failure nothing is changed:
    /// a refused event was certainly not written, so its compensation is dropped; after a timeout
    /// or an outage it may have been, so the compensation is delivered (it says, truthfully, that
    /// the change announced by that event did not happen).
    async fn prewrite(&self, event: &AuditEvent, held: &Held) -> Result<(), Error> {
        match self.audit.append(event).await {
            Ok(_) => {
                if self.failpoint == Some(Failpoint::AbortAfterPrewrite) {
                    tracing::error!(event_id = %event.id, "RBAC_TEST_FAILPOINT: aborting after the audit write");
                    std::process::abort();
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, action = %event.action, "pre-write audit failed; nothing changed");
                self.metrics.change("audit_unavailable");
                if matches!(e, AuditClientError::Rejected { .. }) {
                    if let Ok(mut conn) = self.db.conn().await
                        && let Err(e) = outbox::drop_held(&mut conn, held.0).await
                    {
                        tracing::warn!(error = %e, "cannot drop the compensation of a refused event");
                    }
                } else {
                    self.release(held).await;
                }
                Err(Error::NotApplied("the audit service did not record the change, so nothing was changed".into()))
            }
        }
    }

    /// The change's transaction: take the compensation out (or roll back if it is gone: the
    /// audit log already says the change was aborted), `apply`, link the event, read the
    /// revision. Everything here comes after the audit write.
    async fn apply(
        &self,
        change: &Change<'_>,
        held: &Held,
        apply: &Apply<'_>,
        write_back: Option<&queue_platform::writeback::Change>,
    ) -> Result<Option<i64>, Error> {
        let mut conn = self.db.conn().await?;
        let applied = conn
            .transaction::<_, Abort, _>(async |c| {
                if !outbox::claim(c, held.0).await? {
                    return Err(Abort::Compensated);
                }
                if !apply.run(c).await? {
                    return Err(Abort::Nothing);
                }
                if let Some(row) = write_back {
                    queue_platform::writeback::enqueue(c, writeback::TABLE, row).await?;
                }
                links::link(c, change.event_id, change.tenant, change.action).await?;
                Ok(revisions::current(c).await?)
            })
            .await;
        match applied {
            Ok(done) => Ok(Some(done)),
            Err(Abort::Nothing) => Ok(None),
            Err(Abort::Compensated) => Err(Error::NotApplied(
                "the change was not applied: it took too long and the audit log records it as aborted".into(),
            )),
            // After the audit write, any failure is the documented 503 "nothing changed" (the
            // compensation is delivered), whatever its cause; the cause is logged by the handler.
            Err(Abort::Db(e)) => Err(Error::Unavailable(e.to_string())),
        }
    }
}

/// Why the change's transaction rolled back.
enum Abort {
    /// The compensation was delivered already.
    Compensated,
    /// `apply` found nothing to do.
    Nothing,
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for Abort {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e)
    }
}
