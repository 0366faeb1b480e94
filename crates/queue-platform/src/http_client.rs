//! The outgoing HTTP client every service uses to call its peers. It exists so that no call
//! can forget the trace context: `send` stamps `traceparent` from the current span.

use std::time::Duration;

use crate::telemetry;

#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
}

impl HttpClient {
    pub fn new() -> Self {
        let inner = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self { inner }
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
