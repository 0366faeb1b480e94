//! Granting and revoking with pre-write audit (ADR-0055 in the seeds): the audit event, carrying
//! the whole grant, is written to the audit service first; only when it is committed there is
//! the change applied, in one transaction that also records which audit event it belongs to.
//! If the audit write fails or times out: 503 and nothing changes. If the change fails after
//! the audit write: a compensating event says so (retried in the background until delivered).

use chrono::{DateTime, SubsecRound, Utc};
use diesel_async::AsyncConnection;
use queue_audit_client::{AuditEvent, Party};
use queue_platform::ApiError;
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

use crate::caller::Caller;
use crate::model::{Grant, Role, Scope, check_id, check_permission};
use crate::state::RbacState;
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

/// A user may only act within their own reach: every permission in `needed` held through an
/// active grant whose scope contains `scope`.
async fn require_reach(state: &RbacState, user: &str, scope: &Scope, needed: &[String]) -> Result<(), ApiError> {
    let revision = state.checker.sync().await.map_err(db_down)?;
    let grants = state.checker.grants_of(user, revision).await.map_err(db_down)?;
    let now = Utc::now();
    for p in needed {
        let held = grants.iter().any(|g| {
            g.expires_at.is_none_or(|e| e > now) && g.scope.contains(scope) && g.permissions.iter().any(|x| x == p)
        });
        if !held {
            return Err(ApiError::Forbidden(format!(
                "you do not hold `{p}` at that scope, so you cannot grant or revoke it there"
            )));
        }
    }
    Ok(())
}

/// Who may change grants at `scope` for a role with `permissions`: a service with `rbac:grant`
/// from the configured granters, or a user holding `rbac.grant` and every permission of the role
/// at that scope (nobody grants beyond their own reach).
async fn authorize_change(
    state: &RbacState,
    caller: &Caller,
    scope: &Scope,
    role: &Role,
    principal: &str,
    granting: bool,
) -> Result<(), ApiError> {
    match caller {
        Caller::Service(_) if caller.service_may(&state.callers.granters, "rbac:grant") => Ok(()),
        Caller::Service(t) => {
            Err(ApiError::Forbidden(format!("service `{}` may not grant (needs scope rbac:grant)", t.issuer())))
        }
        Caller::User(u) => {
            if granting && u.user_id == principal {
                return Err(ApiError::Forbidden("nobody can grant to themselves".into()));
            }
            let mut needed = vec!["rbac.grant".to_string()];
            needed.extend(role.permissions.iter().cloned());
            require_reach(state, &u.user_id, scope, &needed).await
        }
    }
}

async fn prewrite(state: &RbacState, event: &AuditEvent) -> Result<(), ApiError> {
    match state.audit.append(event).await {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, action = %event.action, "pre-write audit failed; nothing changed");
            state.metrics.change("audit_unavailable");
            Err(ApiError::Unavailable("the audit service did not record the change, so nothing was changed".into()))
        }
    }
}

/// Records in the audit log that a change whose event was written did not happen. Retried with
/// backoff for up to an hour (the event id makes retries idempotent).
fn compensate(state: &RbacState, tenant: String, actor: Party, target: Party, prewritten: Uuid, origin: &Origin) {
    let audit = state.audit.clone();
    let event = AuditEvent {
        id: Uuid::new_v4(),
        tenant_id: tenant,
        actor,
        action: "rbac.change.aborted".into(),
        target,
        occurred_at: Utc::now(),
        ip: origin.ip.clone(),
        user_agent: origin.user_agent.clone(),
        trace_id: origin.trace_id.clone(),
        payload: json!({ "aborted_event_id": prewritten, "note": "the change this event announced was not applied" }),
    };
    state.metrics.change("compensated");
    tokio::spawn(async move {
        let mut wait = Duration::from_millis(200);
        let deadline = std::time::Instant::now() + Duration::from_secs(3600);
        loop {
            match audit.append(&event).await {
                Ok(_) => return,
                Err(e) if e.is_retryable() && std::time::Instant::now() < deadline => {
                    tracing::warn!(error = %e, "compensating audit event not delivered yet");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
                Err(e) => {
                    tracing::error!(error = %e, event_id = %event.id, aborted = %prewritten,
                        "compensating audit event could not be delivered");
                    return;
                }
            }
        }
    });
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
    authorize_change(state, caller, &req.scope, &role, &req.principal_id, true).await?;

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
    prewrite(state, &event).await?;

    let applied = async {
        let mut conn = state.db.conn().await.map_err(db_down)?;
        conn.transaction::<_, diesel::result::Error, _>(async |c| {
            store::insert_grant(c, &grant).await?;
            store::link_audit(c, grant.audit_event_id, &tenant, "rbac.grant.created").await?;
            store::revision(c).await
        })
        .await
        .map_err(db_down)
    }
    .await;
    match applied {
        Ok(revision) => {
            state.metrics.change("granted");
            state.checker.await_replicas(revision).await;
            Ok((grant, revision))
        }
        Err(e) => {
            compensate(state, tenant, caller.actor(), target, grant.audit_event_id, origin);
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
    authorize_change(state, caller, &grant.scope, &role, &grant.principal_id, false).await?;
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
    prewrite(state, &event).await?;

    let label = caller.label();
    let applied = async {
        let mut conn = state.db.conn().await.map_err(db_down)?;
        conn.transaction::<_, diesel::result::Error, _>(async |c| {
            if !store::revoke_grant(c, id, &label, reason.trim(), now, event_id).await? {
                return Ok(None);
            }
            store::link_audit(c, event_id, &tenant, "rbac.grant.revoked").await?;
            store::revision(c).await.map(Some)
        })
        .await
        .map_err(db_down)
    }
    .await;
    match applied {
        Ok(Some(revision)) => {
            state.metrics.change("revoked");
            state.checker.await_replicas(revision).await;
            Ok((revoked, event_id, revision))
        }
        Ok(None) => {
            compensate(state, tenant, caller.actor(), target, event_id, origin);
            Err(ApiError::Conflict(format!("grant {id} was revoked meanwhile")))
        }
        Err(e) => {
            compensate(state, tenant, caller.actor(), target, event_id, origin);
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
    prewrite(state, &event).await?;
    let created_by = caller.label();
    let applied = async {
        let mut conn = state.db.conn().await.map_err(db_down)?;
        conn.transaction::<_, diesel::result::Error, _>(async |c| {
            store::insert_role(c, &role, &created_by).await?;
            store::link_audit(c, event_id, &req.tenant_id, "rbac.role.created").await?;
            store::revision(c).await
        })
        .await
        .map_err(db_down)
    }
    .await;
    match applied {
        Ok(revision) => {
            state.checker.await_replicas(revision).await;
            Ok((role, revision))
        }
        Err(e) => {
            compensate(state, req.tenant_id.clone(), caller.actor(), target, event_id, origin);
            Err(e)
        }
    }
}
