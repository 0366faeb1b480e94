//! The rules of queue-rbac, free of HTTP: the model, the check engine, grants, roles and their
//! history, the pre-write audit of every change, expiry and reconcile. Functions take what they
//! need (the pool or a connection, the checker, the pre-writer), never the handlers' state, and
//! fail with [`Error`], which the handlers map to the wire.

pub(crate) mod checker;
pub(crate) mod expiry;
pub(crate) mod grants;
pub(crate) mod history;
pub(crate) mod import;
pub(crate) mod model;
pub(crate) mod prewrite;
pub(crate) mod reach;
pub mod reconcile;
pub(crate) mod roles;
pub(crate) mod rules;
pub(crate) mod writeback;

use queue_audit_client::Party;
use queue_platform::db::DbError;

/// Why an rbac operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is well-formed but wrong; `field` names what.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The actor may not do this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// A change was not applied: the audit service did not record it, or it failed after the
    /// audit write (its compensation is on its way). docs/rbac-service.md promises 503 for both.
    #[error("{0}")]
    NotApplied(String),
    /// The database cannot be reached.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a query that failed, a broken invariant.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Unavailable(m) => Self::Unavailable(m),
            other => Self::Internal(other.into()),
        }
    }
}

/// A failed query: the platform tells an unreachable database from a query that failed.
impl From<diesel::result::Error> for Error {
    fn from(e: diesel::result::Error) -> Self {
        DbError::from_query(e).into()
    }
}

/// Where a request came from, for the audit event.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub trace_id: Option<String>,
}

/// Who asks for a change, in the rules' terms (the handlers make it from their caller).
#[derive(Debug, Clone)]
pub struct Actor {
    /// `service:raptor` or `user:<id>`: what `granted_by`, `revoked_by` and `created_by` record.
    pub label: String,
    /// How audit events name the actor.
    pub party: Party,
    pub kind: ActorKind,
}

#[derive(Debug, Clone)]
pub enum ActorKind {
    /// A service; `trusted` when it is one of `callers.granters` and holds `rbac:grant`.
    Service { issuer: String, trusted: bool },
    /// A user: acts only within their own reach.
    User { user_id: String },
}
