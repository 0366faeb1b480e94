//! An OTLP/HTTP collector stand-in: a loopback server that accepts `POST …/v1/traces` under any
//! base path and keeps every export body with the path it came to. Give each service its own
//! base path (`telemetry.otlp_endpoint = "<url>/<service>"`) to know who exported what.
//!
//! Bodies are kept as sent (protobuf `ExportTraceServiceRequest`); a span's 16-byte trace id is
//! written verbatim in it, so [`OtlpSink::exported_trace`] finds a trace by its raw bytes.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use std::sync::{Arc, Mutex};

/// One export request: the path it was posted to and its body.
pub type Export = (String, Vec<u8>);

pub struct OtlpSink {
    /// Base URL, e.g. `http://127.0.0.1:40123`; exporters post to `<url>[/prefix]/v1/traces`.
    pub url: String,
    exports: Arc<Mutex<Vec<Export>>>,
    handle: actix_web::dev::ServerHandle,
}

impl OtlpSink {
    /// Starts the collector on a free loopback port (call from within a tokio runtime).
    pub fn start() -> Self {
        let exports = Arc::new(Mutex::new(Vec::new()));
        let e = exports.clone();
        let server = HttpServer::new(move || {
            let e = e.clone();
            App::new().default_service(web::post().to(move |req: HttpRequest, body: web::Bytes| {
                let e = e.clone();
                async move {
                    if !req.path().ends_with("/v1/traces") {
                        return HttpResponse::NotFound().finish();
                    }
                    e.lock().expect("lock").push((req.path().to_string(), body.to_vec()));
                    HttpResponse::Ok().content_type("application/x-protobuf").finish()
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind");
        let url = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { url, exports, handle }
    }

    /// The endpoint to configure for `service`: `<url>/<service>`.
    pub fn endpoint_for(&self, service: &str) -> String {
        format!("{}/{service}", self.url)
    }

    /// Every export received so far.
    pub fn exports(&self) -> Vec<Export> {
        self.exports.lock().expect("lock").clone()
    }

    /// Whether an export posted under `/<service>/` carries a span of `trace_id` (32 hex digits).
    pub fn exported_trace(&self, service: &str, trace_id: &str) -> bool {
        let raw = trace_bytes(trace_id);
        let prefix = format!("/{service}/");
        self.exports().iter().any(|(path, body)| path.starts_with(&prefix) && body.windows(16).any(|w| w == raw))
    }
}

/// A W3C trace id (32 hex digits) as the 16 bytes OTLP carries.
pub fn trace_bytes(trace_id: &str) -> Vec<u8> {
    assert_eq!(trace_id.len(), 32, "a trace id is 32 hex digits: {trace_id}");
    (0..16).map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).expect("hex")).collect()
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        // Stops accepting at once; the server task ends with the runtime.
        drop(self.handle.stop(false));
    }
}
