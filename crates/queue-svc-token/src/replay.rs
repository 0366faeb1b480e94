//! One use per token where a use changes something.
//!
//! A service token is a bearer credential: whoever copies one (from a log line, a proxy, a
//! captured request) can send it again until it expires. For reads that is harmless and the
//! verified-token cache makes reuse cheap; for a write it would repeat or forge the write. So a
//! state-changing route remembers each token it accepted, by `(iss, jti)`, until the token can
//! no longer verify (`exp` + leeway), and refuses it the second time.
//!
//! Memory is bounded twice: a token lives at most [`crate::MAX_TTL_SECS`] (+ leeway), after which
//! its entry is dropped, and the set holds at most `max_entries`. When it is full of entries
//! that have not expired, new tokens are refused rather than old ones forgotten: forgetting
//! would re-open exactly the replay this exists to stop. Each replica remembers its own tokens;
//! replicas do not share (a token replayed to another replica is accepted there once).

use sha2::{Digest, Sha256};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::sync::Mutex;

use crate::error::TokenError;

/// What the set stores per token: the first 16 bytes of SHA-256(iss ‖ 0 ‖ jti). Fixed size,
/// whatever length of `jti` a caller sends; 128 bits are far beyond any chance collision.
type Key = [u8; 16];

#[derive(Default)]
struct Seen {
    keys: HashSet<Key>,
    /// The same keys ordered by when they may be forgotten, so expired ones go in O(log n).
    by_expiry: BinaryHeap<Reverse<(u64, Key)>>,
}

/// The `(iss, jti)` pairs accepted on state-changing routes and not yet expired.
pub struct ReplayGuard {
    seen: Mutex<Seen>,
    max_entries: usize,
}

impl ReplayGuard {
    pub fn new(max_entries: usize) -> Self {
        Self { seen: Mutex::new(Seen::default()), max_entries }
    }

    /// Records the first use of `(issuer, jti)`, which stays remembered until `forget_after`
    /// (Unix seconds). A second use before then is [`TokenError::Replayed`]; a full set of live
    /// entries is [`TokenError::ReplayCacheFull`]. Check and record are one step, so of two
    /// concurrent uses exactly one wins.
    pub fn first_use(&self, issuer: &str, jti: &str, forget_after: u64, now: u64) -> Result<(), TokenError> {
        let key = key(issuer, jti);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        forget_expired(&mut seen, now);
        if seen.keys.contains(&key) {
            return Err(TokenError::Replayed);
        }
        if seen.keys.len() >= self.max_entries {
            return Err(TokenError::ReplayCacheFull);
        }
        seen.keys.insert(key);
        seen.by_expiry.push(Reverse((forget_after, key)));
        Ok(())
    }

    /// How many tokens are remembered now.
    pub fn len(&self) -> usize {
        self.seen.lock().map(|s| s.keys.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn forget_expired(seen: &mut Seen, now: u64) {
    while let Some(Reverse((until, key))) = seen.by_expiry.peek().copied() {
        if until > now {
            break;
        }
        seen.by_expiry.pop();
        seen.keys.remove(&key);
    }
}

fn key(issuer: &str, jti: &str) -> Key {
    let mut h = Sha256::new();
    h.update(issuer.as_bytes());
    h.update([0u8]);
    h.update(jti.as_bytes());
    let digest = h.finalize();
    let mut k = [0u8; 16];
    k.copy_from_slice(&digest[..16]);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_is_accepted_once_until_it_expires() {
        let g = ReplayGuard::new(10);
        assert_eq!(g.first_use("auth", "j1", 100, 10), Ok(()));
        assert_eq!(g.first_use("auth", "j1", 100, 50), Err(TokenError::Replayed));
        // Another issuer's jti of the same text is another token.
        assert_eq!(g.first_use("raptor", "j1", 100, 50), Ok(()));
        // Once the token could no longer verify, the entry goes.
        assert_eq!(g.first_use("auth", "j2", 120, 100), Ok(()));
        assert_eq!(g.len(), 1, "both j1 entries forgotten at 100");
    }

    #[test]
    fn a_full_set_refuses_new_tokens_instead_of_forgetting_live_ones() {
        let g = ReplayGuard::new(2);
        assert_eq!(g.first_use("auth", "a", 100, 0), Ok(()));
        assert_eq!(g.first_use("auth", "b", 200, 0), Ok(()));
        assert_eq!(g.first_use("auth", "c", 200, 10), Err(TokenError::ReplayCacheFull));
        assert_eq!(g.first_use("auth", "a", 100, 10), Err(TokenError::Replayed), "still remembered");
        // When the earliest expires, there is room again.
        assert_eq!(g.first_use("auth", "c", 200, 100), Ok(()));
    }
}
