//! Granting and revoking, each audited before it is applied ([`super::prewrite`]). Who may:
//! a trusted service, or a user within their own reach ([`super::reach`]) who does not grant to
//! themselves.

use chrono::{DateTime, SubsecRound, Utc};
use queue_audit_client::Party;
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

use super::checker::Checker;
use super::model::{Grant, Role, Scope, check_id};
use super::prewrite::{Applied, Apply, Change, PLATFORM_TENANT, Prewriter};
use super::{Actor, ActorKind, Error, Origin, reach, roles, rules, writeback};
use crate::db::grants::{self as rows, NewGrantRow};

/// A grant asked for.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub principal_id: String,
    pub role: String,
    pub scope: Scope,
    pub expires_at: Option<DateTime<Utc>>,
    pub reason: String,
}

/// A reason must say why ([`rules::is_reason`]); it is stored trimmed.
pub fn check_reason(reason: &str) -> Result<(), Error> {
    if !rules::is_reason(reason) {
        return Err(Error::invalid("reason", "must say why, in 1 to 1000 characters"));
    }
    Ok(())
}

/// Who may change grants at `scope` for a role: a trusted service, or a user holding
/// `rbac.grant` and every permission of the role at that scope (nobody grants beyond their own
/// reach, in scope or in time: `granting` carries the new grant's expiry, checked against the
/// granter's own; `None` when revoking).
async fn authorize(
    checker: &Arc<Checker>,
    actor: &Actor,
    scope: &Scope,
    role: &Role,
    principal: &str,
    granting: Option<Option<DateTime<Utc>>>,
) -> Result<(), Error> {
    match &actor.kind {
        ActorKind::Service { trusted: true, .. } => Ok(()),
        ActorKind::Service { issuer, .. } => {
            Err(Error::Forbidden(format!("service `{issuer}` may not grant (needs scope rbac:grant)")))
        }
        ActorKind::User { user_id } => {
            if granting.is_some() && user_id == principal {
                return Err(Error::Forbidden("nobody can grant to themselves".into()));
            }
            let mut needed = vec!["rbac.grant".to_string()];
            needed.extend(role.permissions.iter().cloned());
            let until = reach::require(checker, user_id, scope, &needed).await?;
            match granting {
                Some(expires_at) => reach::check_expiry_cap(until, expires_at),
                None => Ok(()),
            }
        }
    }
}

fn grant_json(g: &Grant) -> serde_json::Value {
    serde_json::to_value(g).unwrap_or_default()
}

/// Grants a role; returns the grant and the revision it was applied at.
#[tracing::instrument(skip_all)]
pub async fn create(w: &Prewriter, actor: &Actor, req: NewGrant, origin: &Origin) -> Result<(Grant, i64), Error> {
    check_id("principal_id", &req.principal_id)?;
    roles::check_name("role", &req.role)?;
    req.scope.validate("scope")?;
    check_reason(&req.reason)?;
    // What follows depends on the clock and the stored roles, not on the request's shape: a
    // conflict or an unknown role (docs/error-policy.md), not a 422.
    if let Some(e) = req.expires_at
        && e <= Utc::now()
    {
        return Err(Error::Conflict("expires_at must be in the future".into()));
    }
    let role = roles::by_name(&w.db, &req.role, req.scope.tenant())
        .await?
        .ok_or_else(|| Error::NotFound(format!("no role `{}` for this scope", req.role)))?;
    if let Some(t) = &role.tenant_id
        && req.scope.tenant() != Some(t.as_str())
    {
        return Err(Error::Conflict("a tenant's own role can only be granted within that tenant".into()));
    }
    authorize(&w.checker, actor, &req.scope, &role, &req.principal_id, Some(req.expires_at)).await?;

    let now = Utc::now().trunc_subsecs(6);
    let grant = Grant {
        id: Uuid::new_v4(),
        principal_id: req.principal_id,
        role: role.name.clone(),
        role_id: role.id,
        scope: req.scope,
        expires_at: req.expires_at.map(|e| e.trunc_subsecs(6)),
        granted_by: actor.label.clone(),
        reason: req.reason.trim().to_string(),
        granted_at: now,
        audit_event_id: Uuid::new_v4(),
        revoked_at: None,
        revoked_by: None,
        revoke_reason: None,
    };
    let tenant = grant.scope.tenant().unwrap_or(PLATFORM_TENANT).to_string();
    let change = Change {
        event_id: grant.audit_event_id,
        tenant: &tenant,
        action: "rbac.grant.created",
        actor: actor.party.clone(),
        target: Party::new("grant", grant.id.to_string()),
        occurred_at: now,
        payload: json!({ "grant": grant_json(&grant), "permissions": role.permissions }),
    };
    let row = NewGrantRow {
        id: grant.id,
        principal_id: &grant.principal_id,
        role_id: grant.role_id,
        scope_type: grant.scope.kind(),
        tenant_id: grant.scope.tenant(),
        ticket_id: grant.scope.ticket(),
        expires_at: grant.expires_at,
        granted_by: &grant.granted_by,
        reason: &grant.reason,
        granted_at: grant.granted_at,
        audit_event_id: grant.audit_event_id,
        legacy_id: None,
        revoked_at: None,
        revoked_by: None,
        revoke_reason: None,
        revoke_event_id: None,
        expiry_recorded_at: None,
    };
    // A grant for a user imported from Raptor goes back to Raptor, in the grant's transaction.
    let write_back = writeback::grant_created(&mut *w.db.conn().await?, &grant, actor).await?;
    match w.write_with(change, origin, Apply::InsertGrant(&row), write_back.as_ref()).await? {
        Applied::Done(revision) => {
            w.metrics.change("granted");
            Ok((grant, revision))
        }
        Applied::Nothing => Err(Error::Internal(anyhow::anyhow!("a grant's insert reported nothing to do"))),
    }
}

/// Revokes a grant; returns it as revoked, the audit event and the revision.
#[tracing::instrument(skip_all)]
pub async fn revoke(
    w: &Prewriter,
    actor: &Actor,
    id: Uuid,
    reason: &str,
    origin: &Origin,
) -> Result<(Grant, Uuid, i64), Error> {
    check_reason(reason)?;
    let (grant, role) = {
        let mut conn = w.db.conn().await?;
        let Some(row) = rows::by_id(&mut conn, id).await? else {
            return Err(Error::NotFound(format!("no grant {id}")));
        };
        let grant = Grant::from_row(row)?;
        let role = roles::by_name_on(&mut conn, &grant.role, grant.scope.tenant()).await?;
        (grant, role)
    };
    // Authorize before saying anything about the grant's state.
    let role = role.ok_or_else(|| Error::Internal(anyhow::anyhow!("grant {id} has no role")))?;
    authorize(&w.checker, actor, &grant.scope, &role, &grant.principal_id, None).await?;
    if grant.revoked_at.is_some() {
        return Err(Error::Conflict(format!("grant {id} is already revoked")));
    }
    let now = Utc::now().trunc_subsecs(6);
    let event_id = Uuid::new_v4();
    let tenant = grant.scope.tenant().unwrap_or(PLATFORM_TENANT).to_string();
    let reason = reason.trim();
    let mut revoked = grant.clone();
    revoked.revoked_at = Some(now);
    revoked.revoked_by = Some(actor.label.clone());
    revoked.revoke_reason = Some(reason.to_string());
    let change = Change {
        event_id,
        tenant: &tenant,
        action: "rbac.grant.revoked",
        actor: actor.party.clone(),
        target: Party::new("grant", id.to_string()),
        occurred_at: now,
        payload: json!({ "grant": grant_json(&revoked) }),
    };
    let apply = Apply::Revoke { id, by: &actor.label, reason, at: now, event: event_id };
    let write_back = writeback::grant_revoked(&mut *w.db.conn().await?, id, now, actor).await?;
    match w.write_with(change, origin, apply, write_back.as_ref()).await? {
        Applied::Done(revision) => {
            w.metrics.change("revoked");
            Ok((revoked, event_id, revision))
        }
        Applied::Nothing => Err(Error::Conflict(format!("grant {id} was revoked meanwhile"))),
    }
}
