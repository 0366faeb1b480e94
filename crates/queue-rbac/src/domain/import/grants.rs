//! Raptor's grants, kept as they were: the principal, the role, the scope, the granter, the
//! time, the reason (a missing one becomes `imported from Raptor`), the expiry and the
//! revocation. Revoked and expired grants come in too, out of force, so the history (`GET
//! /grants?at=`) shows them and checks deny them. A grant revoked at Raptor since its import is
//! revoked here (`updated`); Queue keeps a grant's terms, so any other change is refused, named.

use chrono::{DateTime, SubsecRound, Utc};
use queue_audit_client::Party;
use serde::Deserialize;
use serde_json::json;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

use super::{ImportResult, Importer, Outcome, admit, legacy_party_label};
use crate::db::grants::{self as rows, GrantRow, NewGrantRow};
use crate::db::roles as role_rows;
use crate::db::writeback as written_back;
use crate::domain::model::{Grant, Scope, check_id};
use crate::domain::prewrite::{Applied, Apply, Change, PLATFORM_TENANT};
use crate::domain::{Error, rules};

/// What a grant without a reason at Raptor says.
pub const DEFAULT_REASON: &str = "imported from Raptor";
/// The revoke reason of a grant revoked at Raptor (which keeps none).
const REVOKED_AT_RAPTOR: &str = "revoked at Raptor";

/// Where a Raptor grant applies, as Raptor's columns have it (null ids where the type has none).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LegacyScope {
    /// `global`, `tenant` or `ticket`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub ticket_id: Option<String>,
}

/// One row of Raptor's `rbac_grants`, its people named by their Queue user ids.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"legacy_id": "901", "principal_id": "0b7e6a52-3c1d-4f8e-9a2b-5c6d7e8f9a01",
    "role": "agent", "role_tenant_id": null,
    "scope": {"type": "ticket", "tenant_id": "6f1c2d4e-8a3b-4c5d-9e6f-7a8b9c0d1e2f", "ticket_id": "T-1042"},
    "granted_by": "3d2c1b0a-9e8f-4a7b-8c6d-5e4f3a2b1c0d", "granted_at": "2025-11-03T14:20:00Z",
    "expires_at": null, "reason": "covers T-1042 while Dana is away", "revoked_at": null, "revoked_by": null}))]
pub struct LegacyGrant {
    /// Raptor's `rbac_grants.id`, as a decimal string.
    pub legacy_id: String,
    /// The Queue user id of Raptor's `customer_id`.
    pub principal_id: String,
    /// The role's name.
    pub role: String,
    /// The role's tenant: null for a built-in role.
    #[serde(default)]
    pub role_tenant_id: Option<String>,
    pub scope: LegacyScope,
    /// The granter's Queue user id; null: the system (a seed or a migration).
    #[serde(default)]
    pub granted_by: Option<String>,
    pub granted_at: DateTime<Utc>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub revoked_at: Option<DateTime<Utc>>,
    /// The revoker's Queue user id; null with `revoked_at`: the system.
    #[serde(default)]
    pub revoked_by: Option<String>,
}

/// A record checked: its scope, reason and times as Queue stores them.
struct Checked<'a> {
    rec: &'a LegacyGrant,
    scope: Scope,
    reason: String,
    granted_by: String,
    granted_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

fn check(rec: &LegacyGrant) -> Result<Checked<'_>, String> {
    let bad = |e: Error| e.to_string();
    check_id("principal_id", &rec.principal_id).map_err(bad)?;
    if !rules::is_role_name(&rec.role) {
        return Err(format!("role `{}` is not a Queue role name", rec.role));
    }
    for (field, id) in
        [("role_tenant_id", &rec.role_tenant_id), ("granted_by", &rec.granted_by), ("revoked_by", &rec.revoked_by)]
    {
        if let Some(id) = id {
            check_id(field, id).map_err(bad)?;
        }
    }
    let s = &rec.scope;
    let scope = Scope::from_columns(&s.kind, s.tenant_id.clone(), s.ticket_id.clone())
        .ok_or_else(|| format!("scope: type `{}` with these ids describes no scope", s.kind))?;
    scope.validate("scope").map_err(bad)?;
    if rec.revoked_by.is_some() && rec.revoked_at.is_none() {
        return Err("revoked_by without revoked_at".into());
    }
    let reason = match rec.reason.as_deref().map(str::trim) {
        None | Some("") => DEFAULT_REASON.to_string(),
        Some(r) if rules::is_reason(r) => r.to_string(),
        Some(_) => return Err("reason: at most 1000 characters, no NUL".into()),
    };
    Ok(Checked {
        rec,
        scope,
        reason,
        granted_by: legacy_party_label(rec.granted_by.as_deref()),
        granted_at: rec.granted_at.trunc_subsecs(6),
        expires_at: rec.expires_at.map(|e| e.trunc_subsecs(6)),
        revoked_at: rec.revoked_at.map(|e| e.trunc_subsecs(6)),
    })
}

/// Imports a batch of grants, one answer per record. The roles and the grants imported before
/// are read once for the batch; the new grants are pre-written together
/// ([`Prewriter::write_grants`](crate::domain::prewrite::Prewriter::write_grants)): one audit
/// call per 100 events, then one transaction. A grant revoked at Raptor since its import goes
/// on its own, as any revocation.
#[tracing::instrument(skip_all, fields(records = records.len(), dry_run = imp.dry_run))]
pub async fn import(imp: &Importer<'_>, records: &[LegacyGrant]) -> Result<Vec<ImportResult>, Error> {
    let mut seen = HashSet::new();
    let checked: Vec<Result<Checked<'_>, String>> =
        records.iter().map(|rec| admit(&mut seen, &rec.legacy_id).and_then(|()| check(rec))).collect();
    let (roles, mut existing, from_queue) = look_up(imp, &checked).await?;
    let mut results: Vec<Option<ImportResult>> = Vec::with_capacity(records.len());
    let mut new: Vec<(usize, NewGrant)> = Vec::new();
    for (i, c) in checked.into_iter().enumerate() {
        let decided = match c {
            Ok(c) => one(imp, c, &roles, &mut existing, &from_queue).await?,
            Err(reason) => Decided::Done(ImportResult::refused(&records[i].legacy_id, reason)),
        };
        match decided {
            Decided::Done(result) => results.push(Some(result)),
            Decided::Create(grant) => {
                results.push(None);
                new.push((i, grant));
            }
        }
    }
    create(imp, new, &mut results).await?;
    Ok(results.into_iter().flatten().collect())
}

/// A role as a grant names it: (name, its tenant or none for a built-in).
type RoleKey = (String, Option<String>);
/// The role found for a key: (id, name, tenant), or none.
type Roles = HashMap<RoleKey, Option<(Uuid, String, Option<String>)>>;

/// The roles the batch names and the grants it imported before (by legacy id), read once.
async fn look_up(
    imp: &Importer<'_>,
    checked: &[Result<Checked<'_>, String>],
) -> Result<(Roles, HashMap<String, GrantRow>, HashSet<Uuid>), Error> {
    let mut conn = imp.writes.db.conn().await?;
    let mut roles = Roles::new();
    for c in checked.iter().flatten() {
        let key = (c.rec.role.clone(), c.rec.role_tenant_id.clone());
        if let Entry::Vacant(slot) = roles.entry(key) {
            let role = role_rows::by_name_exact(&mut conn, &c.rec.role, c.rec.role_tenant_id.as_deref()).await?;
            slot.insert(role.map(|r| (r.id, r.name, r.tenant_id)));
        }
    }
    let ids: Vec<&str> = checked.iter().flatten().map(|c| c.rec.legacy_id.as_str()).collect();
    let mut existing: HashMap<String, GrantRow> = rows::by_legacy_ids(&mut conn, &ids).await?.into_iter().collect();
    // A grant made at Queue and written back is Raptor's row before rbac linked it.
    let unknown: Vec<&str> = ids.iter().copied().filter(|id| !existing.contains_key(*id)).collect();
    if !unknown.is_empty() {
        for (lid, grant) in written_back::created_as(&mut conn, &unknown).await? {
            if let Some(row) = rows::by_id(&mut conn, grant).await? {
                existing.insert(lid, row);
            }
        }
    }
    let grants: Vec<Uuid> = existing.values().map(|g| g.id).collect();
    let from_queue = written_back::with_create(&mut conn, &grants).await?.into_iter().collect();
    Ok((roles, existing, from_queue))
}

/// What one record comes to: its answer now, or a grant to create with the batch's others.
enum Decided {
    Done(ImportResult),
    Create(NewGrant),
}

/// The role the record names, exactly where it names it (built in, or its tenant's own).
async fn one(
    imp: &Importer<'_>,
    c: Checked<'_>,
    roles: &Roles,
    existing: &mut HashMap<String, GrantRow>,
    made_at_queue: &HashSet<Uuid>,
) -> Result<Decided, Error> {
    let lid = c.rec.legacy_id.as_str();
    let key = (c.rec.role.clone(), c.rec.role_tenant_id.clone());
    let Some(Some((role_id, role_name, role_tenant))) = roles.get(&key) else {
        let place = c.rec.role_tenant_id.as_deref().map_or("built in".to_string(), |t| format!("of tenant {t}"));
        return Ok(Decided::Done(ImportResult::refused(
            lid,
            format!("Queue has no role `{}` {place}: import the roles first", c.rec.role),
        )));
    };
    if let Some(t) = role_tenant
        && c.scope.tenant() != Some(t.as_str())
    {
        return Ok(Decided::Done(ImportResult::refused(
            lid,
            "a tenant's own role can only be granted within that tenant",
        )));
    }
    let found = existing.remove(lid);
    let from_queue = found.as_ref().is_some_and(|g| made_at_queue.contains(&g.id));
    match found.map(Grant::from_row).transpose()? {
        None if imp.dry_run => Ok(Decided::Done(ImportResult::new(lid, Outcome::Created, None, None))),
        None => Ok(Decided::Create(NewGrant::new(&c, *role_id, role_name))),
        Some(g) => again(imp, &c, g, *role_id, from_queue).await.map(Decided::Done),
    }
}

/// A grant not imported before, as it was at Raptor (in force or not), with its audit event.
struct NewGrant {
    grant: Grant,
    event_id: Uuid,
    legacy_id: String,
    /// The audit-log tenant of its event.
    tenant: String,
    /// Set when it had expired at Raptor: its import event tells it, the expiry job does not.
    expiry_recorded_at: Option<DateTime<Utc>>,
    payload: serde_json::Value,
    occurred_at: DateTime<Utc>,
}

impl NewGrant {
    fn new(c: &Checked<'_>, role_id: Uuid, role_name: &str) -> Self {
        let now = Utc::now().trunc_subsecs(6);
        let event_id = Uuid::new_v4();
        let grant = Grant {
            id: Uuid::new_v4(),
            principal_id: c.rec.principal_id.clone(),
            role: role_name.to_string(),
            role_id,
            scope: c.scope.clone(),
            expires_at: c.expires_at,
            granted_by: c.granted_by.clone(),
            reason: c.reason.clone(),
            granted_at: c.granted_at,
            audit_event_id: event_id,
            revoked_at: c.revoked_at,
            revoked_by: c.revoked_at.map(|_| legacy_party_label(c.rec.revoked_by.as_deref())),
            revoke_reason: c.revoked_at.map(|_| REVOKED_AT_RAPTOR.to_string()),
        };
        let expired = grant.revoked_at.is_none() && grant.expires_at.is_some_and(|e| e <= now);
        let payload = json!({ "legacy_id": c.rec.legacy_id, "grant": grant, "in_force": in_force(&grant, now) });
        Self {
            occurred_at: now,
            tenant: grant.scope.tenant().unwrap_or(PLATFORM_TENANT).to_string(),
            grant,
            event_id,
            legacy_id: c.rec.legacy_id.clone(),
            expiry_recorded_at: expired.then_some(now),
            payload,
        }
    }

    fn change(&self, imp: &Importer<'_>) -> Change<'_> {
        Change {
            event_id: self.event_id,
            tenant: &self.tenant,
            action: "rbac.legacy.grant.imported",
            actor: imp.party.clone(),
            target: Party::new("grant", self.grant.id.to_string()),
            occurred_at: self.occurred_at,
            payload: self.payload.clone(),
        }
    }

    fn row(&self) -> NewGrantRow<'_> {
        let g = &self.grant;
        NewGrantRow {
            id: g.id,
            principal_id: &g.principal_id,
            role_id: g.role_id,
            scope_type: g.scope.kind(),
            tenant_id: g.scope.tenant(),
            ticket_id: g.scope.ticket(),
            expires_at: g.expires_at,
            granted_by: &g.granted_by,
            reason: &g.reason,
            granted_at: g.granted_at,
            audit_event_id: self.event_id,
            legacy_id: Some(&self.legacy_id),
            revoked_at: g.revoked_at,
            revoked_by: g.revoked_by.as_deref(),
            revoke_reason: g.revoke_reason.as_deref(),
            revoke_event_id: g.revoked_at.map(|_| self.event_id),
            expiry_recorded_at: self.expiry_recorded_at,
        }
    }
}

/// The batch's new grants, pre-written and applied together; their answers into `results`.
async fn create(
    imp: &Importer<'_>,
    new: Vec<(usize, NewGrant)>,
    results: &mut [Option<ImportResult>],
) -> Result<(), Error> {
    if new.is_empty() {
        return Ok(());
    }
    let changes: Vec<Change<'_>> = new.iter().map(|(_, g)| g.change(imp)).collect();
    let rows: Vec<NewGrantRow<'_>> = new.iter().map(|(_, g)| g.row()).collect();
    imp.writes.write_grants(&changes, &imp.origin, &rows).await?;
    for (i, g) in &new {
        imp.writes.metrics.change("imported");
        results[*i] = Some(ImportResult::new(&g.legacy_id, Outcome::Created, Some(g.grant.id.to_string()), None));
    }
    Ok(())
}

fn in_force(g: &Grant, now: DateTime<Utc>) -> bool {
    g.granted_at <= now && g.revoked_at.is_none_or(|r| r > now) && g.expires_at.is_none_or(|e| e > now)
}

/// The terms Raptor changed since the import (Queue never rewrites them). A grant made at Queue
/// and written back by someone Raptor does not know (a service, a user not from Raptor) has no
/// granter at Raptor (`null`): that is the write-back, not a change.
fn changed_terms(c: &Checked<'_>, g: &Grant, role_id: Uuid, from_queue: bool) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let granter_unknown_at_raptor = from_queue && c.rec.granted_by.is_none();
    let pairs = [
        ("principal_id", g.principal_id == c.rec.principal_id),
        ("role", g.role_id == role_id),
        ("scope", g.scope == c.scope),
        ("granted_by", granter_unknown_at_raptor || g.granted_by == c.granted_by),
        ("granted_at", g.granted_at == c.granted_at),
        ("expires_at", g.expires_at == c.expires_at),
        ("reason", g.reason == c.reason),
    ];
    for (field, same) in pairs {
        if !same {
            changed.push(field);
        }
    }
    changed
}

/// A grant imported before: the same (`unchanged`), revoked at Raptor since (`updated`), revoked
/// at Queue since (`skipped`: not restored), or changed otherwise (`refused`).
async fn again(
    imp: &Importer<'_>,
    c: &Checked<'_>,
    g: Grant,
    role_id: Uuid,
    from_queue: bool,
) -> Result<ImportResult, Error> {
    let lid = c.rec.legacy_id.as_str();
    let id = Some(g.id.to_string());
    let changed = changed_terms(c, &g, role_id, from_queue);
    if !changed.is_empty() {
        let reason =
            format!("changed at Raptor since the import: {} (Queue keeps a grant's terms)", changed.join(", "));
        return Ok(ImportResult::new(lid, Outcome::Refused, id, Some(reason)));
    }
    match (c.revoked_at, g.revoked_at) {
        (None, None) | (Some(_), Some(_)) => Ok(ImportResult::new(lid, Outcome::Unchanged, id, None)),
        (None, Some(at)) => {
            let reason = format!(
                "revoked at Queue at {at} by {}; in force at Raptor: not restored",
                g.revoked_by.as_deref().unwrap_or("?")
            );
            Ok(ImportResult::new(lid, Outcome::Skipped, id, Some(reason)))
        }
        (Some(at), None) => revoke(imp, c, g, at).await,
    }
}

/// Revokes an imported grant Raptor revoked since, at Raptor's time, by Raptor's revoker.
async fn revoke(imp: &Importer<'_>, c: &Checked<'_>, g: Grant, at: DateTime<Utc>) -> Result<ImportResult, Error> {
    let lid = c.rec.legacy_id.as_str();
    let by = legacy_party_label(c.rec.revoked_by.as_deref());
    let reason = format!("revoked at Raptor at {at} by {by}");
    if imp.dry_run {
        return Ok(ImportResult::new(lid, Outcome::Updated, Some(g.id.to_string()), Some(reason)));
    }
    let event_id = Uuid::new_v4();
    let mut revoked = g.clone();
    revoked.revoked_at = Some(at);
    revoked.revoked_by = Some(by.clone());
    revoked.revoke_reason = Some(REVOKED_AT_RAPTOR.to_string());
    let tenant = g.scope.tenant().unwrap_or(PLATFORM_TENANT).to_string();
    let change = Change {
        event_id,
        tenant: &tenant,
        action: "rbac.legacy.grant.updated",
        actor: imp.party.clone(),
        target: Party::new("grant", g.id.to_string()),
        occurred_at: Utc::now(),
        payload: json!({ "legacy_id": lid, "grant": revoked, "change": "revoked" }),
    };
    let apply = Apply::Revoke { id: g.id, by: &by, reason: REVOKED_AT_RAPTOR, at, event: event_id };
    match imp.writes.write(change, &imp.origin, apply).await? {
        Applied::Done(_) => {
            imp.writes.metrics.change("imported");
            Ok(ImportResult::new(lid, Outcome::Updated, Some(g.id.to_string()), Some(reason)))
        }
        // Revoked at Queue meanwhile: the compensation says the event's change did not happen.
        Applied::Nothing => Ok(ImportResult::new(lid, Outcome::Unchanged, Some(g.id.to_string()), None)),
    }
}
