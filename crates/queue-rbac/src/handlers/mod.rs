//! HTTP handlers of queue-rbac, one file per area: each extracts the request, authorises the
//! caller, calls the domain and maps the answer to the wire. The wire types (requests and
//! responses) live here; the domain's errors become the platform's `ApiError` here too.

pub(crate) mod access;
pub(crate) mod check;
pub(crate) mod grants;
pub(crate) mod history;
pub(crate) mod import;
pub(crate) mod reconcile;
pub(crate) mod roles;

use queue_platform::ApiError;

use crate::domain::Error;

/// The error policy (docs/error-policy.md): refusals keep their status and message; an
/// unreachable database is a 503 whose cause is logged here; anything unexpected is an opaque
/// 500, logged once by `ApiError`.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid { field, message } => ApiError::Unprocessable { field, message },
            Error::Forbidden(m) => ApiError::Forbidden(m),
            Error::NotFound(m) => ApiError::NotFound(m),
            Error::Conflict(m) => ApiError::Conflict(m),
            Error::NotApplied(m) => ApiError::Unavailable(m),
            Error::Unavailable(cause) => {
                tracing::warn!(error = %cause, "database unavailable");
                ApiError::Unavailable("database unavailable".into())
            }
            Error::Internal(e) => ApiError::Internal(e),
        }
    }
}
