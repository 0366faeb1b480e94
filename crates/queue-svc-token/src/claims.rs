//! Minting service tokens.

use jsonwebtoken::{Algorithm, Header};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::TokenError;
use crate::keys::SigningKey;

/// The `typ` header of every service token (RFC 8725 §3.11 explicit typing), so a token made
/// for something else (an ID token, a session JWT) can never pass as one.
pub const TOKEN_TYPE: &str = "queue-svc+jwt";
/// Tokens are short-lived: 60 s unless asked otherwise, never more than 5 minutes.
pub const DEFAULT_TTL_SECS: u64 = 60;
pub const MAX_TTL_SECS: u64 = 300;

/// The claims of a service token, as minted and as verified.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceClaims {
    pub iss: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
    pub jti: String,
    pub scope: Vec<String>,
}

/// Mints tokens for one issuer with one key.
#[derive(Clone, Debug)]
pub struct Minter {
    issuer: String,
    key: Arc<SigningKey>,
}

impl Minter {
    pub fn new(issuer: impl Into<String>, key: Arc<SigningKey>) -> Self {
        Self { issuer: issuer.into(), key }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// A token for `audience` carrying `scopes`, valid for `ttl_secs` (capped at 5 minutes).
    pub fn mint(&self, audience: &str, scopes: &[&str], ttl_secs: u64) -> Result<String, TokenError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let claims = ServiceClaims {
            iss: self.issuer.clone(),
            aud: audience.to_string(),
            iat: now,
            exp: now + ttl_secs.clamp(1, MAX_TTL_SECS),
            jti: uuid::Uuid::new_v4().to_string(),
            scope: scopes.iter().map(|s| s.to_string()).collect(),
        };
        self.sign(&claims)
    }

    /// Signs arbitrary claims with this minter's key and the service-token header. Tests use it
    /// to build tokens that the verifier must refuse.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.to_string());
        header.kid = Some(self.key.kid().to_string());
        jsonwebtoken::encode(&header, claims, self.key.encoding()).map_err(|_| TokenError::Malformed)
    }

    /// Signs with a caller-built header (tests of hostile headers).
    pub fn sign_with_header<T: Serialize>(&self, header: &Header, claims: &T) -> Result<String, TokenError> {
        jsonwebtoken::encode(header, claims, self.key.encoding()).map_err(|_| TokenError::Malformed)
    }
}
