//! Merkle proofs of a tenant's log (issue 20; docs/audit-chain.md, "The Merkle tree"): an
//! event's inclusion in a tree of a given size, and the consistency of two sizes. Hashes are
//! standard base64, as in C2SP checkpoints; anyone holding a signed checkpoint's root checks them
//! with RFC 6962 alone.

use actix_web::{HttpResponse, web};
use base64::Engine as _;
use queue_platform::{ApiError, Caller};
use serde::{Deserialize, Serialize};
use tlog_tiles::tlog::Hash;

use crate::domain::checkpoint;
use crate::domain::merkle::{self, ProofError};
use crate::domain::note;
use crate::handlers::chain::TenantQuery;
use crate::handlers::events::{self, map_append};
use crate::state::AuditState;
use crate::wire;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    #[param(schema_with = wire::tenant_id_schema, required = true)]
    tenant_id: String,
    /// The event's seq (its leaf index is `seq - 1`).
    #[param(minimum = 1)]
    seq: u64,
    /// The size of the tree the proof is for: at least `seq`, at most the log's length.
    #[param(minimum = 1)]
    tree_size: u64,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    #[param(schema_with = wire::tenant_id_schema, required = true)]
    tenant_id: String,
    /// The older tree's size, at least 1.
    #[param(minimum = 1)]
    from: u64,
    /// The newer tree's size: at least `from`, at most the log's length.
    #[param(minimum = 1)]
    to: u64,
}

/// An inclusion proof (RFC 6962 §2.1.1): the audit path from the leaf to the root.
#[derive(Serialize, utoipa::ToSchema)]
pub struct InclusionProof {
    leaf_index: u64,
    tree_size: u64,
    /// Standard base64 of each 32-byte hash, leaf side first.
    hashes: Vec<String>,
}

/// A consistency proof (RFC 6962 §2.1.2).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ConsistencyProof {
    /// Standard base64 of each 32-byte hash.
    hashes: Vec<String>,
}

fn b64(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| base64::engine::general_purpose::STANDARD.encode(h.0)).collect()
}

/// A proof that does not exist (an event or a tree size the log does not hold, sizes in the
/// wrong order) is 404 naming the parameter: the request is well-formed, the log just has no
/// such proof.
fn map_proof(e: ProofError, field: &str) -> ApiError {
    match e {
        ProofError::Invalid(message) => ApiError::NotFound(format!("{field}: {message}")),
        ProofError::Store(e) => map_append(e),
    }
}

/// The inclusion proof of one event in the tenant's tree of `tree_size` events.
#[utoipa::path(get, path = "/api/v1/audit/proofs/inclusion", tag = "audit", operation_id = "inclusion_proof",
    security(("service_token" = ["audit:read"]), ("session" = [])),
    params(InclusionQuery),
    responses(
        (status = 200, description = "The audit path.", body = InclusionProof,
            example = json!({"leaf_index": 4, "tree_size": 8, "hashes": ["3q2+7w…=", "…", "…"]})),
        (status = 403, description = "The token's issuer is not a configured reader or lacks `audit:read`; or the user does not hold `audit.read` for the tenant."),
        (status = 404, description = "No such proof: `seq` above `tree_size`, or `tree_size` above the log's length (the message names the parameter)."),
        (status = 422, description = "A query parameter outside its schema (`field` names it)."),
        (status = 429, description = "The caller's rate limit is spent."),
    ))]
pub async fn inclusion(
    state: web::Data<AuditState>,
    caller: Caller,
    q: web::Query<InclusionQuery>,
) -> Result<HttpResponse, ApiError> {
    events::checked("tenant_id", Some(&q.tenant_id), wire::check_tenant_id)?;
    state.admit_reader(&caller, &q.tenant_id).await?;
    let field = if q.seq > q.tree_size || q.seq == 0 { "seq" } else { "tree_size" };
    let hashes =
        merkle::inclusion(&state.db, &q.tenant_id, q.seq, q.tree_size).await.map_err(|e| map_proof(e, field))?;
    Ok(HttpResponse::Ok().json(InclusionProof { leaf_index: q.seq - 1, tree_size: q.tree_size, hashes: b64(&hashes) }))
}

/// The consistency proof between two sizes of the tenant's tree.
#[utoipa::path(get, path = "/api/v1/audit/proofs/consistency", tag = "audit", operation_id = "consistency_proof",
    security(("service_token" = ["audit:read"]), ("session" = [])),
    params(ConsistencyQuery),
    responses(
        (status = 200, description = "The proof that the tree of `to` events extends the tree of `from`.", body = ConsistencyProof,
            example = json!({"hashes": ["3q2+7w…=", "…"]})),
        (status = 403, description = "The token's issuer is not a configured reader or lacks `audit:read`; or the user does not hold `audit.read` for the tenant."),
        (status = 404, description = "No such proof: `from` above `to`, or `to` above the log's length (the message names the parameter)."),
        (status = 422, description = "A query parameter outside its schema (`field` names it)."),
        (status = 429, description = "The caller's rate limit is spent."),
    ))]
pub async fn consistency(
    state: web::Data<AuditState>,
    caller: Caller,
    q: web::Query<ConsistencyQuery>,
) -> Result<HttpResponse, ApiError> {
    events::checked("tenant_id", Some(&q.tenant_id), wire::check_tenant_id)?;
    state.admit_reader(&caller, &q.tenant_id).await?;
    let field = if q.from > q.to || q.from == 0 { "from" } else { "to" };
    let hashes = merkle::consistency(&state.db, &q.tenant_id, q.from, q.to).await.map_err(|e| map_proof(e, field))?;
    Ok(HttpResponse::Ok().json(ConsistencyProof { hashes: b64(&hashes) }))
}

/// The newest checkpoint of a tenant's log as a C2SP signed note (c2sp.org/tlog-checkpoint):
/// origin `<chain.checkpoint_origin>/<tenant_id>`, tree size, root hash, then the ECDSA P-256
/// signature line. Check it with a key of `GET /api/v1/audit/checkpoint-keys`.
#[utoipa::path(get, path = "/api/v1/audit/checkpoints/latest", tag = "audit", operation_id = "latest_checkpoint",
    security(("service_token" = ["audit:read"]), ("session" = [])),
    params(TenantQuery),
    responses(
        (status = 200, description = "The signed note (text/plain).", content_type = "text/plain", body = String,
            example = "audit.queue.local/acme\n1042\n3q2+7w…=\n\n— audit.queue.local Ab3x…\n"),
        (status = 403, description = "The token's issuer is not a configured reader or lacks `audit:read`; or the user does not hold `audit.read` for the tenant."),
        (status = 404, description = "No checkpoint of the tenant's log has been signed yet."),
        (status = 422, description = "A query parameter outside its schema (`field` names it)."),
        (status = 429, description = "The caller's rate limit is spent."),
    ))]
pub async fn latest_checkpoint(
    state: web::Data<AuditState>,
    caller: Caller,
    q: web::Query<TenantQuery>,
) -> Result<HttpResponse, ApiError> {
    events::checked("tenant_id", Some(&q.tenant_id), wire::check_tenant_id)?;
    state.admit_reader(&caller, &q.tenant_id).await?;
    let note = checkpoint::latest_note(&state.db, &q.tenant_id).await.map_err(map_append)?;
    let note = note.ok_or_else(|| ApiError::NotFound(format!("no checkpoint of tenant {} yet", q.tenant_id)))?;
    Ok(HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(note))
}

/// The checkpoint keys, in the signed-note verifier key format.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CheckpointKeys {
    /// `<name>+<key ID, 8 hex digits>+<base64(0x02 || SubjectPublicKeyInfo DER)>`, the key that
    /// signs new checkpoints first.
    keys: Vec<String>,
}

/// The public keys checkpoints are signed with (signed-note type 0x02, ECDSA P-256).
#[utoipa::path(get, path = "/api/v1/audit/checkpoint-keys", tag = "audit", operation_id = "checkpoint_keys",
    security(("service_token" = ["audit:read"]), ("session" = [])),
    responses(
        (status = 200, description = "The verifier keys.", body = CheckpointKeys),
        (status = 403, description = "The token's issuer is not a configured reader or lacks `audit:read`."),
        (status = 429, description = "The caller's rate limit is spent."),
    ))]
pub async fn checkpoint_keys(state: web::Data<AuditState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    state.admit_bucket(&caller.bucket(), 1)?;
    let point = state.keys.provider().checkpoint_public_key().await.map_err(ApiError::internal)?;
    let keys = vec![note::verifier_key(&state.chain.checkpoint_origin, &point)];
    Ok(HttpResponse::Ok().json(CheckpointKeys { keys }))
}
