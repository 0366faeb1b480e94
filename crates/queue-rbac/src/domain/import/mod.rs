//! Importing Raptor's roles and grants (issue 19, `POST /internal/v1/import/{roles,grants}`):
//! what the two kinds share. Each record is recognised by Raptor's row id (`legacy_id`): sent
//! again unchanged it is `unchanged` (nothing written, no audit event); otherwise it is created,
//! updated, skipped or refused with a reason, one answer per record. Every write goes through the
//! pre-writer like any grant: its audit event (`rbac.legacy.<kind>.imported|updated`) is written
//! first, and the change's transaction links it, so reconcile sees an audited change. A dry run
//! decides the same outcomes and writes nothing. `status` counts what rbac holds from Raptor.

pub(crate) mod grants;
pub(crate) mod principals;
pub(crate) mod roles;
pub(crate) mod status;

use queue_audit_client::Party;
use serde::Serialize;
use std::collections::HashSet;

use super::prewrite::Prewriter;
use super::{Error, Origin};

/// At most this many records in one batch.
pub const MAX_RECORDS: usize = 1000;
/// Raptor's row ids are `bigserial`: at most this many decimal digits.
const LEGACY_ID_MAX_DIGITS: usize = 19;

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Created,
    Updated,
    Unchanged,
    Skipped,
    Refused,
}

/// The answer for one record, in the batch's order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"legacy_id": "42", "outcome": "created", "id": "5b0e2f4c-8d1a-4e6b-9c3f-2a7d1e0b4c55"}))]
pub struct ImportResult {
    pub legacy_id: String,
    pub outcome: Outcome,
    /// The Queue id of the record, when there is one (not for a refused record, nor for one a
    /// dry run would create).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Why: for `updated` (what changed), `skipped` and `refused`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ImportResult {
    pub fn new(legacy_id: &str, outcome: Outcome, id: Option<String>, reason: Option<String>) -> Self {
        Self { legacy_id: legacy_id.to_string(), outcome, id, reason }
    }

    pub fn refused(legacy_id: &str, reason: impl Into<String>) -> Self {
        Self::new(legacy_id, Outcome::Refused, None, Some(reason.into()))
    }
}

/// Who imports, and how: the pre-writer, the importing service as the actor of every event,
/// where the batch came from, and whether this is a dry run.
pub struct Importer<'a> {
    pub writes: &'a Prewriter,
    /// The importing service (`service:operator`): `created_by` of imported roles.
    pub label: String,
    /// `{"type": "service", "id": "<issuer>"}`: the actor of the audit events.
    pub party: Party,
    pub origin: Origin,
    pub dry_run: bool,
}

/// A batch holds 1 to [`MAX_RECORDS`] records (else the whole batch is refused, 422).
pub fn check_batch_size(n: usize) -> Result<(), Error> {
    if (1..=MAX_RECORDS).contains(&n) {
        Ok(())
    } else {
        Err(Error::invalid("records", format!("must hold 1 to {MAX_RECORDS} records, not {n}")))
    }
}

/// Raptor's row id as a decimal string; the refusal says what is wrong.
fn check_legacy_id(legacy_id: &str) -> Result<(), String> {
    let digits = !legacy_id.is_empty() && legacy_id.bytes().all(|b| b.is_ascii_digit());
    if digits && legacy_id.len() <= LEGACY_ID_MAX_DIGITS && !(legacy_id.len() > 1 && legacy_id.starts_with('0')) {
        Ok(())
    } else {
        Err("legacy_id must be Raptor's row id as a decimal string".into())
    }
}

/// Refuses a malformed legacy id, or one seen before in the same batch (the second record would
/// contradict the first).
pub(crate) fn admit(seen: &mut HashSet<String>, legacy_id: &str) -> Result<(), String> {
    check_legacy_id(legacy_id)?;
    if seen.insert(legacy_id.to_string()) {
        Ok(())
    } else {
        Err(format!("legacy_id {legacy_id} appears twice in this batch"))
    }
}

/// `user:<id>` for a Queue user named by Raptor (a granter, a revoker), or `system:raptor` when
/// Raptor says the system did it (a seed or a migration).
pub(crate) fn legacy_party_label(user: Option<&str>) -> String {
    match user {
        Some(u) => format!("user:{u}"),
        None => "system:raptor".to_string(),
    }
}

/// "only at Raptor: a, b; only at Queue: c" for two sorted permission lists; `None` if equal.
pub(crate) fn permission_difference(raptor: &[String], queue: &[String]) -> Option<String> {
    let only = |a: &[String], b: &[String]| a.iter().filter(|p| !b.contains(p)).cloned().collect::<Vec<_>>().join(", ");
    let (at_raptor, at_queue) = (only(raptor, queue), only(queue, raptor));
    if at_raptor.is_empty() && at_queue.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    if !at_raptor.is_empty() {
        parts.push(format!("only at Raptor: {at_raptor}"));
    }
    if !at_queue.is_empty() {
        parts.push(format!("only at Queue: {at_queue}"));
    }
    Some(parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_ids_are_decimal_row_ids_once_per_batch() {
        let mut seen = HashSet::new();
        assert!(admit(&mut seen, "42").is_ok() && admit(&mut seen, "0").is_ok());
        assert!(admit(&mut seen, "42").is_err(), "twice in a batch");
        for bad in ["", "-1", "4 2", "042", "1e3", "abc", "12345678901234567890"] {
            assert!(admit(&mut seen, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn permission_differences_name_both_sides() {
        let s = |v: &[&str]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(permission_difference(&s(&["a.b"]), &s(&["a.b"])), None);
        assert_eq!(
            permission_difference(&s(&["a.b", "c.d"]), &s(&["a.b", "e.f"])).as_deref(),
            Some("only at Raptor: c.d; only at Queue: e.f")
        );
        assert_eq!(permission_difference(&s(&[]), &s(&["e.f"])).as_deref(), Some("only at Queue: e.f"));
    }
}
