//! The JSON of rbac's check endpoints. The doc comments are those of the server's types, so
//! that the server may serve these (utoipa makes them the schemas' descriptions).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::rules;

/// What a check asks about: a tenant, or one ticket of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"tenant_id": "acme", "ticket_id": "T-1042"}))]
pub struct Resource {
    #[schema(schema_with = rules::id_schema)]
    pub tenant_id: String,
    /// Absent: the tenant as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = rules::id_or_null_schema)]
    pub ticket_id: Option<String>,
}

impl Resource {
    /// A whole tenant.
    pub fn tenant(tenant_id: impl Into<String>) -> Self {
        Self { tenant_id: tenant_id.into(), ticket_id: None }
    }

    /// One ticket of a tenant.
    pub fn ticket(tenant_id: impl Into<String>, ticket_id: impl Into<String>) -> Self {
        Self { tenant_id: tenant_id.into(), ticket_id: Some(ticket_id.into()) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"principal_id": "user-7f3a", "permission": "ticket.read",
    "resource": {"tenant_id": "acme", "ticket_id": "T-1042"}}))]
pub struct CheckRequest {
    #[schema(schema_with = rules::id_schema)]
    pub principal_id: String,
    #[schema(schema_with = rules::permission_schema)]
    pub permission: String,
    pub resource: Resource,
}

impl CheckRequest {
    pub fn new(principal_id: impl Into<String>, permission: impl Into<String>, resource: Resource) -> Self {
        Self { principal_id: principal_id.into(), permission: permission.into(), resource }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"allowed": true, "grant_ids": ["5b0e2f4c-8d1a-4e6b-9c3f-2a7d1e0b4c55"], "revision": 42}))]
pub struct CheckResponse {
    pub allowed: bool,
    /// The grants that allow it.
    pub grant_ids: Vec<Uuid>,
    /// The revision the answer reflects: every change up to it, and none after it.
    pub revision: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"checks": [
    {"principal_id": "user-7f3a", "permission": "ticket.read", "resource": {"tenant_id": "acme", "ticket_id": "T-1042"}},
    {"principal_id": "user-7f3a", "permission": "ticket.write", "resource": {"tenant_id": "acme"}}]}))]
pub struct BatchCheckRequest {
    /// 1 to 1000 checks, answered in this order.
    #[schema(schema_with = rules::checks_schema)]
    pub checks: Vec<CheckRequest>,
}

/// The answer to one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Decision {
    pub allowed: bool,
    /// The grants that allow it (empty when denied).
    pub grant_ids: Vec<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(example = json!({"results": [
    {"allowed": true, "grant_ids": ["5b0e2f4c-8d1a-4e6b-9c3f-2a7d1e0b4c55"]},
    {"allowed": false, "grant_ids": []}], "revision": 42}))]
pub struct BatchCheckResponse {
    /// In the order of the request.
    pub results: Vec<Decision>,
    pub revision: i64,
}
