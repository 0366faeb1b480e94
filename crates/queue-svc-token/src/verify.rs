//! Verifying service tokens against the keys of trusted issuers.
//!
//! Order of checks: shape and size, hostile header members, `typ`, `kid`, the (still
//! unverified) issuer must be trusted, the key must be known for *that* issuer (a key never
//! verifies tokens of another issuer), the header `alg` must be the key's algorithm, the
//! signature, then the claims. Keys come from a static list or from the issuer's JWKS, which is
//! refreshed periodically and refetched — at most once per `refetch_min_interval` — when a
//! token names a `kid` we have not seen.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::claims::{MAX_TTL_SECS, ServiceClaims, TOKEN_TYPE};
use crate::error::TokenError;
use crate::jwks::JwkSet;
use crate::keys::PublicKey;
use crate::replay::ReplayGuard;

/// Header members that would let a token choose its own key or add rules we do not know.
const FORBIDDEN_HEADERS: [&str; 7] = ["jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit"];
/// Default bound of the one-use set (`tokens.replay_max_entries` in the services' config).
pub const REPLAY_MAX_ENTRIES: usize = 250_000;
/// Longer tokens are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The only algorithm an Ed25519 key can verify.
const PINNED_ALG: &str = "EdDSA";

/// Seconds since the Unix epoch; injectable so tests can move time.
pub trait Clock: Send + Sync + 'static {
    fn now_secs(&self) -> u64;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_secs(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }
}

/// Where the keys of a trusted issuer come from.
#[derive(Debug, Clone)]
pub enum IssuerSource {
    /// The issuer's published JWK Set.
    Jwks(String),
    /// Keys configured by hand (an issuer that publishes no JWKS, such as the legacy app).
    Static(Vec<PublicKey>),
}

#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    pub name: String,
    pub source: IssuerSource,
}

#[derive(Debug, Clone)]
pub struct VerifierSettings {
    /// This service's name: the only audience it accepts.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `iat`.
    pub leeway_secs: u64,
    /// How often JWKS are fetched even when nothing asks.
    pub refresh_interval: Duration,
    /// The least time between two fetches of one issuer's JWKS.
    pub refetch_min_interval: Duration,
    /// After a failed fetch (the peer may simply not be up yet) the next try waits only this
    /// long (capped by `refetch_min_interval`).
    pub failed_fetch_backoff: Duration,
    /// The most one-use tokens remembered at once (see [`crate::ReplayGuard`]). At the 300 s
    /// lifetime cap plus leeway, the default allows a sustained ~750 state-changing calls a
    /// second per replica (about 15 MB); beyond that new one-use tokens are refused, not old ones
    /// forgotten.
    pub replay_max_entries: usize,
}

impl VerifierSettings {
    pub fn new(audience: impl Into<String>) -> Self {
        Self {
            audience: audience.into(),
            leeway_secs: 30,
            refresh_interval: Duration::from_secs(300),
            refetch_min_interval: Duration::from_secs(30),
            failed_fetch_backoff: Duration::from_secs(1),
            replay_max_entries: REPLAY_MAX_ENTRIES,
        }
    }
}

/// What a verified token says: the caller's identity and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub claims: ServiceClaims,
    pub kid: String,
}

impl VerifiedToken {
    pub fn issuer(&self) -> &str {
        &self.claims.iss
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.claims.scope.iter().any(|s| s == scope)
    }
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, PublicKey>,
    /// When we last asked, and whether it worked.
    last_attempt: Option<(Instant, bool)>,
}

struct IssuerState {
    source: IssuerSource,
    cache: RwLock<KeyCache>,
    /// One fetch at a time per issuer; others wait and then read the cache.
    fetching: tokio::sync::Mutex<()>,
}

/// Verified tokens, so a caller reusing a token for its lifetime pays the signature check once.
/// `exp` is checked again on every use; the cache is cleared when full. Only tokens that passed
/// verification are kept.
const CACHE_MAX: usize = 10_000;

/// The tokens whose keyed hash is one value, each with its verification.
type Bucket = Vec<(Box<[u8]>, VerifiedToken)>;

/// The verified-token cache: found by a keyed hash of the token's text (SipHash with a random
/// key per process, so nobody can aim at a bucket), then compared in full in constant time.
/// SHA-256 of every token (without SHA instructions, ~10 % of a check's CPU in rbac) bought
/// nothing more: the text is compared whole either way.
#[derive(Default)]
struct Verified {
    hasher: std::collections::hash_map::RandomState,
    entries: HashMap<u64, Bucket>,
    len: usize,
}

impl Verified {
    fn key(&self, token: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(token.as_bytes())
    }

    fn get(&self, key: u64, token: &str) -> Option<&VerifiedToken> {
        use subtle::ConstantTimeEq;
        self.entries.get(&key)?.iter().find(|(t, _)| bool::from(t.as_ref().ct_eq(token.as_bytes()))).map(|(_, v)| v)
    }

    fn insert(&mut self, key: u64, token: &str, verified: VerifiedToken) {
        if self.len >= CACHE_MAX {
            self.entries.clear();
            self.len = 0;
        }
        if self.get(key, token).is_none() {
            self.entries.entry(key).or_default().push((token.as_bytes().into(), verified));
            self.len += 1;
        }
    }
}

struct Inner {
    verified: RwLock<Verified>,
    /// Tokens already used on a state-changing route, until they expire.
    used: ReplayGuard,
    settings: VerifierSettings,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    issuers: HashMap<String, IssuerState>,
}

/// Verifies service tokens. Cheap to clone; all clones share the key cache.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("audience", &self.inner.settings.audience)
            .field("issuers", &self.inner.issuers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Verifier {
    pub fn new(
        settings: VerifierSettings,
        issuers: Vec<TrustedIssuer>,
        http: reqwest::Client,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let issuers = issuers
            .into_iter()
            .map(|t| {
                let mut cache = KeyCache::default();
                if let IssuerSource::Static(keys) = &t.source {
                    cache.keys = keys.iter().map(|k| (k.kid().to_string(), k.clone())).collect();
                }
                let state =
                    IssuerState { source: t.source, cache: RwLock::new(cache), fetching: tokio::sync::Mutex::new(()) };
                (t.name, state)
            })
            .collect();
        let used = ReplayGuard::new(settings.replay_max_entries);
        Self {
            inner: Arc::new(Inner { verified: RwLock::new(Verified::default()), used, settings, clock, http, issuers }),
        }
    }

    pub fn audience(&self) -> &str {
        &self.inner.settings.audience
    }

    pub fn trusted_issuers(&self) -> impl Iterator<Item = &str> {
        self.inner.issuers.keys().map(String::as_str)
    }

    /// Fetches every JWKS issuer now. Failures are logged and leave the old keys in place.
    pub async fn refresh_all(&self) {
        for (name, state) in &self.inner.issuers {
            if let IssuerSource::Jwks(url) = &state.source {
                let _guard = state.fetching.lock().await;
                if let Err(e) = self.fetch_into(state, url).await {
                    tracing::warn!(issuer = %name, error = %e, "JWKS refresh failed; keeping the keys we have");
                }
            }
        }
    }

    /// Refreshes all JWKS every `refresh_interval` until the returned handle is aborted or the
    /// runtime stops.
    pub fn spawn_refresh(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.inner.settings.refresh_interval);
            loop {
                tick.tick().await;
                this.refresh_all().await;
            }
        })
    }

    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let (key, hit) = match self.inner.verified.read() {
            Ok(c) => {
                let key = c.key(token);
                (Some(key), c.get(key, token).cloned())
            }
            Err(_) => (None, None),
        };
        if let Some(hit) = hit {
            let now = self.inner.clock.now_secs();
            if now < hit.claims.exp.saturating_add(self.inner.settings.leeway_secs) {
                return Ok(hit);
            }
            return Err(TokenError::Expired);
        }
        let verified = self.verify_uncached(token).await?;
        if let (Some(key), Ok(mut cache)) = (key, self.inner.verified.write()) {
            cache.insert(key, token, verified.clone());
        }
        Ok(verified)
    }

    /// Spends a verified token on a state-changing request: the first use of its `(iss, jti)`
    /// on this replica passes, any later one is [`TokenError::Replayed`] until the token has
    /// expired (`exp` + leeway, when it could not verify anyway). Reads do not call this, so a
    /// caller may reuse a token for reads and the verified-token cache keeps paying off.
    pub fn spend(&self, token: &VerifiedToken) -> Result<(), TokenError> {
        let c = &token.claims;
        let forget_after = c.exp.saturating_add(self.inner.settings.leeway_secs);
        self.inner.used.first_use(&c.iss, &c.jti, forget_after, self.inner.clock.now_secs())
    }

    async fn verify_uncached(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(_sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let header = decode_json_object(h)?;
        if let Some(name) = FORBIDDEN_HEADERS.iter().find(|n| header.contains_key(**n)) {
            return Err(TokenError::ForbiddenHeader(name.to_string()));
        }
        match header.get("typ").and_then(Value::as_str) {
            Some(t) if t.eq_ignore_ascii_case(TOKEN_TYPE) => {}
            _ => return Err(TokenError::WrongType),
        }
        let kid = header.get("kid").and_then(Value::as_str).ok_or(TokenError::MissingKid)?;
        let alg = header.get("alg").and_then(Value::as_str).ok_or(TokenError::Malformed)?;

        // The issuer is read before the signature is checked only to choose whose keys to use.
        let unverified = decode_json_object(p)?;
        let issuer = unverified.get("iss").and_then(Value::as_str).ok_or(TokenError::BadClaim("iss"))?;
        let state = self.inner.issuers.get(issuer).ok_or_else(|| TokenError::UntrustedIssuer(issuer.to_string()))?;
        let key = self.key_for(issuer, state, kid).await?;

        if alg != PINNED_ALG {
            return Err(TokenError::AlgorithmNotAllowed(alg.to_string()));
        }
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key.decoding(), &validation)
            .map_err(|_| TokenError::BadSignature)?;
        let claims = self.check_claims(&data.claims)?;
        Ok(VerifiedToken { claims, kid: kid.to_string() })
    }

    fn check_claims(&self, c: &Map<String, Value>) -> Result<ServiceClaims, TokenError> {
        let settings = &self.inner.settings;
        let iss = c.get("iss").and_then(Value::as_str).ok_or(TokenError::BadClaim("iss"))?;
        let aud = match c.get("aud") {
            Some(Value::String(a)) => a,
            Some(Value::Array(list)) if list.len() > 1 => return Err(TokenError::MultipleAudiences),
            _ => return Err(TokenError::BadClaim("aud")),
        };
        if aud != &settings.audience {
            return Err(TokenError::WrongAudience(aud.clone()));
        }
        let iat = c.get("iat").and_then(Value::as_u64).ok_or(TokenError::BadClaim("iat"))?;
        let exp = c.get("exp").and_then(Value::as_u64).ok_or(TokenError::BadClaim("exp"))?;
        let now = self.inner.clock.now_secs();
        if now >= exp.saturating_add(settings.leeway_secs) {
            return Err(TokenError::Expired);
        }
        if iat > now.saturating_add(settings.leeway_secs) {
            return Err(TokenError::IssuedInFuture);
        }
        if exp <= iat {
            return Err(TokenError::BadClaim("exp"));
        }
        if exp - iat > MAX_TTL_SECS {
            return Err(TokenError::LifetimeTooLong);
        }
        let jti = c.get("jti").and_then(Value::as_str).filter(|j| !j.is_empty()).ok_or(TokenError::BadClaim("jti"))?;
        let scope = match c.get("scope") {
            Some(Value::Array(items)) => items
                .iter()
                .map(|s| s.as_str().map(str::to_string).ok_or(TokenError::BadClaim("scope")))
                .collect::<Result<Vec<_>, _>>()?,
            _ => return Err(TokenError::BadClaim("scope")),
        };
        Ok(ServiceClaims { iss: iss.to_string(), aud: aud.clone(), iat, exp, jti: jti.to_string(), scope })
    }

    async fn key_for(&self, issuer: &str, state: &IssuerState, kid: &str) -> Result<PublicKey, TokenError> {
        if let Some(k) = cached(state, kid) {
            return Ok(k);
        }
        let unknown = || TokenError::UnknownKey { issuer: issuer.to_string(), kid: kid.to_string() };
        let IssuerSource::Jwks(url) = &state.source else {
            return Err(unknown());
        };
        let _guard = state.fetching.lock().await;
        // Someone may have fetched while we waited.
        if let Some(k) = cached(state, kid) {
            return Ok(k);
        }
        let min_interval = self.inner.settings.refetch_min_interval;
        let recently = state
            .cache
            .read()
            .map(|c| match c.last_attempt {
                Some((t, true)) => t.elapsed() < min_interval,
                Some((t, false)) => t.elapsed() < min_interval.min(self.inner.settings.failed_fetch_backoff),
                None => false,
            })
            .unwrap_or(true);
        if recently {
            return Err(unknown());
        }
        match self.fetch_into(state, url).await {
            Ok(()) => cached(state, kid).ok_or_else(unknown),
            Err(e) => {
                tracing::warn!(issuer = %issuer, error = %e, "JWKS fetch failed");
                Err(TokenError::KeysUnavailable(issuer.to_string()))
            }
        }
    }

    async fn fetch_into(&self, state: &IssuerState, url: &str) -> Result<(), String> {
        let started = Instant::now();
        let result = self.fetch(url).await;
        if let Ok(mut c) = state.cache.write() {
            c.last_attempt = Some((started, result.is_ok()));
            if let Ok(keys) = &result {
                c.keys = keys.clone();
            }
        }
        result.map(drop)
    }

    async fn fetch(&self, url: &str) -> Result<HashMap<String, PublicKey>, String> {
        let response = self
            .inner
            .http
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .error_for_status()
            .map_err(|e| e.to_string())?;
        let set: JwkSet = response.json().await.map_err(|e| e.to_string())?;
        // Keys of other types are skipped, not fatal: an issuer may publish more than we use.
        Ok(set.keys.iter().filter_map(|jwk| PublicKey::from_jwk(jwk).ok()).map(|k| (k.kid().to_string(), k)).collect())
    }
}

fn cached(state: &IssuerState, kid: &str) -> Option<PublicKey> {
    state.cache.read().ok().and_then(|c| c.keys.get(kid).cloned())
}

fn decode_json_object(part: &str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn verified(jti: &str) -> VerifiedToken {
        let claims = ServiceClaims {
            iss: "raptor".into(),
            aud: "rbac".into(),
            iat: 1,
            exp: 2,
            jti: jti.into(),
            scope: vec!["rbac:check".into()],
        };
        VerifiedToken { claims, kid: "k1".into() }
    }

    #[test]
    fn the_cache_answers_only_for_the_very_same_token_text() {
        let mut cache = Verified::default();
        let token = "eyJhbGciOiJFZERTQSJ9.eyJpc3MiOiJyYXB0b3IifQ.c2lnbmF0dXJl";
        let key = cache.key(token);
        cache.insert(key, token, verified("a"));
        assert_eq!(cache.get(cache.key(token), token).map(|v| v.claims.jti.as_str()), Some("a"));
        // Another text under the same bucket (as a hash collision would put it) is not a hit:
        // the whole text is compared, not just the hash.
        let other = "eyJhbGciOiJFZERTQSJ9.eyJpc3MiOiJhdHRhY2tlciJ9.c2lnbmF0dXJl";
        assert!(cache.get(key, other).is_none());
        assert!(cache.get(key, &token[..token.len() - 1]).is_none(), "a prefix is not the token");
        cache.insert(key, other, verified("b"));
        assert_eq!(cache.get(key, other).map(|v| v.claims.jti.as_str()), Some("b"));
        assert_eq!(cache.get(key, token).map(|v| v.claims.jti.as_str()), Some("a"));
        assert_eq!(cache.len, 2);
    }

    #[test]
    fn the_cache_is_cleared_when_full() {
        let mut cache = Verified::default();
        for i in 0..CACHE_MAX + 1 {
            let t = format!("token-{i}");
            let key = cache.key(&t);
            cache.insert(key, &t, verified("x"));
        }
        assert_eq!(cache.len, 1, "cleared at the limit, then the newest kept");
        assert!(cache.get(cache.key("token-0"), "token-0").is_none());
    }
}
