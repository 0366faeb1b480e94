//! Raptor's backup-code hashes: `werkzeug.security.generate_password_hash` output, checked as
//! `check_password_hash` does (werkzeug/security.py, `_hash_internal`): the salt is used as its
//! UTF-8 text, the code as Raptor hashed it (10 lowercase base32 characters, no hyphen), the
//! digest compared as lowercase hex, in constant time. Two methods, from RustCrypto:
//!
//! - `scrypt:N:r:p$salt$hex` (werkzeug's default, `scrypt:32768:8:1`): 64 bytes of output;
//! - `pbkdf2:sha256:iterations$salt$hex` (older rows): HMAC-SHA-256, 32 bytes of output.
//!
//! Anything else is refused when imported ([`Hash::parse`]), naming the method, and the cost
//! parameters are bounded so that a stored hash cannot make a redeem arbitrarily expensive.

use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// scrypt's N at most 2^20 and r·p at most 64 (werkzeug's default: 2^15, 8·1): 128·N·r bytes of
/// memory, at most 1 GiB with the largest values.
const SCRYPT_MAX_LOG_N: u8 = 20;
const SCRYPT_MAX_RP: u32 = 64;
/// werkzeug 3.1's default is 1,000,000; Raptor's older rows 600,000.
const PBKDF2_MAX_ITERATIONS: u32 = 10_000_000;

/// A parsed werkzeug hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hash {
    method: Method,
    salt: String,
    digest: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Scrypt { log_n: u8, r: u32, p: u32 },
    Pbkdf2Sha256 { iterations: u32 },
}

impl Hash {
    /// Reads `method$salt$hexdigest`; `Err` says what is wrong (the method named when it is not
    /// one this service verifies).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.splitn(3, '$');
        let (Some(method), Some(salt), Some(hex)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("not a werkzeug hash (method$salt$digest)".into());
        };
        let method = Method::parse(method)?;
        if salt.is_empty() {
            return Err("the werkzeug hash has an empty salt".into());
        }
        let digest = decode_hex(hex).ok_or("the werkzeug hash's digest is not lowercase hex")?;
        if digest.len() != method.output_len() {
            return Err(format!(
                "the werkzeug hash's digest is {} bytes, not the {} its method makes",
                digest.len(),
                method.output_len()
            ));
        }
        Ok(Self { method, salt: salt.to_string(), digest })
    }

    /// `scrypt` or `pbkdf2` (for audit payloads: the method, never the hash).
    pub fn method_name(&self) -> &'static str {
        match self.method {
            Method::Scrypt { .. } => "scrypt",
            Method::Pbkdf2Sha256 { .. } => "pbkdf2",
        }
    }

    /// Whether `code` (as Raptor hashed it) is what this hash was made from. CPU- and, for
    /// scrypt, memory-heavy by design: call it off the async runtime.
    pub fn verify(&self, code: &str) -> bool {
        let mut out = Zeroizing::new(vec![0u8; self.method.output_len()]);
        match self.method {
            Method::Scrypt { log_n, r, p } => {
                let Ok(params) = scrypt::Params::new(log_n, r, p) else { return false };
                if scrypt::scrypt(code.as_bytes(), self.salt.as_bytes(), &params, &mut out).is_err() {
                    return false;
                }
            }
            Method::Pbkdf2Sha256 { iterations } => {
                pbkdf2::pbkdf2_hmac::<Sha256>(code.as_bytes(), self.salt.as_bytes(), iterations, &mut out);
            }
        }
        out.as_slice().ct_eq(&self.digest).into()
    }
}

impl Method {
    fn parse(text: &str) -> Result<Self, String> {
        let fields: Vec<&str> = text.split(':').collect();
        match fields.as_slice() {
            ["scrypt", n, r, p] => {
                let (n, r, p) = (number::<u64>(n), number::<u32>(r), number::<u32>(p));
                let (Some(n), Some(r), Some(p)) = (n, r, p) else {
                    return Err(format!("unsupported werkzeug hash parameters `{text}`"));
                };
                if !n.is_power_of_two() || n < 2 || n.trailing_zeros() > u32::from(SCRYPT_MAX_LOG_N) {
                    return Err(format!("unsupported scrypt N {n} (a power of two up to 2^{SCRYPT_MAX_LOG_N})"));
                }
                if r == 0 || p == 0 || r.saturating_mul(p) > SCRYPT_MAX_RP {
                    return Err(format!("unsupported scrypt r {r}, p {p} (r·p up to {SCRYPT_MAX_RP})"));
                }
                let log_n = u8::try_from(n.trailing_zeros()).map_err(|_| format!("unsupported scrypt N {n}"))?;
                scrypt::Params::new(log_n, r, p).map_err(|_| format!("unsupported scrypt parameters `{text}`"))?;
                Ok(Self::Scrypt { log_n, r, p })
            }
            ["pbkdf2", "sha256", iterations] => match number::<u32>(iterations) {
                Some(i) if (1..=PBKDF2_MAX_ITERATIONS).contains(&i) => Ok(Self::Pbkdf2Sha256 { iterations: i }),
                _ => Err(format!("unsupported pbkdf2 iterations `{iterations}` (1 to {PBKDF2_MAX_ITERATIONS})")),
            },
            [name, ..] => Err(format!("unsupported werkzeug hash method `{}`", method_label(name, text))),
            [] => Err("not a werkzeug hash".into()),
        }
    }

    /// hashlib.scrypt's default dklen (64); pbkdf2_hmac's, the digest size (32 for SHA-256).
    fn output_len(self) -> usize {
        match self {
            Self::Scrypt { .. } => 64,
            Self::Pbkdf2Sha256 { .. } => 32,
        }
    }
}

/// The method as a refusal names it: `pbkdf2:sha1` for a pbkdf2 with another digest, else its
/// first field (short, printable: it may be anything).
fn method_label(name: &str, text: &str) -> String {
    let label = if *name == *"pbkdf2" { text.rsplit_once(':').map_or(text, |(m, _)| m) } else { name };
    label.chars().filter(|c| !c.is_control()).take(40).collect()
}

/// A decimal number, digits only (no sign, no spaces).
fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Lowercase hex (what Python's `bytes.hex()` writes) to bytes.
fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    s.as_bytes().chunks(2).map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect()
}

/// The code as Raptor hashed it (raptor/backup_codes.py, `normalize`): whitespace and hyphens
/// dropped, lower case, then exactly 10 characters of RFC 4648 base32 (`a-z`, `2-7`). `None`:
/// not a Raptor code (a Queue code has 13 Crockford characters, so the two never overlap).
pub fn normalise_code(input: &str) -> Option<Zeroizing<String>> {
    let raw: Zeroizing<String> = Zeroizing::new(
        input.chars().filter(|c| !c.is_whitespace() && *c != '-').flat_map(char::to_lowercase).collect(),
    );
    let base32 = |c: char| c.is_ascii_lowercase() || ('2'..='7').contains(&c);
    (raw.chars().count() == 10 && raw.chars().all(base32)).then_some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by werkzeug 3.1.9 (var/venv-raptor): generate_password_hash("abcdeqrstu"), the default
    // method, and with method="pbkdf2:sha256:1000" (fewer rounds than Raptor's: a quick unit test).
    const SCRYPT: &str = "scrypt:32768:8:1$8b3vJev32LzUZUzJ$9b31dd5ebe3407f1a91b25754d2a8d20da8e181bd62f52338ff3f9f02fb67e7ae3dffcf13cae1eb84f1fa18201bb228e71e05943160b24e57ea5dfde477246ee";
    const PBKDF2: &str =
        "pbkdf2:sha256:1000$mqPpf1Eprr2b2HLB$1135b9ac9eca2af649bf311e23a09b4789a3a554b2d72b2713eb57c9faceabf3";

    #[test]
    fn werkzeugs_own_hashes_verify_and_nothing_else_does() {
        for text in [SCRYPT, PBKDF2] {
            let h = Hash::parse(text).expect("parses");
            assert!(h.verify("abcdeqrstu"), "{text}");
            assert!(!h.verify("abcdeqrstv"), "{text}");
            assert!(!h.verify("abcde-qrstu"), "the hyphen is not hashed");
        }
        // A forged digest (one bit off) does not verify.
        let mut forged = PBKDF2.to_string();
        forged.pop();
        forged.push('2');
        assert!(!Hash::parse(&forged).expect("parses").verify("abcdeqrstu"));
    }

    #[test]
    fn the_shapes_are_read_and_the_rest_refused_by_name() {
        assert!(Hash::parse(SCRYPT).is_ok());
        let e = Hash::parse("argon2:id$salt$00").expect_err("argon2");
        assert!(e.contains("`argon2`"), "{e}");
        let e = Hash::parse(&format!("pbkdf2:sha1:1000$salt${}", "00".repeat(32))).expect_err("sha1");
        assert!(e.contains("`pbkdf2:sha1`"), "{e}");
        assert!(Hash::parse("plain").is_err());
        assert!(Hash::parse(&format!("scrypt:32768:8:1$salt${}", "00".repeat(63))).is_err(), "short digest");
        assert!(Hash::parse(&format!("scrypt:30000:8:1$salt${}", "00".repeat(64))).is_err(), "N not a power of 2");
        assert!(Hash::parse(&format!("scrypt:2097152:8:1$salt${}", "00".repeat(64))).is_err(), "N too large");
        assert!(Hash::parse(&format!("pbkdf2:sha256:0$salt${}", "00".repeat(32))).is_err());
        assert!(Hash::parse(&format!("pbkdf2:sha256:1000$salt${}", "AB".repeat(32))).is_err(), "upper-case hex");
    }

    #[test]
    fn codes_normalise_as_raptor_does() {
        assert_eq!(normalise_code(" ABCDE-qrstu ").as_deref().map(String::as_str), Some("abcdeqrstu"));
        assert!(normalise_code("abcde-qrst1").is_none(), "1 is not RFC 4648 base32");
        assert!(normalise_code("abcd-efgh-jkmnp").is_none(), "a Queue code");
    }
}
