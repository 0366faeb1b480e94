//! Which Queue users are which Raptor customers (`POST /internal/v1/import/principals`): rbac
//! knows principals by Queue user id only, and writes a grant back to Raptor only for a user
//! imported from Raptor, as that customer (domain `writeback`). `queuectl legacy import` sends
//! every user auth imported, before the roles. A pair stored before is `unchanged`; a pair
//! contradicting a stored one (the user as another customer, the customer as another user) is
//! refused, named. New pairs are written through the pre-writer as one audited change per batch
//! (`rbac.legacy.principals.linked`, the pairs in its payload): no grant or role changes, so one
//! event per batch keeps a 100,000-user import cheap.

use queue_audit_client::Party;
use serde::Deserialize;
use serde_json::json;
use std::collections::{HashMap, HashSet};

use super::{ImportResult, Importer, Outcome, admit};
use crate::db::writeback as rows;
use crate::domain::Error;
use crate::domain::model::check_id;
use crate::domain::prewrite::{Applied, Apply, Change, PLATFORM_TENANT};

/// One imported user: Raptor's customer id and the Queue user id auth gave it.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"legacy_id": "3", "principal_id": "0b7e6a52-3c1d-4f8e-9a2b-5c6d7e8f9a01"}))]
pub struct LegacyPrincipal {
    /// Raptor's `customers.id`, as a decimal string.
    pub legacy_id: String,
    /// The Queue user id of that customer.
    pub principal_id: String,
}

/// What a stored pair says about a record.
fn judge(
    rec: &LegacyPrincipal,
    by_principal: &HashMap<String, String>,
    by_legacy: &HashMap<String, String>,
) -> Outcome {
    match (by_principal.get(&rec.principal_id), by_legacy.get(&rec.legacy_id)) {
        (None, None) => Outcome::Created,
        (Some(l), _) if *l == rec.legacy_id => Outcome::Unchanged,
        _ => Outcome::Refused,
    }
}

fn refusal(
    rec: &LegacyPrincipal,
    by_principal: &HashMap<String, String>,
    by_legacy: &HashMap<String, String>,
) -> String {
    match (by_principal.get(&rec.principal_id), by_legacy.get(&rec.legacy_id)) {
        (Some(l), _) => format!("user {} is customer {l} already", rec.principal_id),
        (None, Some(p)) => format!("customer {} is user {p} already", rec.legacy_id),
        (None, None) => "no conflict".into(),
    }
}

/// Records a batch of pairs, one answer per record.
#[tracing::instrument(skip_all, fields(records = records.len(), dry_run = imp.dry_run))]
pub async fn import(imp: &Importer<'_>, records: &[LegacyPrincipal]) -> Result<Vec<ImportResult>, Error> {
    let mut seen = HashSet::new();
    let mut users = HashSet::new();
    let mut checked = Vec::with_capacity(records.len());
    for rec in records {
        let ok = admit(&mut seen, &rec.legacy_id)
            .and_then(|()| check_id("principal_id", &rec.principal_id).map_err(|e| e.to_string()))
            .and_then(|()| {
                if users.insert(rec.principal_id.as_str()) {
                    Ok(())
                } else {
                    Err(format!("principal_id {} appears twice in this batch", rec.principal_id))
                }
            });
        checked.push(ok);
    }
    let principals: Vec<&str> = records.iter().map(|r| r.principal_id.as_str()).collect();
    let legacy: Vec<&str> = records.iter().map(|r| r.legacy_id.as_str()).collect();
    let stored = rows::pairs_touching(&mut *imp.writes.db.conn().await?, &principals, &legacy).await?;
    let by_principal: HashMap<String, String> = stored.iter().cloned().collect();
    let by_legacy: HashMap<String, String> = stored.into_iter().map(|(p, l)| (l, p)).collect();
    let mut results = Vec::with_capacity(records.len());
    let mut new = Vec::new();
    for (rec, ok) in records.iter().zip(checked) {
        let result = match ok.map(|()| judge(rec, &by_principal, &by_legacy)) {
            Err(reason) => ImportResult::refused(&rec.legacy_id, reason),
            Ok(Outcome::Refused) => ImportResult::refused(&rec.legacy_id, refusal(rec, &by_principal, &by_legacy)),
            Ok(outcome) => {
                if outcome == Outcome::Created {
                    new.push((rec.principal_id.clone(), rec.legacy_id.clone()));
                }
                ImportResult::new(&rec.legacy_id, outcome, Some(rec.principal_id.clone()), None)
            }
        };
        results.push(result);
    }
    if !new.is_empty() && !imp.dry_run {
        link(imp, &new).await?;
    }
    Ok(results)
}

/// The new pairs, audited first, in one transaction.
async fn link(imp: &Importer<'_>, pairs: &[(String, String)]) -> Result<(), Error> {
    let event_id = uuid::Uuid::new_v4();
    let listed: Vec<_> = pairs.iter().map(|(p, l)| json!({"principal_id": p, "legacy_id": l})).collect();
    let change = Change {
        event_id,
        tenant: PLATFORM_TENANT,
        action: "rbac.legacy.principals.linked",
        actor: imp.party.clone(),
        target: Party::new("legacy_principals", format!("{} users", pairs.len())),
        occurred_at: chrono::Utc::now(),
        payload: json!({ "principals": listed }),
    };
    match imp.writes.write(change, &imp.origin, Apply::LinkPrincipals(pairs)).await? {
        Applied::Done(_) => Ok(()),
        Applied::Nothing => Err(Error::Internal(anyhow::anyhow!("linking principals reported nothing to do"))),
    }
}
