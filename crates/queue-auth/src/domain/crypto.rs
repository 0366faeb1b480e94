//! Secrets: random tokens, their hashes, the pepper that keys the HMACs, and constant-time
//! comparison. Nothing here is novel: SHA-256 and HMAC-SHA-256 from RustCrypto, randomness from
//! aws-lc-rs.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // aws-lc's DRBG does not fail once initialised; a failure here is unrecoverable.
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        panic!("the system random number generator failed");
    }
    b
}

/// The length of every token [`new_token`] makes; any other length cannot be one of ours.
pub const TOKEN_LEN: usize = 43;

/// A 256-bit random token as text (base64url, [`TOKEN_LEN`] characters).
pub fn new_token() -> Zeroizing<String> {
    Zeroizing::new(URL_SAFE_NO_PAD.encode(random_bytes::<32>()))
}

/// Session tokens carry 256 random bits, so an unkeyed SHA-256 is enough at rest: nobody can
/// search that space from a leaked hash.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The server pepper: keys the HMACs of short secrets (8-digit codes, backup codes) so a copy
/// of the database alone cannot brute-force them.
#[derive(Clone)]
pub struct Pepper(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(redacted)")
    }
}

impl Pepper {
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let text =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?);
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| format!("{} is not base64 (`queuectl keys init` writes one)", path.display()))?;
        if bytes.len() < 32 {
            return Err(format!("{} holds fewer than 32 bytes", path.display()));
        }
        Ok(Self(Zeroizing::new(bytes)))
    }

    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// HMAC-SHA-256 of `purpose` and `data`; the purpose keeps one kind of secret from being
    /// accepted as another.
    pub fn mac(&self, purpose: &str, data: &[u8]) -> Vec<u8> {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        m.update(purpose.as_bytes());
        m.update(&[0]);
        m.update(data);
        m.finalize().into_bytes().to_vec()
    }
}

/// An 8-digit code, uniformly drawn.
pub fn numeric_code() -> Zeroizing<String> {
    loop {
        let n = u32::from_le_bytes(random_bytes::<4>());
        // Rejection sampling: no modulo bias.
        if n < 4_000_000_000 {
            return Zeroizing::new(format!("{:08}", n % 100_000_000));
        }
    }
}

/// Backup codes: 13 characters of Crockford base32 (65 bits), shown as `xxxx-xxxx-xxxxx`.
/// No I, L, O or U, so nothing is ambiguous when typed; input is normalised by [`normalise_backup_code`].
const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

pub fn backup_code() -> Zeroizing<String> {
    let bytes = random_bytes::<9>();
    let mut bits: u128 = 0;
    for b in bytes {
        bits = (bits << 8) | u128::from(b);
    }
    let mut raw = String::with_capacity(13);
    for i in 0..13 {
        let idx = ((bits >> (i * 5)) & 31) as usize;
        raw.push(CROCKFORD[idx] as char);
    }
    Zeroizing::new(format!("{}-{}-{}", &raw[0..4], &raw[4..8], &raw[8..13]))
}

/// Lower case, separators and spaces dropped, look-alikes mapped (o→0, i/l→1); `None` if what
/// is left is not 13 base32 characters.
pub fn normalise_backup_code(input: &str) -> Option<Zeroizing<String>> {
    let mut out = Zeroizing::new(String::with_capacity(13));
    for c in input.chars() {
        let c = c.to_ascii_lowercase();
        let c = match c {
            '-' | ' ' => continue,
            'o' => '0',
            'i' | 'l' => '1',
            c => c,
        };
        if !CROCKFORD.contains(&(c as u8)) || !c.is_ascii() {
            return None;
        }
        out.push(c);
    }
    (out.len() == 13).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_their_shapes() {
        let c = numeric_code();
        assert!(c.len() == 8 && c.bytes().all(|b| b.is_ascii_digit()));
        let b = backup_code();
        assert_eq!(b.len(), 15);
        let n = normalise_backup_code(&b.to_uppercase()).expect("normalises");
        assert_eq!(n.as_str(), b.replace('-', ""));
        assert!(normalise_backup_code("short").is_none());
        assert_eq!(new_token().len(), TOKEN_LEN);
    }

    #[test]
    fn the_mac_depends_on_pepper_and_purpose() {
        let a = Pepper::from_bytes(&[1; 32]);
        let b = Pepper::from_bytes(&[2; 32]);
        assert_ne!(a.mac("code", b"1"), b.mac("code", b"1"));
        assert_ne!(a.mac("code", b"1"), a.mac("link", b"1"));
        assert!(ct_eq(&a.mac("x", b"y"), &a.mac("x", b"y")));
    }
}
