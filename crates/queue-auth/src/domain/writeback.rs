//! What auth writes back to Raptor after a cutover (issue 19, docs/legacy-import.md
//! "Write-back"): rows of `auth.legacy_writeback`, each written in the transaction of the change
//! it reflects, for users that came from Raptor (a `legacy_id`) only. The relay
//! (`queue_platform::writeback`) sends them.
//!
//! * a passkey registered at Queue → `POST /passkeys`; Raptor's id becomes the passkey's
//!   `legacy_id` and what Raptor now holds its `legacy_source`, so the next import finds it
//!   unchanged instead of importing it again;
//! * a passkey's counter and last use after a sign-in → `PATCH /passkeys/<id>` (only the latest
//!   of a passkey goes);
//! * a passkey removed → `DELETE /passkeys/<id>`;
//! * an imported session revoked (sign-out, revoke one, others, all) → `POST /sessions/<id>/revoke`;
//! * an imported backup code redeemed → `POST /backup-codes/<id>/use`.
//!
//! Each body also names the Queue record (`queue_id`), which Raptor keeps in its audit event.
//!
//! Sessions created at Queue and backup codes generated at Queue are not written back: Raptor
//! cannot verify Queue's hashes (after a rollback, people sign in at Raptor with their passkeys).

use base64::Engine;
use chrono::{DateTime, SubsecRound, Utc};
use diesel::{OptionalExtension, QueryDsl};
use diesel_async::RunQueryDsl;
use queue_platform::writeback::{self, Change, LEGACY_ID, OnDelivered};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use uuid::Uuid;
use webauthn_rs::prelude::{COSEKey, COSEKeyType, Credential, Passkey};

use super::{Conn, Result};
use crate::db::schema::auth::users as user_rows;

/// The outbox.
pub const TABLE: &str = "auth.legacy_writeback";

const PASSKEY_CREATED: &str = "passkey.created";
const PASSKEY_USED: &str = "passkey.used";

/// What the relay runs once a row is delivered (`$1` passkey id, `$2` Raptor's id, `$3` body).
pub const STATEMENTS: &[OnDelivered] = &[
    // Raptor's id and record, as `legacy_passkeys` would have imported them: the next import
    // compares Raptor's record with this one and finds it unchanged.
    OnDelivered {
        name: PASSKEY_CREATED,
        sql: "UPDATE auth.passkeys SET legacy_id = $2, \
              legacy_source = ($3 - 'customer_id' - 'queue_id') || jsonb_build_object('legacy_id', $2::text, \
                'user_legacy_id', $3->>'customer_id', 'last_used_at', NULL::text) \
              WHERE id = $1 AND legacy_id IS NULL AND $2 IS NOT NULL",
    },
    // Raptor now holds this counter and last use.
    OnDelivered {
        name: PASSKEY_USED,
        sql: "UPDATE auth.passkeys SET legacy_source = legacy_source || \
                jsonb_strip_nulls(jsonb_build_object('sign_count', $3->'sign_count', 'last_used_at', $3->'last_used_at')) \
              WHERE id = $1 AND legacy_source IS NOT NULL",
    },
];

/// Raptor's ids are its row ids: a number when the legacy id is one (always, from the import).
fn raptor_id(legacy_id: &str) -> Value {
    legacy_id.parse::<i64>().map_or_else(|_| Value::from(legacy_id), Value::from)
}

/// Times as Raptor's PostgreSQL keeps them (microseconds), RFC 3339.
fn time(t: DateTime<Utc>) -> Value {
    Value::from(t.trunc_subsecs(6).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The user's Raptor id, if they came from Raptor.
pub async fn user_legacy_id(conn: &mut Conn, user_id: Uuid) -> Result<Option<String>> {
    let id: Option<Option<String>> =
        user_rows::table.find(user_id).select(user_rows::legacy_id).first(conn).await.optional()?;
    Ok(id.flatten())
}

async fn enqueue(conn: &mut Conn, change: Change) -> Result<()> {
    writeback::enqueue(conn, TABLE, &change).await?;
    Ok(())
}

fn passkey_key(id: Uuid) -> String {
    format!("passkey:{id}")
}

/// The passkey's path at Raptor: by its id when known, else filled in when its create is answered.
fn passkey_path(legacy_id: Option<&str>, tail: &str) -> String {
    format!("/internal/queue/v1/passkeys/{}{tail}", legacy_id.unwrap_or(LEGACY_ID))
}

/// A COSE key as CBOR (RFC 9053 labels), what py_webauthn stores as `credential_public_key`.
pub fn cose_bytes(key: &COSEKey) -> Result<Vec<u8>> {
    use serde_cbor_2::Value as C;
    let mut m: BTreeMap<C, C> = BTreeMap::new();
    let int = |n: i128| C::Integer(n);
    m.insert(int(3), int(i128::from(key.type_ as i32)));
    match &key.key {
        COSEKeyType::EC_EC2(k) => {
            m.insert(int(1), int(2));
            m.insert(int(-1), int(k.curve.clone() as i128));
            m.insert(int(-2), C::Bytes(k.x.clone()));
            m.insert(int(-3), C::Bytes(k.y.clone()));
        }
        COSEKeyType::EC_OKP(k) => {
            m.insert(int(1), int(1));
            m.insert(int(-1), int(k.curve.clone() as i128));
            m.insert(int(-2), C::Bytes(k.x.clone()));
        }
        COSEKeyType::RSA(k) => {
            m.insert(int(1), int(3));
            m.insert(int(-1), C::Bytes(k.n.clone()));
            m.insert(int(-2), C::Bytes(k.e.to_vec()));
        }
    }
    serde_cbor_2::to_vec(&C::Map(m))
        .map_err(|e| queue_platform::ApiError::internal(anyhow::anyhow!("cannot encode a COSE key: {e}")).into())
}

/// What a passkey registered at Queue is at Raptor: the body of `POST /passkeys`.
pub struct NewPasskey<'a> {
    pub id: Uuid,
    pub user_id: Uuid,
    pub cred_id: &'a [u8],
    pub passkey: &'a Passkey,
    pub user_handle: Uuid,
    pub name: &'a str,
    pub created_at: DateTime<Utc>,
}

/// A passkey registered at Queue by a user from Raptor.
pub async fn passkey_registered(conn: &mut Conn, p: NewPasskey<'_>) -> Result<()> {
    let Some(customer) = user_legacy_id(conn, p.user_id).await? else { return Ok(()) };
    let cred: Credential = p.passkey.clone().into();
    let transports: Option<Vec<Value>> = cred
        .transports
        .as_ref()
        .map(|t| t.iter().filter_map(|t| serde_json::to_value(t).ok()).filter(|v| v != "unknown").collect());
    let body = json!({
        "customer_id": raptor_id(&customer),
        "credential_id": b64(p.cred_id),
        "public_key": b64(&cose_bytes(&cred.cred)?),
        "sign_count": cred.counter,
        "aaguid": Value::Null,
        "device_type": if cred.backup_eligible { "multi_device" } else { "single_device" },
        "backed_up": cred.backup_state,
        "user_verified": cred.user_verified,
        "transports": transports,
        "user_handle": b64(p.user_handle.as_bytes()),
        "name": p.name,
        "created_at": time(p.created_at),
        "queue_id": p.id,
    });
    enqueue(
        conn,
        Change::new("passkey.create", "POST", "/internal/queue/v1/passkeys".into(), passkey_key(p.id))
            .body(body)
            .on_delivered(PASSKEY_CREATED, p.id),
    )
    .await
}

/// A passkey signed in with: its counter and last use (a newer one supersedes a pending one).
pub async fn passkey_used(
    conn: &mut Conn,
    user_id: Uuid,
    id: Uuid,
    legacy_id: Option<&str>,
    sign_count: i64,
    at: DateTime<Utc>,
) -> Result<()> {
    if user_legacy_id(conn, user_id).await?.is_none() {
        return Ok(());
    }
    enqueue(
        conn,
        Change::new("passkey.update", "PATCH", passkey_path(legacy_id, ""), passkey_key(id))
            .body(json!({"sign_count": sign_count, "last_used_at": time(at), "queue_id": id}))
            .coalesce(format!("passkey-use:{id}"))
            .on_delivered(PASSKEY_USED, id),
    )
    .await
}

/// A passkey removed at Queue.
pub async fn passkey_removed(conn: &mut Conn, user_id: Uuid, id: Uuid, legacy_id: Option<&str>) -> Result<()> {
    if user_legacy_id(conn, user_id).await?.is_none() {
        return Ok(());
    }
    enqueue(
        conn,
        Change::new("passkey.delete", "DELETE", passkey_path(legacy_id, ""), passkey_key(id))
            .body(json!({"queue_id": id})),
    )
    .await
}

/// An imported session revoked at Queue (a session made at Queue has no `legacy_id`).
pub async fn session_revoked(conn: &mut Conn, id: Uuid, legacy_id: &str, at: DateTime<Utc>) -> Result<()> {
    enqueue(
        conn,
        Change::new(
            "session.revoke",
            "POST",
            format!("/internal/queue/v1/sessions/{legacy_id}/revoke"),
            format!("session:{legacy_id}"),
        )
        .body(json!({"revoked_at": time(at), "queue_id": id})),
    )
    .await
}

/// An imported backup code redeemed at Queue.
pub async fn backup_code_used(conn: &mut Conn, id: Uuid, legacy_id: &str, at: DateTime<Utc>) -> Result<()> {
    enqueue(
        conn,
        Change::new(
            "backup_code.use",
            "POST",
            format!("/internal/queue/v1/backup-codes/{legacy_id}/use"),
            format!("backup_code:{legacy_id}"),
        )
        .body(json!({"used_at": time(at), "queue_id": id})),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use webauthn_rs::prelude::{COSEAlgorithm, COSEEC2Key, ECDSACurve};

    const X: [u8; 32] = [
        0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4, 0x40, 0xf2, 0x77, 0x03,
        0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45, 0xd8, 0x98, 0xc2, 0x96,
    ];
    const Y: [u8; 32] = [
        0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f, 0x9e, 0x16, 0x2b, 0xce,
        0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68, 0x37, 0xbf, 0x51, 0xf5,
    ];

    #[test]
    // `x`/`y` are `Vec<u8>` or webauthn-rs's base64 bytes depending on the features the workspace
    // unifies: `.into()` is needed in one build and a no-op in the other.
    #[allow(clippy::useless_conversion)]
    fn a_cose_key_survives_encoding() {
        let key = COSEKey {
            type_: COSEAlgorithm::ES256,
            // P-256's generator: a point webauthn-rs accepts.
            key: COSEKeyType::EC_EC2(COSEEC2Key {
                curve: ECDSACurve::SECP256R1,
                x: X.to_vec().into(),
                y: Y.to_vec().into(),
            }),
        };
        let bytes = cose_bytes(&key).expect("encodes");
        let value: serde_cbor_2::Value = serde_cbor_2::from_slice(&bytes).expect("CBOR");
        assert_eq!(COSEKey::try_from(&value).expect("parses"), key);
    }

    #[test]
    fn raptor_ids_are_numbers() {
        assert_eq!(raptor_id("42"), json!(42));
        assert_eq!(raptor_id("x"), json!("x"));
        let t = DateTime::parse_from_rfc3339("2026-12-07T10:00:00.123456789Z").expect("time").to_utc();
        assert_eq!(time(t), json!("2026-12-07T10:00:00.123456Z"));
    }
}
