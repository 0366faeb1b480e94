//! Checkpoints as C2SP signed notes (issue 20, item 3; docs/audit-chain.md, "Checkpoints as
//! signed notes"): c2sp.org/tlog-checkpoint (origin, tree size, root hash) over
//! c2sp.org/signed-note, signed with the audit checkpoint key (ECDSA P-256, in KMS in aws-kms
//! mode), signature type 0x02. The formats are the maintained crates' (`tlog_tiles::Checkpoint`,
//! `signed_note::{Note, Signature, key_id}`); only the ECDSA signature comes from our key
//! provider, because the crate's `Signer` is synchronous and KMS is not.
//!
//! - origin: `<name>/<tenant_id>`, one log per tenant; `<name>` is `chain.checkpoint_origin`.
//! - key name: `<name>`; key ID: the first 4 bytes of SHA-256(name || "\n" || 0x02 || SPKI DER).
//! - signature: the key ID (4 bytes, big-endian) then the DER ECDSA signature of the note text.
//! - verifier key (`GET /api/v1/audit/checkpoint-keys`): `<name>+<key ID, 8 hex>+<base64(0x02 ||
//!   SPKI DER)>`.

use base64::Engine as _;
use signed_note::{Note, Signature};
use tlog_tiles::tlog::Hash;

/// The signed-note signature type of ECDSA (c2sp.org/signed-note, "Signature types").
pub const ECDSA_TYPE: u8 = 0x02;

/// The DER prefix of a P-256 SubjectPublicKeyInfo before the 65-byte uncompressed point.
const SPKI_P256_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    #[error("a checkpoint note cannot be made: {0}")]
    Format(String),
}

/// A P-256 public point (65 bytes, uncompressed) as SubjectPublicKeyInfo DER.
pub fn spki(point: &[u8]) -> Vec<u8> {
    let mut out = SPKI_P256_PREFIX.to_vec();
    out.extend_from_slice(point);
    out
}

/// The signed-note key bytes of an ECDSA key: 0x02 || SPKI DER.
fn key_bytes(point: &[u8]) -> Vec<u8> {
    let mut out = vec![ECDSA_TYPE];
    out.extend_from_slice(&spki(point));
    out
}

/// The key ID of the checkpoint key `point` under `name`.
pub fn key_id(name: &str, point: &[u8]) -> u32 {
    signed_note::key_id(name, &key_bytes(point))
}

/// The verifier key in the signed-note key format: `name+id+base64(0x02 || SPKI)`.
pub fn verifier_key(name: &str, point: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(key_bytes(point));
    format!("{name}+{:08x}+{encoded}", key_id(name, point))
}

/// A tenant's log origin.
pub fn origin(name: &str, tenant: &str) -> String {
    format!("{name}/{tenant}")
}

/// The checkpoint body (the text the signature covers): origin, size and root, each on a line.
pub fn body(origin: &str, size: u64, root: &Hash) -> Result<Vec<u8>, NoteError> {
    let checkpoint = tlog_tiles::Checkpoint::new(origin, size, *root, "")
        .map_err(|e| NoteError::Format(format!("{e} (origin {origin:?})")))?;
    Ok(checkpoint.to_bytes())
}

/// The signed note: `body`, a blank line, and the signature line of key `name`/`point` with the
/// DER signature `der` of `body`.
pub fn signed(body: &[u8], name: &str, point: &[u8], der: Vec<u8>) -> Result<String, NoteError> {
    let signature = Signature::new(name.to_string(), key_id(name, point), der)
        .map_err(|e| NoteError::Format(format!("signature line: {e}")))?;
    let note = Note::new(body, &[signature]).map_err(|e| NoteError::Format(format!("note: {e}")))?;
    String::from_utf8(note.to_bytes()).map_err(|e| NoteError::Format(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use sha2::Digest;

    #[test]
    fn a_note_is_the_checkpoint_then_a_signature_line_of_the_key_id_and_der() {
        let point = [4u8; 65];
        let root = Hash([7u8; 32]);
        let b = body(&origin("audit.queue.test", "acme"), 42, &root).unwrap();
        let root_b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(String::from_utf8(b.clone()).unwrap(), format!("audit.queue.test/acme\n42\n{root_b64}\n"));
        let note = signed(&b, "audit.queue.test", &point, vec![0x30, 0x06, 1, 2, 3, 4, 5, 6]).unwrap();
        let (text, sig) = note.split_once("\n\n").unwrap();
        assert_eq!(format!("{text}\n").as_bytes(), b.as_slice());
        let line = sig.strip_prefix("\u{2014} audit.queue.test ").unwrap().trim_end();
        let raw = base64::engine::general_purpose::STANDARD.decode(line).unwrap();
        assert_eq!(&raw[4..], &[0x30, 0x06, 1, 2, 3, 4, 5, 6]);
        // The key ID from the spec's recipe, by hand.
        let mut h = sha2::Sha256::new();
        h.update(b"audit.queue.test\n");
        h.update([ECDSA_TYPE]);
        h.update(spki(&point));
        assert_eq!(&raw[..4], &h.finalize()[..4]);
        let vkey = verifier_key("audit.queue.test", &point);
        assert!(vkey.starts_with(&format!("audit.queue.test+{}+", crate::domain::chain::hex(&raw[..4]))), "{vkey}");
    }

    #[test]
    fn a_name_with_a_space_or_plus_is_refused() {
        let b = body("o", 1, &Hash([0; 32])).unwrap();
        assert!(signed(&b, "bad name", &[4; 65], vec![1]).is_err());
        assert!(signed(&b, "bad+name", &[4; 65], vec![1]).is_err());
        assert!(body("", 1, &Hash([0; 32])).is_err());
    }
}
