//! `POST /api/v1/audit/events` with a service token (scope `audit:write`).

use chrono::{DateTime, SecondsFormat, Utc};
use queue_platform::http_client::HttpClient;
use queue_svc_token::Minter;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// Who acted or what was acted on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Party {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

impl Party {
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Self { kind: kind.into(), id: id.into() }
    }
}

/// One audit event, as the audit service takes it (API.md, audit).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEvent {
    /// The idempotency key: the same id again returns the first result.
    pub id: Uuid,
    pub tenant_id: String,
    pub actor: Party,
    pub action: String,
    pub target: Party,
    #[serde(with = "rfc3339_micros")]
    pub occurred_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub payload: serde_json::Value,
}

mod rfc3339_micros {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s).map(|t| t.with_timezone(&Utc)).map_err(serde::de::Error::custom)
    }
}

// Where the event landed in the tenant's chain: the audit service's answer (it serves this very
// type) and what writers read back. A plain comment, not a doc comment: utoipa would make it
// the schema's description and change the audit service's OpenAPI document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Appended {
    pub id: Uuid,
    pub seq: i64,
    /// Hex.
    pub mac: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditClientError {
    /// Worth retrying: the service is down, slow, overloaded or answered 5xx/429.
    #[error("audit service unavailable: {0}")]
    Unavailable(String),
    /// Retrying the same event will not help (4xx other than 429): a bug or a conflict.
    #[error("audit service refused the event ({status}): {message}")]
    Rejected { status: u16, message: String },
}

impl AuditClientError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// The audit service as seen by a writer.
#[derive(Clone)]
pub struct AuditClient {
    http: HttpClient,
    base: url::Url,
    minter: Arc<Minter>,
    audience: String,
    timeout: Duration,
}

impl std::fmt::Debug for AuditClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditClient").field("base", &self.base.as_str()).finish()
    }
}

impl AuditClient {
    /// `base`: the audit service (e.g. `http://127.0.0.1:8083`); tokens are minted by `minter`
    /// for audience `audit` with scope `audit:write`.
    pub fn new(http: HttpClient, base: url::Url, minter: Arc<Minter>) -> Self {
        Self { http, base, minter, audience: "audit".into(), timeout: Duration::from_secs(5) }
    }

    /// The longest one call may take (default 5 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Appends one event; the same event id again returns the first `{seq, mac}`.
    pub async fn append(&self, event: &AuditEvent) -> Result<Appended, AuditClientError> {
        let response = self.post("/api/v1/audit/events", event).await?;
        let status = response.status().as_u16();
        if status == 201 || status == 200 {
            return response.json::<Appended>().await.map_err(|e| AuditClientError::Unavailable(e.to_string()));
        }
        Err(Self::failure(status, response).await)
    }

    /// Appends up to the service's `chain.max_batch` events (500 by default) in one round trip
    /// (`POST /api/v1/audit/events/batch`), atomically: all or none. Each event is idempotent by
    /// its id as in [`AuditClient::append`]; the answers come in the events' order.
    pub async fn append_batch(&self, events: &[AuditEvent]) -> Result<Vec<Appended>, AuditClientError> {
        #[derive(Serialize)]
        struct Body<'a> {
            events: &'a [AuditEvent],
        }
        #[derive(Deserialize)]
        struct Answer {
            results: Vec<Appended>,
        }
        let response = self.post("/api/v1/audit/events/batch", &Body { events }).await?;
        let status = response.status().as_u16();
        if status == 201 || status == 200 {
            let answer = response.json::<Answer>().await.map_err(|e| AuditClientError::Unavailable(e.to_string()))?;
            if answer.results.len() != events.len() {
                return Err(AuditClientError::Unavailable(format!(
                    "the audit service answered {} results for {} events",
                    answer.results.len(),
                    events.len()
                )));
            }
            return Ok(answer.results);
        }
        Err(Self::failure(status, response).await)
    }

    /// POSTs `body` to `path` with a fresh service token.
    async fn post(&self, path: &str, body: &impl Serialize) -> Result<reqwest::Response, AuditClientError> {
        let token = self
            .minter
            .mint(&self.audience, &["audit:write"], 60)
            .map_err(|e| AuditClientError::Unavailable(format!("cannot mint a service token: {e}")))?;
        let url = self.base.join(path).map_err(|e| AuditClientError::Rejected { status: 0, message: e.to_string() })?;
        let request = self.http.post(url.as_str()).bearer_auth(token).json(body).timeout(self.timeout);
        self.http.send(request).await.map_err(|e| AuditClientError::Unavailable(e.to_string()))
    }

    /// A non-success answer as the error it is.
    async fn failure(status: u16, response: reqwest::Response) -> AuditClientError {
        let body = response.text().await.unwrap_or_default();
        let message: String = body.chars().take(300).collect();
        if status == 429 || status >= 500 || status == 401 {
            // 401: the audit service may not have fetched our JWKS yet; retrying fixes that.
            AuditClientError::Unavailable(format!("{status}: {message}"))
        } else {
            AuditClientError::Rejected { status, message }
        }
    }
}
