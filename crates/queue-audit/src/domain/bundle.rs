//! Verification with no secret (issue 20, item 4; docs/audit-chain.md, "Bundles"): one event,
//! its inclusion proof and a signed checkpoint, in one JSON document anyone checks offline with
//! the checkpoint's public key alone — no database, no data key, no call to Queue.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use signed_note::{Note, Verifier, VerifierList};
use tlog_tiles::tlog::{self, Hash};

use crate::domain::keys::verify_signature;
use crate::domain::merkle;
use crate::domain::note::{ECDSA_TYPE, spki};
use crate::domain::verify::EventRecord;

/// The bundle format's name, first in every bundle.
pub const FORMAT: &str = "queue-audit-bundle/v1";

/// One event with what proves it is in the log.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format: String,
    /// The event as exported (its canonical form is the leaf).
    pub event: EventRecord,
    /// `seq - 1`.
    pub leaf_index: u64,
    /// The size of the tree the proof is for: the checkpoint's.
    pub tree_size: u64,
    /// The inclusion proof, standard base64, leaf side first.
    pub inclusion: Vec<String>,
    /// The signed checkpoint (C2SP signed note) the proof leads to.
    pub checkpoint: String,
}

/// What a bundle proves, when it does.
#[derive(Debug, PartialEq, Eq)]
pub struct Proven {
    pub origin: String,
    pub tree_size: u64,
    pub seq: i64,
    pub tenant_id: String,
    pub key: String,
}

/// A signed-note verifier key of type 0x02 (ECDSA P-256): `name+id+base64(0x02 || SPKI DER)`.
pub struct EcdsaVerifier {
    name: String,
    id: u32,
    point: Vec<u8>,
}

impl EcdsaVerifier {
    /// Parses a verifier key; says what is wrong with one that is not ours to check.
    pub fn parse(vkey: &str) -> Result<Self, String> {
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("a verifier key is <name>+<id>+<base64 key>".into());
        };
        let id = u32::from_str_radix(id, 16).map_err(|_| "the key id is not 8 hex digits".to_string())?;
        let key = base64::engine::general_purpose::STANDARD.decode(key).map_err(|_| "the key is not base64")?;
        if key.first() != Some(&ECDSA_TYPE) {
            return Err("not an ECDSA P-256 key (signed-note type 0x02)".into());
        }
        let point = key.get(27..).filter(|p| p.len() == 65).ok_or("not a P-256 SubjectPublicKeyInfo")?.to_vec();
        if spki(&point) != key[1..] {
            return Err("not a P-256 SubjectPublicKeyInfo".into());
        }
        if signed_note::key_id(name, &key) != id {
            return Err("the key id does not match the name and key".into());
        }
        Ok(Self { name: name.to_string(), id, point })
    }
}

impl Verifier for EcdsaVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        verify_signature(&self.point, msg, sig)
    }
}

/// Checks a bundle against the verifier key `vkey`: the note is signed by that key, it is a
/// checkpoint of the event's tenant's log, and the event is leaf `seq - 1` of its tree.
pub fn verify(bundle: &Bundle, vkey: &str) -> Result<Proven, String> {
    if bundle.format != FORMAT {
        return Err(format!("not a {FORMAT} bundle ({:?})", bundle.format));
    }
    let verifier = EcdsaVerifier::parse(vkey)?;
    let key = format!("{}+{:08x}", verifier.name, verifier.id);
    let note = Note::from_bytes(bundle.checkpoint.as_bytes())
        .map_err(|e| format!("the checkpoint is not a signed note: {e}"))?;
    note.verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|e| format!("the checkpoint is not signed by {key}: {e}"))?;
    let checkpoint =
        tlog_tiles::Checkpoint::from_bytes(note.text()).map_err(|e| format!("the note is not a checkpoint: {e}"))?;
    let e = &bundle.event;
    if !checkpoint.origin().ends_with(&format!("/{}", e.tenant_id)) {
        return Err(format!("the checkpoint is of log {}, not of tenant {}", checkpoint.origin(), e.tenant_id));
    }
    if checkpoint.size() != bundle.tree_size {
        return Err(format!(
            "the proof is for a tree of {}, the checkpoint of {}",
            bundle.tree_size,
            checkpoint.size()
        ));
    }
    let index = u64::try_from(e.seq - 1).map_err(|_| format!("seq {} is not an event's", e.seq))?;
    if index != bundle.leaf_index {
        return Err(format!("leaf index {} is not seq {} - 1", bundle.leaf_index, e.seq));
    }
    let proof: Vec<Hash> = bundle
        .inclusion
        .iter()
        .map(|h| {
            let raw = base64::engine::general_purpose::STANDARD.decode(h).map_err(|_| "a proof hash is not base64")?;
            let raw: [u8; 32] = raw.try_into().map_err(|_| "a proof hash is not 32 bytes")?;
            Ok::<_, String>(Hash(raw))
        })
        .collect::<Result<_, _>>()?;
    tlog::check_record(&proof, checkpoint.size(), *checkpoint.hash(), index, merkle::leaf_hash(e)).map_err(|_| {
        format!("event seq {} is not in the log the checkpoint signs (the proof does not verify)", e.seq)
    })?;
    Ok(Proven {
        origin: checkpoint.origin().to_string(),
        tree_size: checkpoint.size(),
        seq: e.seq,
        tenant_id: e.tenant_id.clone(),
        key,
    })
}

/// The bundle of event `seq` of `tenant` against the tenant's newest signed checkpoint.
pub async fn build(db: &queue_platform::db::Db, tenant: &str, seq: i64) -> Result<Bundle, String> {
    let note = crate::domain::checkpoint::latest_note(db, tenant)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("tenant {tenant} has no signed checkpoint yet"))?;
    let parsed = Note::from_bytes(note.as_bytes()).map_err(|e| format!("the stored checkpoint: {e}"))?;
    let size =
        tlog_tiles::Checkpoint::from_bytes(parsed.text()).map_err(|e| format!("the stored checkpoint: {e}"))?.size();
    let wanted =
        u64::try_from(seq).ok().filter(|&s| s >= 1).ok_or_else(|| format!("seq must be at least 1, not {seq}"))?;
    if wanted > size {
        return Err(format!(
            "the newest checkpoint of tenant {tenant} covers {size} events, not seq {seq} yet: try again after the next checkpoint"
        ));
    }
    let event = crate::domain::verify::page_between(db, tenant, seq - 1, seq, 1)
        .await
        .map_err(|e| e.to_string())?
        .pop()
        .ok_or_else(|| format!("tenant {tenant} has no event {seq}"))?;
    let proof = merkle::inclusion(db, tenant, wanted, size).await.map_err(|e| e.to_string())?;
    Ok(Bundle {
        format: FORMAT.to_string(),
        event,
        leaf_index: wanted - 1,
        tree_size: size,
        inclusion: proof.iter().map(|h| base64::engine::general_purpose::STANDARD.encode(h.0)).collect(),
        checkpoint: note,
    })
}
