//! The RBAC model: scopes, grants, roles, and what covers what; ids and permission names are
//! checked here, and rows of the database become these types here.

use chrono::{DateTime, Utc};
use queue_rbac_client::rules;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Error;
use crate::db::grants::GrantRow;
use crate::db::roles::RoleRow;

/// Where a grant applies. Its schema is written out ([`super::rules::scope_schema`]): the
/// derived one would not say that ids have a shape or that other fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Scope {
    /// Everything, in every tenant. A struct variant, not a unit one: serde refuses unknown
    /// fields only in struct variants, and `{"type": "global", "tenant_id": "a"}` must not pass
    /// for a global grant.
    Global {},
    /// A tenant and all of its tickets.
    Tenant { tenant_id: String },
    /// One ticket of a tenant.
    Ticket { tenant_id: String, ticket_id: String },
}

impl utoipa::PartialSchema for Scope {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        super::rules::scope_schema()
    }
}

impl utoipa::ToSchema for Scope {
    fn name() -> std::borrow::Cow<'static, str> {
        "Scope".into()
    }
}

impl Scope {
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Global {} => "global",
            Scope::Tenant { .. } => "tenant",
            Scope::Ticket { .. } => "ticket",
        }
    }

    pub fn tenant(&self) -> Option<&str> {
        match self {
            Scope::Global {} => None,
            Scope::Tenant { tenant_id } | Scope::Ticket { tenant_id, .. } => Some(tenant_id),
        }
    }

    pub fn ticket(&self) -> Option<&str> {
        match self {
            Scope::Ticket { ticket_id, .. } => Some(ticket_id),
            _ => None,
        }
    }

    /// From the stored columns; `None` if they do not describe a scope.
    pub fn from_columns(kind: &str, tenant: Option<String>, ticket: Option<String>) -> Option<Self> {
        match (kind, tenant, ticket) {
            ("global", None, None) => Some(Scope::Global {}),
            ("tenant", Some(tenant_id), None) => Some(Scope::Tenant { tenant_id }),
            ("ticket", Some(tenant_id), Some(ticket_id)) => Some(Scope::Ticket { tenant_id, ticket_id }),
            _ => None,
        }
    }

    /// Does a grant at this scope cover `resource`? Global covers everything, a tenant grant its
    /// tenant and the tenant's tickets, a ticket grant that ticket.
    pub fn covers(&self, resource: &Resource) -> bool {
        match self {
            Scope::Global {} => true,
            Scope::Tenant { tenant_id } => *tenant_id == resource.tenant_id,
            Scope::Ticket { tenant_id, ticket_id } => {
                *tenant_id == resource.tenant_id && resource.ticket_id.as_deref() == Some(ticket_id.as_str())
            }
        }
    }

    /// Does this scope cover all of `other` (so a grant here reaches everything a grant at
    /// `other` would)?
    pub fn contains(&self, other: &Scope) -> bool {
        match other {
            Scope::Global {} => matches!(self, Scope::Global {}),
            Scope::Tenant { tenant_id } => self.covers(&Resource { tenant_id: tenant_id.clone(), ticket_id: None }),
            Scope::Ticket { tenant_id, ticket_id } => {
                self.covers(&Resource { tenant_id: tenant_id.clone(), ticket_id: Some(ticket_id.clone()) })
            }
        }
    }

    pub fn validate(&self, field: &str) -> Result<(), Error> {
        if let Some(t) = self.tenant() {
            check_id(&format!("{field}.tenant_id"), t)?;
        }
        if let Some(t) = self.ticket() {
            check_id(&format!("{field}.ticket_id"), t)?;
        }
        Ok(())
    }
}

/// What a check asks about: a tenant, or one ticket of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub tenant_id: String,
    pub ticket_id: Option<String>,
}

impl Resource {
    pub fn validate(&self, field: &str) -> Result<(), Error> {
        check_id(&format!("{field}.tenant_id"), &self.tenant_id)?;
        if let Some(t) = &self.ticket_id {
            check_id(&format!("{field}.ticket_id"), t)?;
        }
        Ok(())
    }
}

/// Ids of principals, tenants and tickets: 1-128 characters of letters, digits and `. _ : - @`
/// (the rule and its schema: `queue_rbac_client::rules`).
pub fn check_id(field: &str, value: &str) -> Result<(), Error> {
    if value.is_empty() || value.len() > rules::ID_MAX_LEN {
        return Err(Error::invalid(field, "must be 1 to 128 characters"));
    }
    if !rules::is_id(value) {
        return Err(Error::invalid(field, "allowed: letters, digits and . _ : - @"));
    }
    Ok(())
}

/// Permission names: dotted lowercase words, e.g. `ticket.read`.
pub fn check_permission(field: &str, value: &str) -> Result<(), Error> {
    if rules::is_permission(value) {
        Ok(())
    } else {
        Err(Error::invalid(field, "must be dotted lowercase words, e.g. `ticket.read`"))
    }
}

/// A grant as stored and as answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = grant_example)]
pub struct Grant {
    pub id: Uuid,
    pub principal_id: String,
    pub role: String,
    pub role_id: Uuid,
    pub scope: Scope,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub granted_by: String,
    pub reason: String,
    pub granted_at: DateTime<Utc>,
    pub audit_event_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_reason: Option<String>,
}

/// A grant as the documents show it.
pub(crate) fn grant_example() -> serde_json::Value {
    serde_json::json!({
        "id": "5b0e2f4c-8d1a-4e6b-9c3f-2a7d1e0b4c55",
        "principal_id": "user-7f3a",
        "role": "viewer",
        "role_id": "00000000-0000-4000-8000-000000000001",
        "scope": {"type": "tenant", "tenant_id": "acme"},
        "expires_at": "2030-06-30T00:00:00Z",
        "granted_by": "service:raptor",
        "reason": "covers the support queue while Dana is away (INC-2211)",
        "granted_at": "2026-12-07T09:30:00Z",
        "audit_event_id": "0f6d3b9e-2c41-4a8e-b5d7-9e1c3a2f8b60"
    })
}

/// [`grant_example`], revoked.
pub(crate) fn revoked_grant_example() -> serde_json::Value {
    let mut g = grant_example();
    g["revoked_at"] = "2026-12-21T08:00:00Z".into();
    g["revoked_by"] = "service:raptor".into();
    g["revoke_reason"] = "Dana is back (INC-2211)".into();
    g
}

impl Grant {
    /// A stored grant; a row whose scope columns describe no scope is a broken invariant.
    pub fn from_row(row: GrantRow) -> Result<Self, Error> {
        let scope = Scope::from_columns(&row.scope_type, row.tenant_id, row.ticket_id)
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("grant {} has an invalid scope", row.id)))?;
        Ok(Grant {
            id: row.id,
            principal_id: row.principal_id,
            role: row.role_name,
            role_id: row.role_id,
            scope,
            expires_at: row.expires_at,
            granted_by: row.granted_by,
            reason: row.reason,
            granted_at: row.granted_at,
            audit_event_id: row.audit_event_id,
            revoked_at: row.revoked_at,
            revoked_by: row.revoked_by,
            revoke_reason: row.revoke_reason,
        })
    }
}

/// A role: a named set of permissions, built in or a tenant's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"id": "3c9a7f12-6e4b-4d8a-a1f5-0b2e9c7d4a10", "name": "triage", "tenant_id": "acme",
    "builtin": false, "description": "first line: reads and answers tickets",
    "permissions": ["ticket.read", "ticket.write"]}))]
pub struct Role {
    pub id: Uuid,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    pub builtin: bool,
    pub description: String,
    pub permissions: Vec<String>,
}

impl Role {
    pub fn from_row(row: RoleRow, permissions: Vec<String>) -> Self {
        Role {
            id: row.id,
            name: row.name,
            tenant_id: row.tenant_id,
            builtin: row.builtin,
            description: row.description,
            permissions,
        }
    }
}

/// One grant as the check engine keeps it: what it allows, where, until when.
#[derive(Debug, Clone)]
pub struct ActiveGrant {
    pub id: Uuid,
    pub scope: Scope,
    pub expires_at: Option<DateTime<Utc>>,
    pub permissions: std::sync::Arc<[String]>,
}

/// The grants among `grants` that allow `permission` on `resource` at `now`.
pub fn allowing<'a>(
    grants: &'a [ActiveGrant],
    permission: &str,
    resource: &Resource,
    now: DateTime<Utc>,
) -> impl Iterator<Item = &'a ActiveGrant> {
    grants.iter().filter(move |g| {
        g.expires_at.is_none_or(|e| e > now)
            && g.scope.covers(resource)
            && g.permissions.iter().any(|p| p == permission)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(t: &str, k: Option<&str>) -> Resource {
        Resource { tenant_id: t.into(), ticket_id: k.map(Into::into) }
    }

    #[test]
    fn scopes_cover_what_they_should() {
        let g = Scope::Global {};
        let t = Scope::Tenant { tenant_id: "a".into() };
        let k = Scope::Ticket { tenant_id: "a".into(), ticket_id: "1".into() };
        assert!(g.covers(&res("a", None)) && g.covers(&res("b", Some("9"))));
        assert!(t.covers(&res("a", None)) && t.covers(&res("a", Some("1"))) && !t.covers(&res("b", None)));
        assert!(k.covers(&res("a", Some("1"))) && !k.covers(&res("a", Some("2"))) && !k.covers(&res("a", None)));
        assert!(!k.covers(&res("b", Some("1"))));
        assert!(g.contains(&t) && t.contains(&k) && !k.contains(&t) && !t.contains(&g));
        assert!(!t.contains(&Scope::Tenant { tenant_id: "b".into() }));
    }

    /// The scope schema says `additionalProperties: false` for every type: serde must agree.
    #[test]
    fn scopes_refuse_fields_their_type_does_not_take() {
        let parse = |v: serde_json::Value| serde_json::from_value::<Scope>(v);
        assert_eq!(parse(serde_json::json!({"type": "global"})).ok(), Some(Scope::Global {}));
        assert!(parse(serde_json::json!({"type": "global", "tenant_id": "a"})).is_err());
        assert!(parse(serde_json::json!({"type": "tenant", "tenant_id": "a", "ticket_id": "1"})).is_err());
        assert!(parse(serde_json::json!({"type": "ticket", "tenant_id": "a", "ticket_id": "1", "x": 1})).is_err());
        assert!(parse(serde_json::json!({"type": "planet"})).is_err());
    }

    #[test]
    fn ids_and_permissions_are_checked() {
        assert!(check_id("x", "tenant-1").is_ok());
        assert!(check_id("x", "").is_err() && check_id("x", "a b").is_err() && check_id("x", "a,b").is_err());
        assert!(check_permission("p", "ticket.read").is_ok());
        assert!(check_permission("p", "ticket").is_err() && check_permission("p", "Ticket.read").is_err());
    }
}
