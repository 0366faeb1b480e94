//! The outgoing HTTP client every service uses to call its peers. It exists so that no call
//! can forget the trace context: `send` stamps `traceparent` from the current span. With
//! `server.tls.ca_file` set, it trusts only that CA, so peers are reached over https and a
//! certificate from anywhere else (a public CA included) is refused.

use std::path::Path;
use std::time::Duration;

use crate::config::TlsConfig;
use crate::{telemetry, tls};

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
}

#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
}

impl HttpClient {
    pub fn new() -> Self {
        Self { inner: builder().build().unwrap_or_default() }
    }

    /// A client that trusts only the CA certificates in `ca_file` (service-to-service TLS).
    pub fn with_ca(ca_file: &Path) -> anyhow::Result<Self> {
        let roots = tls::read_ca(ca_file).map_err(|e| anyhow::anyhow!("server.tls.ca_file: {e}"))?;
        let inner = builder().tls_certs_only(roots).build()?;
        Ok(Self { inner })
    }

    /// The client `server.tls` asks for: [`Self::with_ca`] when a CA is configured, else the
    /// default roots.
    pub fn from_config(tls: &TlsConfig) -> anyhow::Result<Self> {
        match &tls.ca_file {
            Some(ca) => Self::with_ca(ca),
            None => Ok(Self::new()),
        }
    }

    /// The underlying client, for libraries that take one (JWKS fetching).
    pub fn reqwest(&self) -> &reqwest::Client {
        &self.inner
    }

    pub fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.inner.get(url)
    }

    pub fn post(&self, url: &str) -> reqwest::RequestBuilder {
        self.inner.post(url)
    }

    /// Sends `request` with the current trace context attached.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> reqwest::Result<reqwest::Response> {
        let mut request = request.build()?;
        telemetry::inject_current(request.headers_mut());
        self.inner.execute(request).await
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}
