//! Who is calling, for sticky canary cohorts: the session is validated with auth's
//! `POST /internal/v1/sessions/validate` (a service token with `sessions:validate`), and the
//! answer is cached briefly, keyed by a SHA-256 of the session token (the token itself is never
//! kept or logged). When auth is not configured, slow or down, the cohort falls back to the
//! tenant header and then the client address; a failure never fails the request, and after one
//! the proxy stops asking for a few seconds so a down auth does not slow every request.
//!
//! The cache cannot be flushed from outside (issue 16, item 8): anyone can send a made-up
//! `queue_session`, so auth's refusals are kept apart from valid sessions, in a bounded
//! first-in-first-out list, and a made-up token can only push out another made-up token. Valid
//! sessions (which a client cannot invent) are kept up to their own bound; when that is full,
//! expired entries make room, and if none has expired the new answer is used but not kept —
//! the cache is never emptied wholesale. While auth cannot answer (down, slow, or refusing the
//! proxy), a session whose answer has expired but is still held keeps its identity, so a
//! user's cohort does not flip to the fallback because someone made auth busy.
//!
//! The same answers decide the carry-over of Raptor's sessions (carry.rs, issue 19 item 2), with
//! two differences ([`IdentityClient::live_session`]): only a fresh answer counts (a held
//! identity while auth cannot answer carries nothing over), and at most
//! [`CARRY_VALIDATIONS_IN_FLIGHT`] of those validations wait on auth at once, so values nobody
//! has sent before (random ones, each one call) cost auth a bounded number of calls at a time.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use queue_platform::Platform;

/// The fields of auth's answer the proxy needs.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Identity {
    pub(crate) user_id: Option<String>,
    pub(crate) tenant_id: Option<String>,
    /// When the session ends whatever its use (auth's `absolute_expires_at`).
    pub(crate) absolute_expires_at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct ValidateResponse {
    valid: bool,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    absolute_expires_at: Option<DateTime<Utc>>,
}

/// Auth could not say whether a session is live: down, slow, refusing the proxy, backing off
/// after such a failure, or (carry-over only) too many validations waiting already.
#[derive(Debug)]
pub(crate) struct Unavailable;

/// How many carry-over validations may wait on auth at once; more are not asked (the request
/// goes on without a Queue session, as when auth is down).
pub(crate) const CARRY_VALIDATIONS_IN_FLIGHT: usize = 32;

/// One lookup: auth's answer (fresh from the cache or just asked), or none to be had, with the
/// identity held from an expired answer when there is one.
enum Lookup {
    Answer(Option<Identity>),
    Unavailable(Option<Identity>),
}

type Key = [u8; 32];

/// Validation answers by SHA-256 of the session token, with when they were fetched.
struct Cache {
    /// Valid sessions' identities.
    valid: HashMap<Key, (Identity, Instant)>,
    /// Tokens auth refused, and their order of arrival (the oldest goes first when full).
    refused: HashMap<Key, Instant>,
    refused_order: VecDeque<Key>,
    max: usize,
}

/// A cache lookup: a fresh answer, or an expired identity kept for when auth cannot answer.
enum Cached {
    Fresh(Option<Identity>),
    Stale(Identity),
    Missing,
}

impl Cache {
    fn new(max: usize) -> Self {
        Self { valid: HashMap::new(), refused: HashMap::new(), refused_order: VecDeque::new(), max }
    }

    fn get(&self, key: &Key, now: Instant, ttl: Duration) -> Cached {
        if let Some((id, at)) = self.valid.get(key) {
            return if now.duration_since(*at) < ttl {
                Cached::Fresh(Some(id.clone()))
            } else {
                Cached::Stale(id.clone())
            };
        }
        match self.refused.get(key) {
            Some(at) if now.duration_since(*at) < ttl => Cached::Fresh(None),
            _ => Cached::Missing,
        }
    }

    fn insert(&mut self, key: Key, answer: Option<Identity>, now: Instant, ttl: Duration) {
        match answer {
            Some(id) => {
                self.refused.remove(&key);
                if self.valid.len() >= self.max && !self.valid.contains_key(&key) {
                    self.valid.retain(|_, (_, at)| now.duration_since(*at) < ttl);
                    if self.valid.len() >= self.max {
                        // Full of live sessions: this answer is used, not kept.
                        return;
                    }
                }
                self.valid.insert(key, (id, now));
            }
            None => {
                // A session that ended is no longer a valid one.
                self.valid.remove(&key);
                if self.refused.insert(key, now).is_none() {
                    self.refused_order.push_back(key);
                }
                while self.refused.len() > self.max {
                    match self.refused_order.pop_front() {
                        Some(old) => {
                            self.refused.remove(&old);
                        }
                        None => break,
                    }
                }
            }
        }
    }
}
const TOKEN_TTL_SECS: u64 = 60;
const BACKOFF: Duration = Duration::from_secs(5);

pub(crate) struct IdentityClient {
    url: String,
    http: reqwest::Client,
    timeout: Duration,
    ttl: Duration,
    cache: Mutex<Cache>,
    service_token: Mutex<Option<(String, Instant)>>,
    backoff_until: Mutex<Option<Instant>>,
    /// Carry-over validations waiting on auth ([`CARRY_VALIDATIONS_IN_FLIGHT`]).
    carry_slots: tokio::sync::Semaphore,
}

impl IdentityClient {
    /// `roots`: CA certificates an https `auth_url` may chain to besides the platform's own
    /// (`server.tls.ca_file`).
    pub(crate) fn new(
        auth_url: &url::Url,
        timeout: Duration,
        ttl: Duration,
        cache_entries: usize,
        roots: Vec<reqwest::Certificate>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .tls_certs_merge(roots)
            .build()?;
        let url = format!("{}/internal/v1/sessions/validate", auth_url.as_str().trim_end_matches('/'));
        Ok(Self {
            url,
            http,
            timeout,
            ttl,
            cache: Mutex::new(Cache::new(cache_entries)),
            service_token: Mutex::new(None),
            backoff_until: Mutex::new(None),
            carry_slots: tokio::sync::Semaphore::new(CARRY_VALIDATIONS_IN_FLIGHT),
        })
    }

    /// The identity behind a session token; `None` when invalid or unknown. While auth cannot
    /// answer, the identity of an expired answer still held.
    pub(crate) async fn identify(&self, platform: &Platform, session: &str) -> Option<Identity> {
        match self.lookup(platform, session, None).await {
            Lookup::Answer(id) | Lookup::Unavailable(id) => id,
        }
    }

    /// For the carry-over of a Raptor session: the identity when auth says (now, or within
    /// `cache_secs`) the token is a live session whose absolute expiry is still ahead; `None`
    /// when it is not one; [`Unavailable`] when auth cannot say (an expired answer held does not
    /// count) or [`CARRY_VALIDATIONS_IN_FLIGHT`] validations are waiting already.
    pub(crate) async fn live_session(
        &self,
        platform: &Platform,
        session: &str,
    ) -> Result<Option<Identity>, Unavailable> {
        match self.lookup(platform, session, Some(&self.carry_slots)).await {
            Lookup::Answer(id) => Ok(id.filter(|i| i.absolute_expires_at.is_some_and(|at| at > Utc::now()))),
            Lookup::Unavailable(_) => Err(Unavailable),
        }
    }

    /// The cache's fresh answer, else auth's (cached); with `slots`, auth is asked only when
    /// one is free.
    async fn lookup(&self, platform: &Platform, session: &str, slots: Option<&tokio::sync::Semaphore>) -> Lookup {
        let key: Key = Sha256::digest(session.as_bytes()).into();
        let now = Instant::now();
        let stale = match lock(&self.cache).get(&key, now, self.ttl) {
            Cached::Fresh(id) => return Lookup::Answer(id),
            Cached::Stale(id) => Some(id),
            Cached::Missing => None,
        };
        if lock(&self.backoff_until).is_some_and(|until| now < until) {
            return Lookup::Unavailable(stale);
        }
        let _slot = match slots.map(|s| s.try_acquire()) {
            Some(Err(_)) => return Lookup::Unavailable(stale),
            Some(Ok(permit)) => Some(permit),
            None => None,
        };
        match self.ask(platform, session).await {
            Ok(id) => {
                lock(&self.cache).insert(key, id.clone(), now, self.ttl);
                Lookup::Answer(id)
            }
            Err(e) => {
                tracing::warn!(error = %e, timeout_ms = self.timeout.as_millis() as u64,
                    "session validation failed; canary cohorts fall back to tenant or client address, \
                     and Raptor sessions are not carried over, until auth answers again");
                *lock(&self.backoff_until) = Some(now + BACKOFF);
                Lookup::Unavailable(stale)
            }
        }
    }

    async fn ask(&self, platform: &Platform, session: &str) -> anyhow::Result<Option<Identity>> {
        let token = self.service_token(platform)?;
        let mut req =
            self.http.post(&self.url).bearer_auth(token).json(&serde_json::json!({ "token": session })).build()?;
        queue_platform::telemetry::inject_current(req.headers_mut());
        let resp = self.http.execute(req).await?;
        let status = resp.status();
        if matches!(status.as_u16(), 400 | 404 | 422) {
            // auth says the token is not a session it knows: not an identity (cached as such).
            // 401/403 (auth does not trust the proxy) and 429 are failures, not answers.
            return Ok(None);
        }
        if !status.is_success() {
            anyhow::bail!("auth answered {status}");
        }
        let body: ValidateResponse = resp.json().await?;
        Ok(body.valid.then_some(Identity {
            user_id: body.user_id,
            tenant_id: body.tenant_id,
            absolute_expires_at: body.absolute_expires_at,
        }))
    }

    /// A service token for auth, minted once a minute and reused.
    fn service_token(&self, platform: &Platform) -> anyhow::Result<String> {
        let mut slot = lock(&self.service_token);
        if let Some((t, at)) = slot.as_ref()
            && at.elapsed() < Duration::from_secs(TOKEN_TTL_SECS / 2)
        {
            return Ok(t.clone());
        }
        let t = platform.tokens.minter.mint("auth", &["sessions:validate"], TOKEN_TTL_SECS)?;
        *slot = Some((t.clone(), Instant::now()));
        Ok(t)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(u: &str) -> Option<Identity> {
        Some(Identity { user_id: Some(u.to_string()), tenant_id: None, absolute_expires_at: None })
    }

    #[test]
    fn refused_tokens_never_push_out_valid_sessions() {
        let ttl = Duration::from_secs(60);
        let now = Instant::now();
        let mut c = Cache::new(4);
        for i in 0..4u8 {
            c.insert([i; 32], id(&format!("u{i}")), now, ttl);
        }
        for i in 10..=255u8 {
            c.insert([i; 32], None, now, ttl);
        }
        assert_eq!(c.refused.len(), 4, "refusals are bounded");
        assert_eq!(c.refused_order.len(), 4);
        for i in 0..4u8 {
            assert!(matches!(c.get(&[i; 32], now, ttl), Cached::Fresh(Some(_))), "user {i} kept");
        }
        // Full of live sessions: a fifth is answered but not kept, and nobody is evicted.
        c.insert([5; 32], id("u5"), now, ttl);
        assert!(matches!(c.get(&[5; 32], now, ttl), Cached::Missing));
        assert_eq!(c.valid.len(), 4);
        // Once entries expire they make room; an expired one is still there to fall back on.
        let later = now + ttl + Duration::from_secs(1);
        assert!(matches!(c.get(&[0; 32], later, ttl), Cached::Stale(_)));
        c.insert([5; 32], id("u5"), later, ttl);
        assert!(matches!(c.get(&[5; 32], later, ttl), Cached::Fresh(Some(_))));
    }
}
