//! The batch sender: one `POST /internal/v1/import/<kind>` per batch, with a fresh service token
//! of the importer (the operator's key, scope `<service>:import`, audience the service). An
//! answer that is not the batch's results (a 4xx/5xx, a wrong count) stops the import with an
//! error that names the service, the endpoint, and the answer's `error.code` and `message`.
//! `status` reads a service's `GET /internal/v1/import/status` with the same token.

use anyhow::Context;
use queue_svc_token::{DEFAULT_TTL_SECS, Minter};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

use crate::legacy::records::{Answer, Batch, ImportResult, Kind, Service};

/// Where a service answers and who it is (the token's audience).
pub struct Endpoint {
    pub url: String,
    pub audience: String,
}

pub struct Client {
    http: reqwest::Client,
    minter: Minter,
    auth: Endpoint,
    rbac: Endpoint,
}

impl Client {
    pub fn new(minter: Minter, auth: Endpoint, rbac: Endpoint) -> anyhow::Result<Self> {
        // A batch of 1000 writes 1000 rows and their audit events in one transaction: generous.
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .build()?;
        Ok(Self { http, minter, auth, rbac })
    }

    fn endpoint(&self, service: Service) -> &Endpoint {
        match service {
            Service::Auth => &self.auth,
            Service::Rbac => &self.rbac,
        }
    }

    /// Sends one batch of `kind` and returns one result per record, in order.
    pub async fn send<T: Serialize>(
        &self,
        kind: Kind,
        legacy_ids: &[String],
        records: &[T],
        dry_run: bool,
    ) -> anyhow::Result<Vec<ImportResult>> {
        self.send_to(kind.service(), &kind.path(), legacy_ids, records, dry_run).await
    }

    /// Sends one batch to `path` of `service` (an import endpoint) and returns one result per
    /// record, in order.
    pub async fn send_to<T: Serialize>(
        &self,
        service: Service,
        path: &str,
        legacy_ids: &[String],
        records: &[T],
        dry_run: bool,
    ) -> anyhow::Result<Vec<ImportResult>> {
        let endpoint = self.endpoint(service);
        let url = format!("{}{path}", endpoint.url.trim_end_matches('/'));
        let token = self.minter.mint(&endpoint.audience, &[service.scope()], DEFAULT_TTL_SECS)?;
        let resp = self
            .http
            .post(&url)
            .bearer_auth(token)
            .json(&Batch { records, dry_run })
            .send()
            .await
            .with_context(|| format!("cannot reach {} at POST {url}", service.name()))?;
        let status = resp.status();
        let body = resp.bytes().await.with_context(|| format!("reading {}'s answer at POST {url}", service.name()))?;
        if !status.is_success() {
            anyhow::bail!("{} answered {status} at POST {url}: {}", service.name(), error_of(&body));
        }
        let answer: Answer = serde_json::from_slice(&body)
            .with_context(|| format!("{} answered POST {url} with something other than results", service.name()))?;
        check_results(&answer.results, legacy_ids)
            .with_context(|| format!("{}'s answer at POST {url} does not match the batch", service.name()))?;
        Ok(answer.results)
    }
}

impl Client {
    /// `GET /internal/v1/import/status` of `service`: what it holds from Raptor, as it answers.
    pub async fn status(&self, service: Service) -> anyhow::Result<Value> {
        let endpoint = self.endpoint(service);
        let url = format!("{}/internal/v1/import/status", endpoint.url.trim_end_matches('/'));
        let token = self.minter.mint(&endpoint.audience, &[service.scope()], DEFAULT_TTL_SECS)?;
        let resp = self
            .http
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("cannot reach {} at GET {url}", service.name()))?;
        let status = resp.status();
        let body = resp.bytes().await.with_context(|| format!("reading {}'s answer at GET {url}", service.name()))?;
        if !status.is_success() {
            anyhow::bail!("{} answered {status} at GET {url}: {}", service.name(), error_of(&body));
        }
        serde_json::from_slice(&body)
            .with_context(|| format!("{} answered GET {url} with something other than JSON", service.name()))
    }
}

/// `code: message` of an error body (`{"error": {"code", "message"}}`), or what there was.
fn error_of(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v["error"].is_object() => format!(
            "{}: {}",
            v["error"]["code"].as_str().unwrap_or("no code"),
            v["error"]["message"].as_str().unwrap_or("no message")
        ),
        _ if body.is_empty() => "(no body)".into(),
        _ => {
            let text = String::from_utf8_lossy(body);
            text.chars().take(200).collect()
        }
    }
}

/// One result per record, for the same legacy ids in the same order.
fn check_results(results: &[ImportResult], legacy_ids: &[String]) -> anyhow::Result<()> {
    if results.len() != legacy_ids.len() {
        anyhow::bail!("{} result(s) for {} record(s)", results.len(), legacy_ids.len());
    }
    if let Some((r, sent)) = results.iter().zip(legacy_ids).find(|(r, sent)| &r.legacy_id != *sent) {
        anyhow::bail!("a result for legacy id {} where {sent} was sent", r.legacy_id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_is_shown_by_code_and_message() {
        assert_eq!(
            error_of(br#"{"error":{"code":"forbidden","message":"not an importer"}}"#),
            "forbidden: not an importer"
        );
        assert_eq!(error_of(b""), "(no body)");
        assert_eq!(error_of(b"Bad Gateway"), "Bad Gateway");
    }

    #[test]
    fn results_must_answer_the_batch_in_order() {
        let r = |id: &str| ImportResult {
            legacy_id: id.into(),
            outcome: crate::legacy::records::Outcome::Created,
            id: None,
            reason: None,
        };
        let sent = vec!["1".to_string(), "2".to_string()];
        assert!(check_results(&[r("1"), r("2")], &sent).is_ok());
        assert!(check_results(&[r("1")], &sent).is_err());
        assert!(check_results(&[r("2"), r("1")], &sent).is_err());
    }
}
