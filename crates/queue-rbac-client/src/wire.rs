//! The JSON of rbac's check endpoints. The doc comments are those of the server's types, so
//! that the server may serve these (utoipa makes them the schemas' descriptions).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a check asks about: a tenant, or one ticket of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    pub tenant_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
pub struct CheckRequest {
    pub principal_id: String,
    pub permission: String,
    pub resource: Resource,
}

impl CheckRequest {
    pub fn new(principal_id: impl Into<String>, permission: impl Into<String>, resource: Resource) -> Self {
        Self { principal_id: principal_id.into(), permission: permission.into(), resource }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckResponse {
    pub allowed: bool,
    /// The grants that allow it.
    pub grant_ids: Vec<Uuid>,
    /// The revision the answer reflects: every change up to it, and none after it.
    pub revision: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchCheckRequest {
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
pub struct BatchCheckResponse {
    /// In the order of the request.
    pub results: Vec<Decision>,
    pub revision: i64,
}
