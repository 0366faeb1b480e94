//! Service tokens: how Queue's services prove to each other who is calling.
//!
//! A service token is a short-lived JWT signed with the caller's Ed25519 key. This crate owns
//! the keys (PEM in, JWKS out), minting, and verification. Verification is strict on purpose:
//! the algorithm is pinned by the key (never read from the token), the header may not point at
//! other keys (`jku`, `x5u`, `jwk`, …), `typ` must say "service token", there is exactly one
//! audience, and lifetimes are short. It knows nothing of HTTP frameworks; the actix extractor
//! lives in `queue-platform`.

mod claims;
mod error;
mod jwks;
mod keys;
mod replay;
mod verify;

pub use claims::{DEFAULT_TTL_SECS, MAX_TTL_SECS, Minter, ServiceClaims, TOKEN_TYPE};
pub use error::TokenError;
pub use jwks::{Jwk, JwkSet};
pub use keys::{KeyError, PublicKey, SigningKey, generate_ed25519_pem};
pub use replay::ReplayGuard;
pub use verify::{
    Clock, IssuerSource, REPLAY_MAX_ENTRIES, SystemClock, TrustedIssuer, VerifiedToken, Verifier, VerifierSettings,
};
