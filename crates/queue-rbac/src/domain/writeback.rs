//! What rbac writes back to Raptor (issue 19, item 3; docs/rbac-service.md, "Write-back to
//! Raptor"): a grant made at Queue to a user imported from Raptor, of a role that has a Raptor
//! id, and the revoke of a grant that has (or will have) a Raptor id. The row is made here and
//! written by the pre-writer in the change's own transaction; queue-platform's relay sends it to
//! Raptor's `/internal/queue/v1/grants…`. A delivered create's answered id is linked to the grant
//! by [`link_delivered`], through the pre-writer (audited first, like any change to a grant).
//!
//! Which Queue users came from Raptor rbac learns at import (`legacy_principals`, filled by
//! `POST /internal/v1/import/principals`): rbac knows principals by Queue user id only.

use chrono::{DateTime, SecondsFormat, Utc};
use queue_audit_client::Party;
use queue_platform::writeback::{self as relay, Change as WriteBack, LEGACY_ID, OnDelivered};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

use super::model::Grant;
use super::prewrite::{Applied, Apply, Change, PLATFORM_TENANT, Prewriter};
use super::{Actor, ActorKind, Error, Origin};
use crate::db::Conn;
use crate::db::grants as grant_rows;
use crate::db::writeback::{self as rows, GRANT_CREATE, GRANT_REVOKE};

/// The statement a delivered create names, so the relay fills Raptor's id into the revoke waiting
/// behind it. It changes nothing: the grant is linked by [`link_delivered`], audited first (a
/// bare UPDATE of a grant would be a change without an audit event, which reconcile reports).
pub const NOTE_DELIVERED: &str = "grant.delivered";
pub static STATEMENTS: [OnDelivered; 1] =
    [OnDelivered { name: NOTE_DELIVERED, sql: "SELECT $1::uuid IS NOT NULL AND $2::text IS NOT NULL" }];

fn order_key(grant: Uuid) -> String {
    format!("grant:{grant}")
}

/// Raptor's ids are `bigint`s; Queue keeps them as decimal strings.
fn raptor_id(legacy_id: &str) -> Result<i64, Error> {
    legacy_id.parse().map_err(|_| Error::Internal(anyhow::anyhow!("legacy id `{legacy_id}` is not a Raptor row id")))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The Raptor customer ids of these Queue users (those imported from Raptor).
async fn customers(conn: &mut Conn, users: &[&str]) -> Result<HashMap<String, i64>, Error> {
    let mut found = HashMap::new();
    for (principal, legacy) in rows::legacy_ids_of(conn, users).await? {
        found.insert(principal, raptor_id(&legacy)?);
    }
    Ok(found)
}

/// The acting user's Queue id (a service acts as nobody Raptor knows: null at Raptor).
fn acting_user(actor: &Actor) -> Option<&str> {
    match &actor.kind {
        ActorKind::User { user_id } => Some(user_id),
        ActorKind::Service { .. } => None,
    }
}

/// The row that writes a new grant back: only when its principal came from Raptor and its role
/// has a Raptor id (Raptor could not hold it otherwise); the granter is the acting user's
/// customer id, or null (the system) when they have none.
#[tracing::instrument(skip_all)]
pub async fn grant_created(conn: &mut Conn, grant: &Grant, actor: &Actor) -> Result<Option<WriteBack>, Error> {
    let Some(role) = rows::role_legacy_id(conn, grant.role_id).await? else { return Ok(None) };
    let granter = acting_user(actor);
    let people: Vec<&str> = std::iter::once(grant.principal_id.as_str()).chain(granter).collect();
    let known = customers(conn, &people).await?;
    let Some(customer) = known.get(&grant.principal_id) else { return Ok(None) };
    let body = json!({
        "customer_id": customer,
        "role_id": raptor_id(&role)?,
        "scope_type": grant.scope.kind(),
        "tenant_id": grant.scope.tenant(),
        "ticket_id": grant.scope.ticket(),
        "granted_by": granter.and_then(|g| known.get(g)),
        "granted_at": rfc3339(grant.granted_at),
        "expires_at": grant.expires_at.map(rfc3339),
        "reason": grant.reason,
        "queue_id": grant.id.to_string(),
    });
    let path = "/internal/queue/v1/grants".to_string();
    Ok(Some(
        WriteBack::new(GRANT_CREATE, "POST", path, order_key(grant.id))
            .body(body)
            .on_delivered(NOTE_DELIVERED, grant.id),
    ))
}

/// The row that writes a revoke back: for a grant with a Raptor id, or one whose create is on its
/// way (it gets its id before the revoke is sent: one grant's rows go in order).
#[tracing::instrument(skip_all)]
pub async fn grant_revoked(
    conn: &mut Conn,
    grant: Uuid,
    at: DateTime<Utc>,
    actor: &Actor,
) -> Result<Option<WriteBack>, Error> {
    // Raptor's id: linked, or answered to the create and not linked yet; else `{legacy_id}`,
    // filled in by the relay when the create (still pending) is answered.
    let id = match grant_rows::legacy_id_of(conn, grant).await? {
        Some(id) => id,
        None => match rows::delivered_create_id(conn, grant).await? {
            Some(id) => id,
            None if rows::has_create(conn, grant).await? => LEGACY_ID.to_string(),
            None => return Ok(None),
        },
    };
    let revoker = match acting_user(actor) {
        Some(u) => customers(conn, &[u]).await?.get(u).copied(),
        None => None,
    };
    let body = json!({ "revoked_at": rfc3339(at), "revoked_by": revoker, "queue_id": grant.to_string() });
    let path = format!("/internal/queue/v1/grants/{id}/revoke");
    let mut row = WriteBack::new(GRANT_REVOKE, "POST", path, order_key(grant)).body(body);
    row.subject = Some(grant);
    Ok(Some(row))
}

/// Links the grants whose create was delivered to Raptor's answered id, each through the
/// pre-writer (`rbac.legacy.grant.linked`, audited first); how many were linked.
#[tracing::instrument(skip_all)]
pub async fn link_delivered(w: &Prewriter) -> Result<usize, Error> {
    let found = rows::delivered_unlinked(&mut *w.db.conn().await?, 100).await?;
    let mut linked = 0;
    for (grant, legacy_id) in found {
        let change = Change {
            event_id: Uuid::new_v4(),
            tenant: PLATFORM_TENANT,
            action: "rbac.legacy.grant.linked",
            actor: Party::new("service", "rbac"),
            target: Party::new("grant", grant.to_string()),
            occurred_at: Utc::now(),
            payload: json!({ "legacy_id": legacy_id, "note": "written back to Raptor, which answered this row id" }),
        };
        let apply = Apply::LinkGrant { id: grant, legacy_id: &legacy_id };
        if let Applied::Done(_) = w.write(change, &Origin::default(), apply).await? {
            linked += 1;
        }
    }
    Ok(linked)
}

/// Links delivered creates every `every`, and at once when woken; `writes` finds the pre-writer
/// in what `holder` holds (the service's state).
pub fn spawn_linker<S: Send + Sync + 'static>(
    holder: Arc<S>,
    writes: fn(&S) -> &Prewriter,
    every: Duration,
    wake: Arc<Notify>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Err(e) = link_delivered(writes(&holder)).await {
                tracing::warn!(error = %e, "write-back: cannot link delivered grants yet");
            }
            let _ = tokio::time::timeout(every, wake.notified()).await;
        }
    })
}

/// The backlog as `GET /internal/v1/import/status` reports it (`write_back`).
pub async fn backlog(conn: &mut Conn, enabled: bool) -> Result<relay::Backlog, Error> {
    let mut b = relay::backlog(conn, rows::TABLE).await?;
    b.enabled = enabled;
    Ok(b)
}
