//! What rbac writes back to Raptor (issue 19, item 3; docs/rbac-service.md, "Write-back to
//! Raptor"): a grant made at Queue to a user imported from Raptor, of a role that has a Raptor
//! id, and the revoke of a grant that has (or will have) a Raptor id. The row is made here and
//! written by the pre-writer in the change's own transaction; the relay sends it to Raptor's
//! `/internal/queue/v1/grants…` and, for a create, links the answered id to the grant.
//!
//! Which Queue users came from Raptor rbac learns at import (`legacy_principals`, filled by
//! `POST /internal/v1/import/principals`): rbac knows principals by Queue user id only.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use std::collections::HashMap;
use uuid::Uuid;

use super::model::Grant;
use super::{Actor, ActorKind, Error};
use crate::db::Conn;
use crate::db::grants as grant_rows;
use crate::db::writeback::{self as rows, GRANT_CREATE, GRANT_REVOKE, NewWriteBack, grant_key};

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
pub async fn grant_created(conn: &mut Conn, grant: &Grant, actor: &Actor) -> Result<Option<NewWriteBack>, Error> {
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
    });
    Ok(Some(NewWriteBack { kind: GRANT_CREATE, key: grant_key(grant.id), record_id: grant.id, body }))
}

/// The row that writes a revoke back: for a grant with a Raptor id, or one whose create is on its
/// way (it gets its id before the revoke is sent: one grant's rows go in order).
#[tracing::instrument(skip_all)]
pub async fn grant_revoked(
    conn: &mut Conn,
    grant: Uuid,
    at: DateTime<Utc>,
    actor: &Actor,
) -> Result<Option<NewWriteBack>, Error> {
    let linked = grant_rows::legacy_id_of(conn, grant).await?.is_some();
    if !linked && !rows::has_create(conn, grant).await? {
        return Ok(None);
    }
    let revoker = match acting_user(actor) {
        Some(u) => customers(conn, &[u]).await?.get(u).copied(),
        None => None,
    };
    let body = json!({ "revoked_at": rfc3339(at), "revoked_by": revoker });
    Ok(Some(NewWriteBack { kind: GRANT_REVOKE, key: grant_key(grant), record_id: grant, body }))
}

/// Where a row goes at Raptor (relative to `[legacy] writeback_url`), resolved when it is sent: a
/// revoke names the grant's Raptor id, which a grant made at Queue has only once its create was
/// delivered. `Err` with a reason when it cannot go (its create failed: it never will).
pub async fn target(conn: &mut Conn, kind: &str, grant: Uuid) -> Result<Result<String, String>, Error> {
    match kind {
        GRANT_CREATE => Ok(Ok("/internal/queue/v1/grants".to_string())),
        GRANT_REVOKE => Ok(match grant_rows::legacy_id_of(conn, grant).await? {
            Some(id) => Ok(format!("/internal/queue/v1/grants/{id}/revoke")),
            None => Err(format!("grant {grant} has no Raptor id: its create was not delivered")),
        }),
        other => Ok(Err(format!("unknown write-back kind `{other}`"))),
    }
}

/// The Raptor id in a create's answer (`{"id": <row id>}`), as the decimal string Queue keeps.
pub fn answered_id(answer: &Value) -> Option<String> {
    match &answer["id"] {
        Value::Number(n) => n.as_i64().map(|i| i.to_string()),
        Value::String(s) if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answered_ids_are_raptor_row_ids() {
        assert_eq!(answered_id(&json!({"id": 42})).as_deref(), Some("42"));
        assert_eq!(answered_id(&json!({"id": "42"})).as_deref(), Some("42"));
        assert_eq!(answered_id(&json!({"id": "4x"})), None);
        assert_eq!(answered_id(&json!({})), None);
    }
}
