//! Granting and revoking with pre-write audit (ADR-0055 in the seeds): the audit event, carrying
//! the whole grant, is written to the audit service first; only when it is committed there is
//! the change applied, in one transaction that also records which audit event it belongs to.
//! If the audit write fails or times out: 503 and nothing changes.
//!
//! Nothing is lost on a crash (issue 16, item 9): *before* the audit write, the compensating
//! event (`rbac.change.aborted`, naming the pre-written event) is committed to the outbox
//! `rbac_audit_outbox`, held back for `audit.compensate_after_secs`. The change's transaction
//! deletes it (claims it) and commits with it. If the change fails, the compensation is made due
//! at once; if the process dies in between, it stays in the outbox and the relay delivers it
//! when its hold ends, from whichever replica runs. A change whose compensation was already
//! delivered (it took longer than the hold) finds nothing to claim and is not applied, so the log
//! and the grants never disagree. docs/rbac-service.md, "Nothing lost on a crash".

use chrono::{DateTime, SubsecRound, Utc};
use diesel_async::AsyncConnection;
use queue_audit_client::{AuditClientError, AuditEvent, Party};
use queue_platform::ApiError;
use serde_json::json;
use uuid::Uuid;

use crate::caller::Caller;
use crate::model::{Grant, Role, Scope, check_id, check_permission};
use crate::state::{Failpoint, RbacState};
use crate::store;

/// The audit-log tenant of platform-wide (global) changes.
pub const PLATFORM_TENANT: &str = "_platform";

/// Where a request came from, for the audit event.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub trace_id: Option<String>,
}

#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    pub principal_id: String,
    pub role: String,
    pub scope: Scope,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    pub reason: String,
}

fn check_reason(reason: &str) -> Result<(), ApiError> {
    let r = reason.trim();
    if r.is_empty() || r.len() > 1000 {
        return Err(ApiError::invalid("reason", "must say why, in 1 to 1000 characters"));
    }
    Ok(())
}

fn db_down(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "database error");
    ApiError::Unavailable("database unavailable".into())
}

/// How long a user's reach lasts: `None` while it does not end, `Some(E)` when it ends at E.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReachUntil {
    Forever,
    Until(DateTime<Utc>),
}

/// A user may only act within their own reach: every permission in `needed` held through an
/// active grant whose scope contains `scope`. Returns when that reach ends: for each permission
/// the latest expiry among the grants that give it there (none: forever), and the earliest of
/// those over all permissions (the user stops holding the whole set then).
async fn require_reach(
    state: &RbacState,
    user: &str,
    scope: &Scope,
    needed: &[String],
) -> Result<ReachUntil, ApiError> {
    let revision = state.checker.sync().await.map_err(db_down)?;
    let grants = state.checker.grants_of(user, revision).await.map_err(db_down)?;
    let now = Utc::now();
    let mut until = ReachUntil::Forever;
    for p in needed {
        let covering = grants.iter().filter(|g| {
            g.expires_at.is_none_or(|e| e > now) && g.scope.contains(scope) && g.permissions.iter().any(|x| x == p)
        });
        let mut held: Option<ReachUntil> = None;
        for g in covering {
            let this = g.expires_at.map_or(ReachUntil::Forever, ReachUntil::Until);
            held = Some(match (held, this) {
                (Some(ReachUntil::Forever), _) | (_, ReachUntil::Forever) => ReachUntil::Forever,
                (Some(ReachUntil::Until(a)), ReachUntil::Until(b)) => ReachUntil::Until(a.max(b)),
                (None, t) => t,
            });
        }
        let Some(held) = held else {
            return Err(ApiError::Forbidden(format!(
                "you do not hold `{p}` at that scope, so you cannot grant or revoke it there"
            )));
        };
        until = match (until, held) {
            (ReachUntil::Forever, t) | (t, ReachUntil::Forever) => t,
            (ReachUntil::Until(a), ReachUntil::Until(b)) => ReachUntil::Until(a.min(b)),
        };
    }
    Ok(until)
}

/// A granter cannot give more time than they have: a grant made by a user whose own reach ends
/// at E must itself expire by E (and so cannot be without expiry).
fn check_expiry_cap(until: ReachUntil, requested: Option<DateTime<Utc>>) -> Result<(), ApiError> {
    let ReachUntil::Until(cap) = until else { return Ok(()) };
    let cap_text = cap.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    match requested {
        None => Err(ApiError::Forbidden(format!(
            "your own grant expires at {cap_text}: give an `expires_at` no later than that (a grant without expiry \
             would outlast yours)"
        ))),
        Some(e) if e > cap => Err(ApiError::Forbidden(format!(
            "`expires_at` is later than your own grant's expiry ({cap_text}): nobody grants for longer than they hold"
        ))),
        Some(_) => Ok(()),
    }
}

/// Who may change grants at `scope` for a role with `permissions`: a service with `rbac:grant`
/// from the configured granters, or a user holding `rbac.grant` and every permission of the role
/// at that scope (nobody grants beyond their own reach, in scope or in time: `expires_at` is
/// the new grant's expiry, checked against the granter's own when granting).
async fn authorize_change(
    state: &RbacState,
    caller: &Caller,
    scope: &Scope,
    role: &Role,
    principal: &str,
    granting: Option<Option<DateTime<Utc>>>,
) -> Result<(), ApiError> {
    match caller {
        Caller::Service(_) if caller.service_may(&state.callers.granters, "rbac:grant") => Ok(()),
        Caller::Service(t) => {
            Err(ApiError::Forbidden(format!("service `{}` may not grant (needs scope rbac:grant)", t.issuer())))
        }
        Caller::User(u) => {
            if granting.is_some() && u.user_id == principal {
                return Err(ApiError::Forbidden("nobody can grant to themselves".into()));
            }
            let mut needed = vec!["rbac.grant".to_string()];
            needed.extend(role.permissions.iter().cloned());
            let until = require_reach(state, &u.user_id, scope, &needed).await?;
            match granting {
                Some(expires_at) => check_expiry_cap(until, expires_at),
                None => Ok(()),
            }
        }
    }
}

/// A compensating event held in the outbox for one pre-written change.
struct Held(Uuid);

/// Commits the compensation of the event `prewritten` to the outbox, held back, before that
/// event is written: from here on, whatever happens to this process, the audit log ends up
/// saying either that the change happened or that it did not.
async fn hold(
    state: &RbacState,
    tenant: &str,
    actor: Party,
    target: Party,
    prewritten: Uuid,
    origin: &Origin,
) -> Result<Held, ApiError> {
    let event = AuditEvent {
        id: Uuid::new_v4(),
        tenant_id: tenant.to_string(),
        actor,
        action: "rbac.change.aborted".into(),
        target,
        occurred_at: Utc::now(),
        ip: origin.ip.clone(),
        user_agent: origin.user_agent.clone(),
        trace_id: origin.trace_id.clone(),
        payload: json!({ "aborted_event_id": prewritten, "note": "the change this event announced was not applied" }),
    };
    let body = serde_json::to_value(&event).map_err(|e| ApiError::internal(anyhow::anyhow!(e)))?;
    let mut conn = state.db.conn().await.map_err(db_down)?;
    store::hold_compensation(&mut conn, event.id, &body, state.compensate_after_secs).await.map_err(db_down)?;
    Ok(Held(event.id))
}

/// The change did not happen: the compensation is due now. If even this fails (the database is
/// gone), it is delivered when its hold ends.
async fn release(state: &RbacState, held: &Held) {
    state.metrics.change("compensated");
    let released = match state.db.conn().await {
        Ok(mut conn) => store::release_compensation(&mut conn, held.0).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = released {
        tracing::warn!(error = %e, event_id = %held.0, "compensation stays held; the relay delivers it when the hold ends");
    }
    state.outbox.notify_one();
}

/// Writes the change's audit event and waits for its commit. On failure nothing is changed:
/// a refused event was certainly not written, so its compensation is dropped; after a timeout or
/// an outage it may have been, so the compensation is delivered (it says, truthfully, that the
/// change announced by that event did not happen).
async fn prewrite(state: &RbacState, event: &AuditEvent, held: &Held) -> Result<(), ApiError> {
    match state.audit.append(event).await {
        Ok(_) => {
            if state.failpoint == Some(Failpoint::AbortAfterPrewrite) {
                tracing::error!(event_id = %event.id, "RBAC_TEST_FAILPOINT: aborting after the audit write");
                std::process::abort();
            }
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, action = %event.action, "pre-write audit failed; nothing changed");
            state.metrics.change("audit_unavailable");
            if matches!(e, AuditClientError::Rejected { .. }) {
                if let Ok(mut conn) = state.db.conn().await
                    && let Err(e) = store::drop_compensation(&mut conn, held.0).await
                {
                    tracing::warn!(error = %e, "cannot drop the compensation of a refused event");
                }
            } else {
                release(state, held).await;
            }
            Err(ApiError::Unavailable("the audit service did not record the change, so nothing was changed".into()))
        }
    }
}

/// In the change's transaction: take the compensation out, or roll back if it is gone (then the
/// audit log already says the change was aborted).
async fn claim(c: &mut store::Conn, held: &Held) -> Result<(), diesel::result::Error> {
    if store::claim_compensation(c, held.0).await? { Ok(()) } else { Err(diesel::result::Error::RollbackTransaction) }
}

fn apply_failed(e: diesel::result::Error) -> ApiError {
    match e {
        diesel::result::Error::RollbackTransaction => ApiError::Unavailable(
            "the change was not applied: it took too long and the audit log records it as aborted".into(),
        ),
        e => db_down(e),
    }
}

fn grant_json(g: &Grant) -> serde_json::Value {
    serde_json::to_value(g).unwrap_or_default()
}

pub async fn create(
    state: &RbacState,
    caller: &Caller,
    req: GrantRequest,
    origin: &Origin,
) -> Result<(Grant, i64), ApiError> {
    check_id("principal_id", &req.principal_id)?;
    req.scope.validate("scope")?;
    check_reason(&req.reason)?;
    if let Some(e) = req.expires_at
        && e <= Utc::now()
    {
        return Err(ApiError::invalid("expires_at", "must be in the future"));
    }
    let role = {
        let mut conn = state.db.conn().await.map_err(db_down)?;
        store::role_by_name(&mut conn, &req.role, req.scope.tenant()).await.map_err(db_down)?
    }
    .ok_or_else(|| ApiError::invalid("role", format!("no role `{}` for this scope", req.role)))?;
    if let Some(t) = &role.tenant_id
        && req.scope.tenant() != Some(t.as_str())
    {
        return Err(ApiError::invalid("scope", "a tenant's own role can only be granted within that tenant"));
    }
    authorize_change(state, caller, &req.scope, &role, &req.principal_id, Some(req.expires_at)).await?;

    let now = Utc::now().trunc_subsecs(6);
    let grant = Grant {
        id: Uuid::new_v4(),
        principal_id: req.principal_id,
        role: role.name.clone(),
        role_id: role.id,
        scope: req.scope,
        expires_at: req.expires_at.map(|e| e.trunc_subsecs(6)),
        granted_by: caller.label(),
        reason: req.reason.trim().to_string(),
        granted_at: now,
        audit_event_id: Uuid::new_v4(),
        revoked_at: None,
        revoked_by: None,
        revoke_reason: None,
    };
    let tenant = grant.scope.tenant().unwrap_or(PLATFORM_TENANT).to_string();
    let target = Party::new("grant", grant.id.to_string());
    let event = AuditEvent {
        id: grant.audit_event_id,
        tenant_id: tenant.clone(),
        actor: caller.actor(),
        action: "rbac.grant.created".into(),
        target: target.clone(),
        occurred_at: now,
        ip: origin.ip.clone(),
        user_agent: origin.user_agent.clone(),
        trace_id: origin.trace_id.clone(),
        payload: json!({ "grant": grant_json(&grant), "permissions": role.permissions }),
    };
    let held = hold(state, &tenant, caller.actor(), target, grant.audit_event_id, origin).await?;
    prewrite(state, &event, &held).await?;

    let applied = async {
        let mut conn = state.db.conn().await.map_err(db_down)?;
        conn.transaction::<_, diesel::result::Error, _>(async |c| {
            claim(c, &held).await?;
            store::insert_grant(c, &grant).await?;
            store::link_audit(c, grant.audit_event_id, &tenant, "rbac.grant.created").await?;
            store::revision(c).await
        })
        .await
        .map_err(apply_failed)
    }
    .await;
    match applied {
        Ok(revision) => {
            state.metrics.change("granted");
            state.checker.await_replicas(revision).await;
            Ok((grant, revision))
        }
        Err(e) => {
            release(state, &held).await;
            Err(e)
        }
    }
}

pub async fn revoke(
    state: &RbacState,
    caller: &Caller,
    id: Uuid,
    reason: &str,
    origin: &Origin,
) -> Result<(Grant, Uuid, i64), ApiError> {
    check_reason(reason)?;
    let (grant, role) = {
        let mut conn = state.db.conn().await.map_err(db_down)?;
        let grant = store::grant(&mut conn, id).await.map_err(db_down)?;
        let Some(grant) = grant else { return Err(ApiError::NotFound(format!("no grant {id}"))) };
        let role = store::role_by_name(&mut conn, &grant.role, grant.scope.tenant()).await.map_err(db_down)?;
        (grant, role)
    };
    // Authorize before saying anything about the grant's state.
    let role = role.ok_or_else(|| ApiError::internal(anyhow::anyhow!("grant {id} has no role")))?;
    authorize_change(state, caller, &grant.scope, &role, &grant.principal_id, None).await?;
    if grant.revoked_at.is_some() {
        return Err(ApiError::Conflict(format!("grant {id} is already revoked")));
    }
    let now = Utc::now().trunc_subsecs(6);
    let event_id = Uuid::new_v4();
    let tenant = grant.scope.tenant().unwrap_or(PLATFORM_TENANT).to_string();
    let target = Party::new("grant", id.to_string());
    let mut revoked = grant.clone();
    revoked.revoked_at = Some(now);
    revoked.revoked_by = Some(caller.label());
    revoked.revoke_reason = Some(reason.trim().to_string());
    let event = AuditEvent {
        id: event_id,
        tenant_id: tenant.clone(),
        actor: caller.actor(),
        action: "rbac.grant.revoked".into(),
        target: target.clone(),
        occurred_at: now,
        ip: origin.ip.clone(),
        user_agent: origin.user_agent.clone(),
        trace_id: origin.trace_id.clone(),
        payload: json!({ "grant": grant_json(&revoked) }),
    };
    let held = hold(state, &tenant, caller.actor(), target, event_id, origin).await?;
    prewrite(state, &event, &held).await?;

    let label = caller.label();
    let applied = async {
        let mut conn = state.db.conn().await.map_err(db_down)?;
        conn.transaction::<_, diesel::result::Error, _>(async |c| {
            if !store::revoke_grant(c, id, &label, reason.trim(), now, event_id).await? {
                return Ok(None);
            }
            claim(c, &held).await?;
            store::link_audit(c, event_id, &tenant, "rbac.grant.revoked").await?;
            store::revision(c).await.map(Some)
        })
        .await
        .map_err(apply_failed)
    }
    .await;
    match applied {
        Ok(Some(revision)) => {
            state.metrics.change("revoked");
            state.checker.await_replicas(revision).await;
            Ok((revoked, event_id, revision))
        }
        Ok(None) => {
            release(state, &held).await;
            Err(ApiError::Conflict(format!("grant {id} was revoked meanwhile")))
        }
        Err(e) => {
            release(state, &held).await;
            Err(e)
        }
    }
}

#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    pub name: String,
    pub tenant_id: String,
    pub permissions: Vec<String>,
    #[serde(default)]
    pub description: String,
}

/// Defines a tenant's own role, audited first like a grant. A user needs `rbac.roles` and every
/// permission of the new role in that tenant.
pub async fn create_role(
    state: &RbacState,
    caller: &Caller,
    req: RoleRequest,
    origin: &Origin,
) -> Result<(Role, i64), ApiError> {
    check_id("tenant_id", &req.tenant_id)?;
    let name_ok = (1..=64).contains(&req.name.len())
        && req.name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && req.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if !name_ok {
        return Err(ApiError::invalid("name", "1-64 characters: lowercase letters, digits, _ . - (a letter first)"));
    }
    if req.permissions.is_empty() || req.permissions.len() > 64 {
        return Err(ApiError::invalid("permissions", "must list 1 to 64 permissions"));
    }
    let mut permissions = req.permissions.clone();
    for (i, p) in permissions.iter().enumerate() {
        check_permission(&format!("permissions[{i}]"), p)?;
    }
    permissions.sort();
    permissions.dedup();
    if req.description.len() > 1000 {
        return Err(ApiError::invalid("description", "at most 1000 characters"));
    }
    {
        let mut conn = state.db.conn().await.map_err(db_down)?;
        let missing = store::permissions_exist(&mut conn, &permissions).await.map_err(db_down)?;
        if let Some(m) = missing.first() {
            return Err(ApiError::invalid("permissions", format!("unknown permission `{m}`")));
        }
        if store::role_by_name(&mut conn, &req.name, Some(&req.tenant_id)).await.map_err(db_down)?.is_some() {
            return Err(ApiError::Conflict(format!("a role `{}` exists for this tenant", req.name)));
        }
    }
    let scope = Scope::Tenant { tenant_id: req.tenant_id.clone() };
    match caller {
        Caller::Service(_) if caller.service_may(&state.callers.granters, "rbac:grant") => {}
        Caller::Service(t) => {
            return Err(ApiError::Forbidden(format!("service `{}` may not define roles", t.issuer())));
        }
        Caller::User(u) => {
            let mut needed = vec!["rbac.roles".to_string()];
            needed.extend(permissions.iter().cloned());
            require_reach(state, &u.user_id, &scope, &needed).await?;
        }
    }
    let role = Role {
        id: Uuid::new_v4(),
        name: req.name,
        tenant_id: Some(req.tenant_id.clone()),
        builtin: false,
        description: req.description,
        permissions,
    };
    let event_id = Uuid::new_v4();
    let target = Party::new("role", role.id.to_string());
    let event = AuditEvent {
        id: event_id,
        tenant_id: req.tenant_id.clone(),
        actor: caller.actor(),
        action: "rbac.role.created".into(),
        target: target.clone(),
        occurred_at: Utc::now(),
        ip: origin.ip.clone(),
        user_agent: origin.user_agent.clone(),
        trace_id: origin.trace_id.clone(),
        payload: json!({ "role": role }),
    };
    let held = hold(state, &req.tenant_id, caller.actor(), target, event_id, origin).await?;
    prewrite(state, &event, &held).await?;
    let created_by = caller.label();
    let applied = async {
        let mut conn = state.db.conn().await.map_err(db_down)?;
        conn.transaction::<_, diesel::result::Error, _>(async |c| {
            claim(c, &held).await?;
            store::insert_role(c, &role, &created_by).await?;
            store::link_audit(c, event_id, &req.tenant_id, "rbac.role.created").await?;
            store::revision(c).await
        })
        .await
        .map_err(apply_failed)
    }
    .await;
    match applied {
        Ok(revision) => {
            state.checker.await_replicas(revision).await;
            Ok((role, revision))
        }
        Err(e) => {
            release(state, &held).await;
            Err(e)
        }
    }
}
