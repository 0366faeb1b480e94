//! Who is calling, for sticky canary cohorts: the session is validated with auth's
//! `POST /internal/v1/sessions/validate` (a service token with `sessions:validate`), and the
//! answer is cached briefly, keyed by a SHA-256 of the session token (the token itself is never
//! kept or logged). When auth is not configured, slow or down, the cohort falls back to the
//! tenant header and then the client address; a failure never fails the request, and after one
//! the proxy stops asking for a few seconds so a down auth does not slow every request.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use queue_platform::Platform;

/// The fields of auth's answer the proxy needs.
#[derive(Debug, Clone, Deserialize)]
pub struct Identity {
    pub user_id: Option<String>,
    pub tenant_id: Option<String>,
}

#[derive(Deserialize)]
struct ValidateResponse {
    valid: bool,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    tenant_id: Option<String>,
}

const MAX_CACHE: usize = 100_000;

/// Validation answers by SHA-256 of the session token, with when they were fetched.
type Cache = HashMap<[u8; 32], (Option<Identity>, Instant)>;
const TOKEN_TTL_SECS: u64 = 60;
const BACKOFF: Duration = Duration::from_secs(5);

pub struct IdentityClient {
    url: String,
    http: reqwest::Client,
    timeout: Duration,
    ttl: Duration,
    cache: Mutex<Cache>,
    service_token: Mutex<Option<(String, Instant)>>,
    backoff_until: Mutex<Option<Instant>>,
}

impl IdentityClient {
    /// `roots`: CA certificates an https `auth_url` may chain to besides the platform's own
    /// (`server.tls.ca_file`).
    pub fn new(
        auth_url: &url::Url,
        timeout: Duration,
        ttl: Duration,
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
            cache: Mutex::new(HashMap::new()),
            service_token: Mutex::new(None),
            backoff_until: Mutex::new(None),
        })
    }

    /// The identity behind a session token; `None` when invalid or unknown.
    pub async fn identify(&self, platform: &Platform, session: &str) -> Option<Identity> {
        let key: [u8; 32] = Sha256::digest(session.as_bytes()).into();
        let now = Instant::now();
        if let Some((id, at)) = lock(&self.cache).get(&key)
            && now.duration_since(*at) < self.ttl
        {
            return id.clone();
        }
        if lock(&self.backoff_until).is_some_and(|until| now < until) {
            return None;
        }
        match self.ask(platform, session).await {
            Ok(id) => {
                let mut cache = lock(&self.cache);
                if cache.len() >= MAX_CACHE {
                    let ttl = self.ttl;
                    cache.retain(|_, (_, at)| now.duration_since(*at) < ttl);
                    if cache.len() >= MAX_CACHE {
                        cache.clear();
                    }
                }
                cache.insert(key, (id.clone(), now));
                id
            }
            Err(e) => {
                tracing::warn!(error = %e, timeout_ms = self.timeout.as_millis() as u64,
                    "session validation failed; canary cohorts fall back to tenant or client address");
                *lock(&self.backoff_until) = Some(now + BACKOFF);
                None
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
        Ok(body.valid.then_some(Identity { user_id: body.user_id, tenant_id: body.tenant_id }))
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
