//! The shape every internal import endpoint shares (issue 19, BRIEF-19 "Every endpoint"): a batch
//! of 1 to 1000 records in, one result per record out, in order. A record that cannot be imported
//! is `refused` with a reason and does not fail the batch.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The most records one batch carries.
pub const MAX_RECORDS: usize = 1000;

/// `{"records": [...], "dry_run": false}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportBatch<T> {
    /// 1 to 1000 records, each imported (or refused) on its own.
    #[schema(min_items = 1, max_items = 1000)]
    pub records: Vec<T>,
    /// Compute the same outcomes and write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

impl<T> ImportBatch<T> {
    /// 1..=1000 records, else the usual 422.
    pub fn check(&self) -> Result<(), queue_platform::ApiError> {
        if self.records.is_empty() || self.records.len() > MAX_RECORDS {
            return Err(queue_platform::ApiError::invalid(
                "records",
                format!("a batch has 1 to {MAX_RECORDS} records, not {}", self.records.len()),
            ));
        }
        Ok(())
    }
}

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
    Skipped,
    Refused,
}

/// One result per record, in the batch's order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"legacy_id": "42", "outcome": "created", "id": "9c4e2f1a-6b3d-4a8e-b7c5-1d2e3f4a5b6c"}))]
pub struct ImportResult {
    /// The record's id at Raptor, as sent.
    pub legacy_id: String,
    pub outcome: Outcome,
    /// The Queue id of the record, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// Why: for `skipped` and `refused`, and what changed for `updated`.
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
}

/// `{"results": [...]}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportResults {
    pub results: Vec<ImportResult>,
}
