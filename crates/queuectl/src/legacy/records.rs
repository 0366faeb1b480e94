//! The wire of the import endpoints (BRIEF-19, docs/legacy-import.md): the kinds in the order
//! they are imported, the record each kind sends, and the result each record gets back. The
//! services own these endpoints; this is the client's copy of their JSON, nothing more.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What is imported, in the order it must be: users first (the others name them), roles before
/// the grants that name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Users,
    Sessions,
    BackupCodes,
    Passkeys,
    Roles,
    Grants,
}

/// The services that own imported data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Auth,
    Rbac,
}

impl Kind {
    /// The kind as it is named in the endpoint's path and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Users => "users",
            Kind::Sessions => "sessions",
            Kind::BackupCodes => "backup-codes",
            Kind::Passkeys => "passkeys",
            Kind::Roles => "roles",
            Kind::Grants => "grants",
        }
    }

    pub fn service(self) -> Service {
        match self {
            Kind::Users | Kind::Sessions | Kind::BackupCodes | Kind::Passkeys => Service::Auth,
            Kind::Roles | Kind::Grants => Service::Rbac,
        }
    }

    pub fn path(self) -> String {
        format!("/internal/v1/import/{}", self.name())
    }
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Auth => "auth",
            Service::Rbac => "rbac",
        }
    }

    /// The scope an importer's token carries at this service.
    pub fn scope(self) -> &'static str {
        match self {
            Service::Auth => "users:import",
            Service::Rbac => "rbac:import",
        }
    }
}

/// rbac's endpoint of imported users (not a kind: it pairs users, it creates nothing).
pub const PRINCIPALS_PATH: &str = "/internal/v1/import/principals";

/// An imported user as rbac pairs it: Raptor's customer id and the Queue user id.
#[derive(Serialize, Debug)]
pub struct Principal {
    pub legacy_id: String,
    pub principal_id: String,
}

/// A batch as the endpoints take it.
#[derive(Serialize)]
pub struct Batch<'a, T> {
    pub records: &'a [T],
    pub dry_run: bool,
}

/// A Raptor customer as an auth user.
#[derive(Serialize, Debug)]
pub struct User {
    pub legacy_id: String,
    pub tenant_id: String,
    /// As typed at Raptor; auth normalises it.
    pub email: String,
    pub email_verified_at: Option<DateTime<Utc>>,
    pub display_name: Option<String>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

/// A Raptor session: its token only as SHA-256 (base64url, no padding).
#[derive(Serialize, Debug)]
pub struct Session {
    pub legacy_id: String,
    pub user_legacy_id: String,
    pub token_sha256: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A Raptor backup code: werkzeug's hash as Raptor stored it.
#[derive(Serialize, Debug)]
pub struct BackupCode {
    pub legacy_id: String,
    pub user_legacy_id: String,
    pub werkzeug_hash: String,
    pub created_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// A passkey as py_webauthn's `VerifiedRegistration` left it (bytes as base64url, no padding).
#[derive(Serialize, Debug)]
pub struct Passkey {
    pub legacy_id: String,
    pub user_legacy_id: String,
    pub credential_id: String,
    pub public_key: String,
    pub sign_count: i64,
    pub aaguid: Option<String>,
    pub device_type: String,
    pub backed_up: bool,
    pub user_verified: bool,
    pub transports: Option<Vec<String>>,
    pub user_handle: String,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A Raptor role with its permissions (tenant null: a built-in).
#[derive(Serialize, Debug)]
pub struct Role {
    pub legacy_id: String,
    pub tenant_id: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub permissions: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// A Raptor grant, its customers resolved to Queue user ids.
#[derive(Serialize, Debug)]
pub struct Grant {
    pub legacy_id: String,
    pub principal_id: String,
    pub role: String,
    pub role_tenant_id: Option<String>,
    pub scope: Scope,
    /// None: the system (a seed or a migration at Raptor).
    pub granted_by: Option<String>,
    pub granted_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub reason: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
}

#[derive(Serialize, Debug)]
pub struct Scope {
    #[serde(rename = "type")]
    pub kind: String,
    pub tenant_id: Option<String>,
    pub ticket_id: Option<String>,
}

/// What became of one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
    Skipped,
    Refused,
}

impl Outcome {
    pub const ALL: [Outcome; 5] =
        [Outcome::Created, Outcome::Updated, Outcome::Unchanged, Outcome::Skipped, Outcome::Refused];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
            Outcome::Refused => "refused",
        }
    }
}

/// One record's result, from the service or decided here (a grant whose customer was refused).
#[derive(Clone, Debug, Deserialize)]
pub struct ImportResult {
    pub legacy_id: String,
    pub outcome: Outcome,
    /// The Queue id of the record, when there is one.
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl ImportResult {
    pub fn refused(legacy_id: String, reason: String) -> Self {
        Self { legacy_id, outcome: Outcome::Refused, id: None, reason: Some(reason) }
    }
}

/// An endpoint's answer to a batch.
#[derive(Deserialize)]
pub struct Answer {
    pub results: Vec<ImportResult>,
}
