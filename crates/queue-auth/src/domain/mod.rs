//! The rules of queue-auth, free of HTTP. Functions take a connection so they compose inside
//! one transaction (the change and its audit event commit together).

pub mod audit;
pub mod backup_codes;
pub mod clock;
pub mod crypto;
pub mod email;
pub mod fields;
pub mod import_batch;
pub mod legacy;
pub mod legacy_passkeys;
pub mod limits;
pub mod mailer;
pub mod notify;
pub mod passkeys;
pub mod sessions;
pub mod users;
pub mod writeback;

use queue_platform::ApiError;

pub type Conn = diesel_async::AsyncPgConnection;

/// A domain failure: one of the API's refusals, or the database.
#[derive(Debug)]
pub enum Error {
    Api(ApiError),
    Db(diesel::result::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<diesel::result::Error> for Error {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e)
    }
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<queue_platform::db::DbError> for Error {
    fn from(e: queue_platform::db::DbError) -> Self {
        Self::Api(e.into())
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Api(a) => a,
            Error::Db(d) => ApiError::internal(d),
        }
    }
}

/// Who is asking, for audit events and abuse limits.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    /// The client's address (`extract::info`): what audit events and sessions record.
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub trace_id: Option<String>,
}

impl RequestInfo {
    /// The subject per-IP limits count by: the client's address, an IPv6 one by its /64 (one
    /// host can use any address of its /64, so counting addresses would not limit it).
    pub fn ip_key(&self) -> Option<String> {
        self.ip.as_deref()?.parse().ok().map(queue_platform::net::limit_key)
    }
}
