//! The envelope every import endpoint shares (issue 19, `POST /internal/v1/import/<kind>`): a
//! batch of 1 to [`MAX_RECORDS`] records and a dry-run switch in, one [`ImportResult`] per record
//! out, in order. What a record is depends on the kind (`domain::legacy`).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The most records one batch may carry.
pub const MAX_RECORDS: usize = 1000;

/// `{"records": [...], "dry_run": false}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBatch<T> {
    /// 1 to 1000 records, answered in order.
    #[schema(min_items = 1, max_items = 1000)]
    pub records: Vec<T>,
    /// Compute the same outcomes and write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

impl<T> ImportBatch<T> {
    /// 422 unless the batch holds 1 to [`MAX_RECORDS`] records.
    pub fn check_size(&self) -> Result<(), queue_platform::ApiError> {
        if (1..=MAX_RECORDS).contains(&self.records.len()) {
            Ok(())
        } else {
            Err(queue_platform::ApiError::invalid("records", format!("send 1 to {MAX_RECORDS} records per batch")))
        }
    }
}

/// What happened to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// New at Queue.
    Created,
    /// Imported before (or linked now); what changed is in `reason`.
    Updated,
    /// Imported before, nothing changed: nothing written, no audit event.
    Unchanged,
    /// Not brought, by rule (an expired or revoked session never imported before): `reason`.
    Skipped,
    /// Cannot be brought as it is: `reason` says why. The rest of the batch goes on.
    Refused,
}

/// One record's answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"legacy_id": "42", "outcome": "updated", "id": "0e9a1c52-8f6e-4b39-a3a4-5f0f3c1d2b7e", "reason": "changed: status"}))]
pub struct ImportResult {
    /// The record's `legacy_id`, as sent.
    pub legacy_id: String,
    pub outcome: Outcome,
    /// The Queue id of the record, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// Why, for `skipped`, `refused` and `updated`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ImportResult {
    pub fn new(legacy_id: &str, outcome: Outcome, id: Option<Uuid>, reason: Option<String>) -> Self {
        Self { legacy_id: legacy_id.to_string(), outcome, id, reason }
    }

    pub fn refused(legacy_id: &str, reason: impl Into<String>) -> Self {
        Self::new(legacy_id, Outcome::Refused, None, Some(reason.into()))
    }

    /// The answer of a dry run: what it would have created has no Queue id (it was rolled back,
    /// and a real run gives another one), so the caller cannot mistake it for a record.
    pub fn rolled_back(self) -> Self {
        match self.outcome {
            Outcome::Created => Self { id: None, ..self },
            _ => self,
        }
    }
}

/// `{"results": [...]}`, one per record, in order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportResults {
    pub results: Vec<ImportResult>,
}
