//! Ed25519 keys in the formats operators handle: PKCS#8 PEM for private keys, SPKI PEM for
//! public keys, and JWK (RFC 8037) for publishing. Key ids are RFC 7638 thumbprints, so the
//! same key always has the same `kid` wherever it is loaded.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey};
use sha2::{Digest, Sha256};
use std::fmt;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::jwks::Jwk;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): the 32 key bytes follow it.
const SPKI_ED25519_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("not a PEM document")]
    NotPem,
    #[error("PEM holds `{0}`, expected {1}")]
    WrongPemLabel(String, &'static str),
    #[error("not an Ed25519 key")]
    NotEd25519,
    #[error("key generation failed")]
    Generation,
}

/// The private half: signs tokens. Never printed, never serialised; the PKCS#8 bytes are
/// zeroized on drop.
pub struct SigningKey {
    pkcs8: Zeroizing<Vec<u8>>,
    encoding: EncodingKey,
    public: PublicKey,
}

impl SigningKey {
    pub fn from_pem(pem_text: &str) -> Result<Self, KeyError> {
        let doc = pem::parse(pem_text).map_err(|_| KeyError::NotPem)?;
        if doc.tag() != "PRIVATE KEY" {
            return Err(KeyError::WrongPemLabel(doc.tag().to_string(), "PRIVATE KEY"));
        }
        Self::from_pkcs8_der(Zeroizing::new(doc.into_contents()))
    }

    fn from_pkcs8_der(der: Zeroizing<Vec<u8>>) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| KeyError::NotEd25519)?;
        let mut x = [0u8; 32];
        x.copy_from_slice(pair.public_key().as_ref());
        let encoding = EncodingKey::from_ed_der(&der);
        Ok(Self { pkcs8: der, encoding, public: PublicKey::from_raw(x) })
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    pub fn kid(&self) -> &str {
        self.public.kid()
    }

    pub(crate) fn encoding(&self) -> &EncodingKey {
        &self.encoding
    }

    /// The key as PKCS#8 PEM, for writing a freshly generated key to disk.
    pub fn to_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", self.pkcs8.to_vec())))
    }

    /// The same key as PKCS#8 v1 PEM when it was read as v2 (see [`generate_ed25519_pem`] for
    /// why v1); `None` when it already is v1.
    pub fn as_pkcs8_v1_pem(&self) -> Result<Option<Zeroizing<String>>, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(&self.pkcs8).map_err(|_| KeyError::NotEd25519)?;
        let v1 = pair.to_pkcs8v1().map_err(|_| KeyError::NotEd25519)?;
        if v1.as_ref() == self.pkcs8.as_slice() {
            return Ok(None);
        }
        Ok(Some(Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", v1.as_ref().to_vec())))))
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.public.kid).field("key", &"<redacted>").finish()
    }
}

/// The public half: verifies tokens, and is published as a JWK.
#[derive(Clone)]
pub struct PublicKey {
    x: [u8; 32],
    kid: String,
    decoding: DecodingKey,
}

impl PublicKey {
    pub fn from_raw(x: [u8; 32]) -> Self {
        let kid = thumbprint(&x);
        let decoding = DecodingKey::from_ed_der(&x);
        Self { x, kid, decoding }
    }

    pub fn from_pem(pem_text: &str) -> Result<Self, KeyError> {
        let doc = pem::parse(pem_text).map_err(|_| KeyError::NotPem)?;
        if doc.tag() != "PUBLIC KEY" {
            return Err(KeyError::WrongPemLabel(doc.tag().to_string(), "PUBLIC KEY"));
        }
        let der = doc.contents();
        if der.len() != SPKI_ED25519_PREFIX.len() + 32 || der[..SPKI_ED25519_PREFIX.len()] != SPKI_ED25519_PREFIX {
            return Err(KeyError::NotEd25519);
        }
        let mut x = [0u8; 32];
        x.copy_from_slice(&der[SPKI_ED25519_PREFIX.len()..]);
        Ok(Self::from_raw(x))
    }

    /// Reads an `OKP`/`Ed25519` JWK; any other key type is refused.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        if jwk.kty != "OKP" || jwk.crv.as_deref() != Some("Ed25519") {
            return Err(KeyError::NotEd25519);
        }
        if jwk.alg.as_deref().is_some_and(|a| a != "EdDSA") {
            return Err(KeyError::NotEd25519);
        }
        let raw = jwk.x.as_deref().and_then(|x| URL_SAFE_NO_PAD.decode(x).ok()).ok_or(KeyError::NotEd25519)?;
        let x: [u8; 32] = raw.try_into().map_err(|_| KeyError::NotEd25519)?;
        Ok(Self::from_raw(x))
    }

    pub fn to_pem(&self) -> String {
        let mut der = SPKI_ED25519_PREFIX.to_vec();
        der.extend_from_slice(&self.x);
        pem::encode(&pem::Pem::new("PUBLIC KEY", der))
    }

    pub fn to_jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(URL_SAFE_NO_PAD.encode(self.x)),
            kid: Some(self.kid.clone()),
            alg: Some("EdDSA".into()),
            key_use: Some("sig".into()),
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey").field("kid", &self.kid).finish()
    }
}

/// RFC 7638 JWK thumbprint of an Ed25519 key: SHA-256 over the required members in
/// lexicographic order, base64url without padding.
fn thumbprint(x: &[u8; 32]) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, URL_SAFE_NO_PAD.encode(x));
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// A fresh Ed25519 key pair as (private PKCS#8 PEM, public SPKI PEM).
///
/// The private key is PKCS#8 v1 (RFC 5208, the seed only), as `openssl genpkey -algorithm ed25519`
/// writes it: every library reads v1, while v2 (RFC 5958, with the public key inside) is refused
/// by some still in use (Python's `cryptography` before 51, which Raptor's dependencies pin).
/// Reading accepts both.
pub fn generate_ed25519_pem() -> Result<(Zeroizing<String>, String), KeyError> {
    let der = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).map_err(|_| KeyError::Generation)?;
    let key = SigningKey::from_pkcs8_der(Zeroizing::new(der.as_ref().to_vec()))?;
    Ok((key.to_pem(), key.public().to_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_pem_and_jwk() {
        let (private_pem, public_pem) = generate_ed25519_pem().expect("generate");
        let signing = SigningKey::from_pem(&private_pem).expect("private pem");
        let public = PublicKey::from_pem(&public_pem).expect("public pem");
        assert_eq!(signing.kid(), public.kid());
        let from_jwk = PublicKey::from_jwk(&public.to_jwk()).expect("jwk");
        assert_eq!(from_jwk.kid(), public.kid());
        assert!(!format!("{signing:?}").contains(&private_pem[30..60]));
    }

    #[test]
    fn keys_are_written_as_pkcs8_v1_and_v2_keys_still_load() {
        let (private_pem, _) = generate_ed25519_pem().expect("generate");
        let der = pem::parse(private_pem.as_str()).expect("pem").into_contents();
        // SEQUENCE { INTEGER 0 (v1), AlgorithmIdentifier, OCTET STRING }: 48 bytes, no public key.
        assert_eq!((der.len(), &der[2..5]), (48, &[0x02, 0x01, 0x00][..]));
        let v2 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("v2");
        assert_eq!(v2.as_ref()[4], 0x01, "aws-lc writes v2 with version 1");
        let pem_v2 = pem::encode(&pem::Pem::new("PRIVATE KEY", v2.as_ref().to_vec()));
        let key = SigningKey::from_pem(&pem_v2).expect("a v2 key loads");
        let v1 = key.as_pkcs8_v1_pem().expect("re-encode").expect("v2 becomes v1");
        let again = SigningKey::from_pem(&v1).expect("the v1 form loads");
        assert_eq!(again.kid(), key.kid(), "the same key");
        assert!(again.as_pkcs8_v1_pem().expect("v1").is_none(), "v1 stays as it is");
    }

    #[test]
    fn a_private_key_is_not_accepted_as_public_and_vice_versa() {
        let (private_pem, public_pem) = generate_ed25519_pem().expect("generate");
        assert!(matches!(PublicKey::from_pem(&private_pem), Err(KeyError::WrongPemLabel(..))));
        assert!(matches!(SigningKey::from_pem(&public_pem), Err(KeyError::WrongPemLabel(..))));
        assert!(matches!(SigningKey::from_pem("not pem"), Err(KeyError::NotPem)));
    }

    #[test]
    fn thumbprint_matches_rfc_8037_example() {
        // RFC 8037 appendix A.3: the thumbprint of the example Ed25519 key.
        let x = URL_SAFE_NO_PAD.decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").expect("b64");
        let x: [u8; 32] = x.try_into().expect("32 bytes");
        assert_eq!(PublicKey::from_raw(x).kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }
}
