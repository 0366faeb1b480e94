//! Raptor's passkeys imported (issue 19): py_webauthn's stored fields become a webauthn-rs
//! `Passkey` (its `Credential` built field by field; the COSE key parsed by webauthn-rs's own
//! parser), kept as sent in `auth.passkeys.legacy_source`, the record of truth. Idempotent by
//! legacy id; what cannot work at Queue is refused with the reason (an algorithm webauthn-rs
//! cannot verify, a key it cannot read, a user handle another user has, an unknown user).

use base64::Engine;
use chrono::{DateTime, Utc};
use diesel::{BoolExpressionMethods, ExpressionMethods, OptionalExtension, QueryDsl};
use diesel_async::{AsyncConnection, RunQueryDsl};
use queue_audit_client::Party;
use queue_platform::db::prepared;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use webauthn_rs::prelude::{
    AttestationFormat, COSEAlgorithm, COSEKey, COSEKeyType, Credential, ECDSACurve, ParsedAttestation, Passkey,
    WebauthnError,
};
use webauthn_rs_proto::{AuthenticatorTransport, RegisteredExtensions, UserVerificationPolicy};

use super::audit::{self, Event};
use super::import_batch::{ImportResult, Outcome};
use super::{Conn, RequestInfo, Result};
use crate::db::schema::auth::{passkeys as pk, users as user_rows};

/// A passkey as Raptor stored it (py_webauthn's `VerifiedRegistration`), bytes as base64url.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"legacy_id": "31", "user_legacy_id": "7", "credential_id": "drv_Wq5D0h1TxISpiBaLsHAUr5Jo8JU1EYlQXX4jnsU", "public_key": "pQECAyYgASFYIPIfziB7fvgCaP0uSnsQ73lu2AuKwC7R9Q7YBc6l4AjQIlgg7NYsf8z81omwbrt058b4uv3NgfqfhNeuRPkCnzodZ0Y", "sign_count": 3, "aaguid": "00000000-0000-0000-0000-000000000000", "device_type": "multi_device", "backed_up": true, "user_verified": true, "transports": ["internal", "hybrid"], "user_handle": "PfNutg_Tno28I3I9p7VIIQ", "name": "Ada's phone", "created_at": "2026-03-01T09:00:00Z", "last_used_at": "2026-11-30T18:12:00Z"}))]
pub struct LegacyPasskey {
    /// Raptor's `webauthn_credentials.id`, as a decimal string.
    pub legacy_id: String,
    /// The owner's id at Raptor (`customers.id`); the user is imported first.
    pub user_legacy_id: String,
    /// `.credential_id`, base64url.
    pub credential_id: String,
    /// `.credential_public_key`: the CBOR-encoded COSE key, base64url.
    pub public_key: String,
    /// `.sign_count` as Raptor last saw it (WebAuthn's counter is 32 bits).
    pub sign_count: u32,
    /// `.aaguid` (a hyphenated UUID).
    #[schema(nullable)]
    pub aaguid: Option<String>,
    /// `.credential_device_type`: `single_device` or `multi_device` (backup eligible).
    pub device_type: String,
    /// `.credential_backed_up`.
    pub backed_up: bool,
    /// `.user_verified` at registration.
    pub user_verified: bool,
    /// The browser's transports at registration (hints; unknown ones are ignored).
    #[schema(nullable)]
    pub transports: Option<Vec<String>>,
    /// The WebAuthn user handle (16 bytes at Raptor), base64url.
    pub user_handle: String,
    #[schema(nullable)]
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    #[schema(nullable)]
    pub last_used_at: Option<DateTime<Utc>>,
}

/// The algorithms Queue accepts: those webauthn-rs verifies (its `COSEKey::verify_signature`).
/// EdDSA parses but cannot be verified; ES512 verifies nothing; PS256 and the rest are not read.
const SUPPORTED: [(COSEAlgorithm, &str); 3] =
    [(COSEAlgorithm::ES256, "ES256"), (COSEAlgorithm::ES384, "ES384"), (COSEAlgorithm::RS256, "RS256")];

/// COSE algorithm numbers by name, for the refusal (IANA's COSE Algorithms registry).
fn alg_name(n: i128) -> String {
    let name = match n {
        -7 => "ES256",
        -35 => "ES384",
        -36 => "ES512",
        -8 => "EdDSA",
        -257 => "RS256",
        -258 => "RS384",
        -259 => "RS512",
        -37 => "PS256",
        -38 => "PS384",
        -39 => "PS512",
        -65535 => "RS1",
        _ => "unknown",
    };
    format!("{name} ({n})")
}

/// A record's refusal reason.
type Refusal = String;

fn b64(field: &str, s: &str) -> std::result::Result<Vec<u8>, Refusal> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(s).map_err(|e| format!("{field} is not base64url: {e}"))
}

/// The COSE key through webauthn-rs's parser (serde_cbor_2, as webauthn-rs reads it at
/// registration), refused unless its algorithm is one webauthn-rs verifies.
fn cose_key(bytes: &[u8]) -> std::result::Result<(COSEKey, &'static str), Refusal> {
    let value: serde_cbor_2::Value =
        serde_cbor_2::from_slice(bytes).map_err(|e| format!("public_key is not CBOR: {e}"))?;
    let alg = match &value {
        serde_cbor_2::Value::Map(m) => match m.get(&serde_cbor_2::Value::Integer(3)) {
            Some(serde_cbor_2::Value::Integer(n)) => *n,
            _ => return Err("public_key is not a COSE key: no algorithm (label 3)".into()),
        },
        _ => return Err("public_key is not a COSE key: not a CBOR map".into()),
    };
    let Some((_, name)) = SUPPORTED.iter().find(|(a, _)| i128::from(*a as i32) == alg) else {
        return Err(format!("unsupported COSE algorithm {}: Queue verifies ES256, ES384 and RS256", alg_name(alg)));
    };
    let key = COSEKey::try_from(&value)
        .map_err(|e: WebauthnError| format!("public_key is not a valid {name} COSE key: {e}"))?;
    // webauthn-rs verifies with the key's curve: the algorithm must name the same one.
    let curve_fits = match &key.key {
        COSEKeyType::EC_EC2(k) => match key.type_ {
            COSEAlgorithm::ES256 => k.curve == ECDSACurve::SECP256R1,
            COSEAlgorithm::ES384 => k.curve == ECDSACurve::SECP384R1,
            _ => false,
        },
        COSEKeyType::RSA(_) => key.type_ == COSEAlgorithm::RS256,
        COSEKeyType::EC_OKP(_) => false,
    };
    if !curve_fits {
        return Err(format!("public_key: a {name} key on another curve or key type"));
    }
    Ok((key, name))
}

/// What the record converts to, before any database look-up.
struct Converted {
    cred_id: Vec<u8>,
    handle: Vec<u8>,
    passkey: Passkey,
    algorithm: &'static str,
    name: String,
}

/// The record as a webauthn-rs Passkey: every field py_webauthn kept that webauthn-rs has.
fn convert(r: &LegacyPasskey) -> std::result::Result<Converted, Refusal> {
    if r.legacy_id.is_empty() || !r.legacy_id.bytes().all(|b| b.is_ascii_digit()) || r.legacy_id.len() > 20 {
        return Err("legacy_id is not Raptor's row id (a decimal number)".into());
    }
    let cred_id = b64("credential_id", &r.credential_id)?;
    if cred_id.is_empty() || cred_id.len() > 1023 {
        return Err(format!("credential_id has {} bytes; WebAuthn allows 1 to 1023", cred_id.len()));
    }
    let handle = b64("user_handle", &r.user_handle)?;
    if handle.len() != 16 {
        // webauthn-rs carries user handles as UUIDs (16 bytes), as Raptor made them.
        return Err(format!("user_handle has {} bytes; Queue takes 16", handle.len()));
    }
    let (cred, algorithm) = cose_key(&b64("public_key", &r.public_key)?)?;
    let backup_eligible = match r.device_type.as_str() {
        "multi_device" => true,
        "single_device" if r.backed_up => return Err("backed_up is true for a single_device credential".into()),
        "single_device" => false,
        other => return Err(format!("device_type {other:?} is neither single_device nor multi_device")),
    };
    if let Some(a) = &r.aaguid {
        Uuid::parse_str(a).map_err(|e| format!("aaguid is not a UUID: {e}"))?;
    }
    let transports = r.transports.as_ref().map(|t| {
        t.iter()
            .filter_map(|s| s.parse::<AuthenticatorTransport>().ok())
            .filter(|t| *t != AuthenticatorTransport::Unknown)
            .collect::<Vec<_>>()
    });
    let credential = Credential {
        cred_id: cred_id.clone(),
        cred,
        counter: r.sign_count,
        transports,
        user_verified: r.user_verified,
        backup_eligible,
        backup_state: r.backed_up,
        // Queue's passkeys ask for user verification at every ceremony.
        registration_policy: UserVerificationPolicy::Required,
        extensions: RegisteredExtensions::none(),
        attestation: ParsedAttestation::default(),
        attestation_format: AttestationFormat::None,
    };
    Ok(Converted { cred_id, handle, passkey: credential.into(), algorithm, name: passkey_name(r.name.as_deref()) })
}

/// Raptor's name as a Queue passkey name (`fields::PASSKEY_NAME`): control characters become
/// spaces, trimmed, at most 100 characters; none or blank is "Passkey". A name is not worth a
/// lost passkey.
fn passkey_name(name: Option<&str>) -> String {
    let cleaned: String = name.unwrap_or("").chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let trimmed: String = cleaned.trim().chars().take(100).collect();
    let trimmed = trimmed.trim().to_string();
    if trimmed.is_empty() { "Passkey".into() } else { trimmed }
}

#[derive(diesel::Queryable)]
struct Owner {
    id: Uuid,
    tenant_id: String,
    handle: Option<Vec<u8>>,
}

#[derive(diesel::Queryable)]
struct Existing {
    id: Uuid,
    user_id: Uuid,
    cred_id: Vec<u8>,
    sign_count: i64,
    legacy_source: Option<serde_json::Value>,
    last_used_at: Option<DateTime<Utc>>,
}

/// Imports a batch in one transaction, each record in its own savepoint (a record that fails
/// in the database is refused, the others stay); a dry run rolls the whole batch back, so its
/// outcomes are those a real run would give.
#[tracing::instrument(skip_all, fields(records = records.len(), dry_run))]
pub async fn import(
    conn: &mut Conn,
    now: DateTime<Utc>,
    info: &RequestInfo,
    importer: &str,
    records: &[LegacyPasskey],
    dry_run: bool,
) -> Result<Vec<ImportResult>> {
    let mut results = Vec::with_capacity(records.len());
    let outcome = conn
        .transaction::<_, super::Error, _>(async |conn| {
            for r in records {
                let one =
                    conn.transaction::<_, super::Error, _>(async |c| import_one(c, now, info, importer, r).await).await;
                results.push(match one {
                    Ok(result) => result,
                    Err(super::Error::Db(diesel::result::Error::DatabaseError(kind, e))) => {
                        tracing::warn!(?kind, error = e.message(), "a legacy passkey's write failed");
                        ImportResult::refused(
                            &r.legacy_id,
                            format!("conflict while writing ({}); send it again", e.message()),
                        )
                    }
                    Err(e) => return Err(e),
                });
            }
            if dry_run { Err(diesel::result::Error::RollbackTransaction.into()) } else { Ok(()) }
        })
        .await;
    match outcome {
        Ok(()) => Ok(results),
        Err(super::Error::Db(diesel::result::Error::RollbackTransaction)) if dry_run => {
            Ok(results.into_iter().map(ImportResult::rolled_back).collect())
        }
        Err(e) => Err(e),
    }
}

/// One record: converted, checked against its user and the passkeys Queue has, then created,
/// updated (what changed at Raptor) or left unchanged (no write, no event).
async fn import_one(
    conn: &mut Conn,
    now: DateTime<Utc>,
    info: &RequestInfo,
    importer: &str,
    r: &LegacyPasskey,
) -> Result<ImportResult> {
    let refused = |reason: String| Ok(ImportResult::refused(&r.legacy_id, reason));
    let c = match convert(r) {
        Ok(c) => c,
        Err(reason) => return refused(reason),
    };
    let owner: Option<Owner> = user_rows::table
        .filter(user_rows::legacy_id.eq(&r.user_legacy_id))
        .select((user_rows::id, user_rows::tenant_id, user_rows::webauthn_user_handle))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    let Some(owner) = owner else {
        return refused(format!("unknown user legacy id {:?}: import the user first", r.user_legacy_id));
    };
    // Another user's handle: their legacy one, or their user id (what Queue's own registrations
    // carry).
    let as_id = Uuid::from_slice(&c.handle).unwrap_or_default();
    let holder: Option<Uuid> = user_rows::table
        .filter(user_rows::webauthn_user_handle.eq(&c.handle).or(user_rows::id.eq(as_id)))
        .filter(user_rows::id.ne(owner.id))
        .select(user_rows::id)
        .first(conn)
        .await
        .optional()?;
    if holder.is_some() {
        return refused("user_handle belongs to another user".into());
    }
    if owner.handle.as_ref().is_some_and(|h| *h != c.handle) {
        return refused("user_handle differs from the one this user's other passkeys carry".into());
    }
    let existing: Option<Existing> = pk::table
        .filter(pk::legacy_id.eq(&r.legacy_id))
        .select((pk::id, pk::user_id, pk::cred_id, pk::sign_count, pk::legacy_source, pk::last_used_at))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    match existing {
        Some(e) => update(conn, now, info, importer, r, &c, &owner, e).await,
        None => create(conn, now, info, importer, r, &c, &owner).await,
    }
}

fn to_json<T: Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| queue_platform::ApiError::internal(e).into())
}

fn actor(importer: &str) -> Party {
    Party::new("service", importer)
}

/// The non-secret facts of the record, for its audit event (no key, no credential id).
fn facts(r: &LegacyPasskey, c: &Converted, user_id: Uuid) -> serde_json::Value {
    serde_json::json!({
        "legacy_id": r.legacy_id,
        "user_legacy_id": r.user_legacy_id,
        "user_id": user_id,
        "algorithm": c.algorithm,
        "aaguid": r.aaguid,
        "device_type": r.device_type,
        "backed_up": r.backed_up,
        "user_verified": r.user_verified,
        "sign_count": r.sign_count,
        "name": c.name,
        "created_at": r.created_at,
    })
}

#[allow(clippy::too_many_arguments)]
async fn create(
    conn: &mut Conn,
    now: DateTime<Utc>,
    info: &RequestInfo,
    importer: &str,
    r: &LegacyPasskey,
    c: &Converted,
    owner: &Owner,
) -> Result<ImportResult> {
    let taken: Option<Uuid> =
        pk::table.filter(pk::cred_id.eq(&c.cred_id)).select(pk::id).first(conn).await.optional()?;
    if let Some(id) = taken {
        return Ok(ImportResult::refused(&r.legacy_id, format!("credential_id is already a Queue passkey ({id})")));
    }
    let id = Uuid::new_v4();
    prepared(diesel::insert_into(pk::table).values((
        pk::id.eq(id),
        pk::user_id.eq(owner.id),
        pk::cred_id.eq(&c.cred_id),
        pk::passkey.eq(to_json(&c.passkey)?),
        pk::sign_count.eq(i64::from(r.sign_count)),
        pk::name.eq(&c.name),
        pk::created_at.eq(r.created_at),
        pk::last_used_at.eq(r.last_used_at),
        pk::legacy_id.eq(&r.legacy_id),
        pk::legacy_source.eq(to_json(r)?),
    )))
    .execute(conn)
    .await?;
    if owner.handle.is_none() {
        diesel::update(user_rows::table.find(owner.id))
            .set((user_rows::webauthn_user_handle.eq(&c.handle), user_rows::updated_at.eq(now)))
            .execute(conn)
            .await?;
    }
    audit::record(
        conn,
        now,
        info,
        Event {
            tenant_id: &owner.tenant_id,
            actor: actor(importer),
            action: "auth.legacy.passkey.imported",
            target: Party::new("passkey", id.to_string()),
            payload: facts(r, c, owner.id),
        },
    )
    .await?;
    Ok(ImportResult::new(&r.legacy_id, Outcome::Created, Some(id), None))
}

/// The fields of two versions of the record that differ, by name.
fn changed_fields(before: &LegacyPasskey, after: &LegacyPasskey) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |name: &'static str, same: bool| {
        if !same {
            out.push(name);
        }
    };
    check("user_legacy_id", before.user_legacy_id == after.user_legacy_id);
    check("credential_id", before.credential_id == after.credential_id);
    check("public_key", before.public_key == after.public_key);
    check("user_handle", before.user_handle == after.user_handle);
    check("sign_count", before.sign_count == after.sign_count);
    check("aaguid", before.aaguid == after.aaguid);
    check("device_type", before.device_type == after.device_type);
    check("backed_up", before.backed_up == after.backed_up);
    check("user_verified", before.user_verified == after.user_verified);
    check("transports", before.transports == after.transports);
    check("name", before.name == after.name);
    check("created_at", before.created_at == after.created_at);
    check("last_used_at", before.last_used_at == after.last_used_at);
    out
}

/// The fields that make the credential: changed at Raptor under the same id, it is another one.
const IDENTITY: [&str; 4] = ["user_legacy_id", "credential_id", "public_key", "user_handle"];

#[allow(clippy::too_many_arguments)]
async fn update(
    conn: &mut Conn,
    now: DateTime<Utc>,
    info: &RequestInfo,
    importer: &str,
    r: &LegacyPasskey,
    c: &Converted,
    owner: &Owner,
    e: Existing,
) -> Result<ImportResult> {
    if e.user_id != owner.id || e.cred_id != c.cred_id {
        return Ok(ImportResult::refused(
            &r.legacy_id,
            format!("imported before as another user's or another credential ({}): not the same passkey", e.id),
        ));
    }
    let before: Option<LegacyPasskey> = e.legacy_source.and_then(|v| serde_json::from_value(v).ok());
    let changed = match &before {
        Some(b) => changed_fields(b, r),
        None => vec!["legacy_source"],
    };
    if changed.is_empty() {
        return Ok(ImportResult::new(&r.legacy_id, Outcome::Unchanged, Some(e.id), None));
    }
    if let Some(f) = changed.iter().find(|f| IDENTITY.contains(f)) {
        return Ok(ImportResult::refused(
            &r.legacy_id,
            format!("{f} changed at Raptor for an imported passkey ({}): not the same credential", e.id),
        ));
    }
    // Signed in at Queue since: its counter and last use may be ahead of Raptor's, never back.
    let sign_count = e.sign_count.max(i64::from(r.sign_count));
    let mut credential: Credential = c.passkey.clone().into();
    credential.counter = u32::try_from(sign_count).unwrap_or(credential.counter);
    let passkey: Passkey = credential.into();
    let last_used_at = e.last_used_at.max(r.last_used_at);
    let name_changed = changed.contains(&"name");
    prepared(diesel::update(pk::table.find(e.id)).set((
        pk::passkey.eq(to_json(&passkey)?),
        pk::sign_count.eq(sign_count),
        pk::last_used_at.eq(last_used_at),
        pk::created_at.eq(r.created_at),
        pk::legacy_source.eq(to_json(r)?),
    )))
    .execute(conn)
    .await?;
    // The name only when Raptor's changed (a rename at Queue stays otherwise).
    if name_changed {
        diesel::update(pk::table.find(e.id)).set(pk::name.eq(&c.name)).execute(conn).await?;
    }
    let reason = format!("changed at Raptor: {}", changed.join(", "));
    let mut payload = facts(r, c, owner.id);
    payload["changed"] = serde_json::json!(changed);
    audit::record(
        conn,
        now,
        info,
        Event {
            tenant_id: &owner.tenant_id,
            actor: actor(importer),
            action: "auth.legacy.passkey.updated",
            target: Party::new("passkey", e.id.to_string()),
            payload,
        },
    )
    .await?;
    Ok(ImportResult::new(&r.legacy_id, Outcome::Updated, Some(e.id), Some(reason)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_readable() {
        assert_eq!(passkey_name(None), "Passkey");
        assert_eq!(passkey_name(Some("  ")), "Passkey");
        assert_eq!(passkey_name(Some("a\nb")), "a b");
        assert_eq!(passkey_name(Some(&"x".repeat(300))).len(), 100);
    }

    /// A key as Raptor's stand-in authenticator encodes it (cbor2, `legacy/raptor/tests/
    /// authenticator.py`) and py_webauthn stores it: read by webauthn-rs's parser.
    #[test]
    fn a_key_encoded_by_python_parses() {
        let bytes = b64(
            "public_key",
            "pQECAyYgASFYIPIfziB7fvgCaP0uSnsQ73lu2AuKwC7R9Q7YBc6l4AjQIlgg7NYsf8z81omwbrt058b4uv3NgfqfhNeuRPkCnzodZ0Y",
        )
        .expect("base64url");
        let (key, name) = cose_key(&bytes).expect("an ES256 key");
        assert_eq!((key.type_, name), (COSEAlgorithm::ES256, "ES256"));
        // Padded base64url (Python's urlsafe_b64encode keeps the padding) reads the same.
        assert_eq!(b64("k", "AQ==").expect("padded"), b64("k", "AQ").expect("unpadded"));
        assert!(cose_key(&bytes[..bytes.len() - 1]).expect_err("truncated").starts_with("public_key is not CBOR"));
    }

    #[test]
    fn algorithms_are_named() {
        assert_eq!(alg_name(-8), "EdDSA (-8)");
        assert_eq!(alg_name(-7), "ES256 (-7)");
    }
}
