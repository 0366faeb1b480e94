//! `POST /api/v1/rbac/check` and `/check/batch` with a service token minted per call.

use queue_platform::http_client::HttpClient;
use queue_svc_token::Minter;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

use crate::wire::{BatchCheckRequest, BatchCheckResponse, CheckRequest, CheckResponse};

/// What went wrong, by the side it went wrong on.
#[derive(Debug, thiserror::Error)]
pub enum RbacClientError {
    /// This side could not make the call: no token could be minted, or the base URL takes no
    /// path. Retrying will not help.
    #[error("cannot ask rbac: {0}")]
    Local(String),
    /// rbac could not be reached in time (refused, reset, timed out).
    #[error("rbac unreachable: {0}")]
    Unreachable(String),
    /// rbac answered with an error status: a refusal (`403`: this caller may not ask; `422`: the
    /// question is malformed) or a failure of its own (`5xx`, `429`).
    #[error("rbac answered {status}: {message}")]
    Status { status: u16, message: String },
    /// rbac answered `2xx` with a body that is not a check result.
    #[error("rbac's answer is not a check result: {0}")]
    Answer(String),
}

impl RbacClientError {
    /// Whether the same call may succeed later: rbac down, slow, overloaded, failing, or (`401`)
    /// not yet holding this service's keys.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable(_) => true,
            Self::Status { status, .. } => *status >= 500 || *status == 429 || *status == 401,
            Self::Local(_) | Self::Answer(_) => false,
        }
    }
}

/// The rbac service as seen by a service that asks it.
#[derive(Clone)]
pub struct RbacClient {
    http: HttpClient,
    base: url::Url,
    minter: Arc<Minter>,
    timeout: Duration,
}

impl std::fmt::Debug for RbacClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbacClient").field("base", &self.base.as_str()).finish()
    }
}

impl RbacClient {
    /// `base`: the rbac service (e.g. `http://127.0.0.1:8082`); tokens are minted by `minter`
    /// for audience `rbac` with scope `rbac:check`.
    pub fn new(http: HttpClient, base: url::Url, minter: Arc<Minter>) -> Self {
        Self { http, base, minter, timeout: Duration::from_secs(3) }
    }

    /// The longest one call may take (default 3 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Does the principal hold the permission on the resource?
    pub async fn check(&self, request: &CheckRequest) -> Result<CheckResponse, RbacClientError> {
        self.post("/api/v1/rbac/check", request).await
    }

    /// Many checks (1 to 1000), answered in order at one revision.
    pub async fn check_batch(&self, request: &BatchCheckRequest) -> Result<BatchCheckResponse, RbacClientError> {
        self.post("/api/v1/rbac/check/batch", request).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, RbacClientError> {
        let token = self
            .minter
            .mint("rbac", &["rbac:check"], 60)
            .map_err(|e| RbacClientError::Local(format!("cannot mint a service token: {e}")))?;
        let url = self.base.join(path).map_err(|e| RbacClientError::Local(format!("{}: {e}", self.base)))?;
        let request = self.http.post(url.as_str()).bearer_auth(token).json(body).timeout(self.timeout);
        let response = self.http.send(request).await.map_err(|e| RbacClientError::Unreachable(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(RbacClientError::Status { status: status.as_u16(), message: body.chars().take(300).collect() });
        }
        response.json::<T>().await.map_err(|e| RbacClientError::Answer(e.to_string()))
    }
}
