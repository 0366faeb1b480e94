//! Logs, traces and trace-context propagation.
//!
//! `init` installs the process-wide subscriber (binaries only; tests leave it alone): an
//! env-filter, JSON or pretty output, and an OpenTelemetry layer whose spans go to an OTLP/HTTP
//! collector when `telemetry.otlp_endpoint` is set. The tracer provider is always present so
//! every span has a W3C trace id, exported or not. [`extract_parent`] reads `traceparent` on
//! the way in; [`inject_current`] writes it on the way out (see `http_client`).

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryConfig};

/// Flushes and stops span export when dropped; keep it alive for the life of the process.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("telemetry: span export did not shut down cleanly: {e}");
        }
    }
}

/// Builds the tracer provider: with a batch OTLP/HTTP exporter when an endpoint is configured.
pub fn tracer_provider(service: &str, config: &TelemetryConfig) -> anyhow::Result<SdkTracerProvider> {
    let resource = Resource::builder().with_service_name(service.to_string()).build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = &config.otlp_endpoint {
        let mut url = endpoint.as_str().trim_end_matches('/').to_string();
        if !url.ends_with("/v1/traces") {
            url.push_str("/v1/traces");
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(url).build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// Installs the global subscriber for a service binary.
pub fn init(service: &'static str, config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    let provider = tracer_provider(service, config)?;
    let filter = EnvFilter::try_new(&config.level)?;
    let fmt = match config.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed(),
    };
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
    tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init()?;
    Ok(TelemetryGuard { provider })
}

struct HeaderMapExtractor<'a>(&'a actix_web::http::header::HeaderMap);

impl Extractor for HeaderMapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct ReqwestInjector<'a>(&'a mut http::HeaderMap);

impl Injector for ReqwestInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(key), http::HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// The remote parent named by an incoming `traceparent` (an empty context when absent or
/// malformed: a bad header starts a new trace, it never fails the request).
pub fn extract_parent(headers: &actix_web::http::header::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderMapExtractor(headers))
}

/// Writes `traceparent` for the current span into outgoing headers.
pub fn inject_current(headers: &mut http::HeaderMap) {
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut ReqwestInjector(headers));
}

/// The trace id of `span`, if it has a valid one (it does whenever the OpenTelemetry layer is
/// installed).
pub fn trace_id_of(span: &tracing::Span) -> Option<TraceId> {
    let id = span.context().span().span_context().trace_id();
    (id != TraceId::INVALID).then_some(id)
}

/// The trace id carried by a context (for example an extracted remote parent).
pub fn trace_id_in(cx: &Context) -> Option<TraceId> {
    let id = cx.span().span_context().trace_id();
    (id != TraceId::INVALID).then_some(id)
}

/// A new request or trace id: 32 hex digits, unique without a system call per request. Each
/// thread draws a random 64-bit prefix once; the suffix is a bijective mix (splitmix64) of a
/// per-thread counter, so ids never repeat within a thread and differ across threads and
/// restarts. Not a secret: nothing is authorised by a request or trace id.
pub fn new_id() -> String {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<(u64, u64)> = Cell::new({
            let r = uuid::Uuid::new_v4().as_u128();
            ((r >> 64) as u64, r as u64)
        });
    }
    let (prefix, counter) = STATE.with(|s| {
        let (p, c) = s.get();
        s.set((p, c.wrapping_add(1)));
        (p, c)
    });
    let mut z = counter.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let mut out = [0u8; 32];
    for (i, byte) in prefix.to_be_bytes().into_iter().chain(z.to_be_bytes()).enumerate() {
        out[2 * i] = b"0123456789abcdef"[(byte >> 4) as usize];
        out[2 * i + 1] = b"0123456789abcdef"[(byte & 0xf) as usize];
    }
    // Hex digits: always UTF-8.
    String::from_utf8(out.to_vec()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_are_32_hex_digits_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| new_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())));
        let other = std::thread::spawn(new_id).join().expect("thread");
        assert!(!ids.contains(&other));
    }
}
