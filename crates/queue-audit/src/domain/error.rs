//! The audit log's domain failure, shared by appends, reads and the key ring (which appends
//! call): here rather than in `append.rs` so the key ring does not depend on its caller.

use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("event {0} exists with other content")]
    Conflict(Uuid),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<diesel::result::Error> for AppendError {
    fn from(e: diesel::result::Error) -> Self {
        Self::Internal(e.into())
    }
}
