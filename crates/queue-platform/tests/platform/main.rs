//! The platform through real sockets, without a database: route policies for service callers,
//! the JSON error policy, trace context in and out, metrics.

use actix_web::{HttpResponse, web};
use queue_platform::config::{ServerConfig, TelemetryConfig, TokensConfig, TrustedIssuerConfig};
use queue_platform::{Platform, ServiceCaller, ServicePolicy, Signals};
use queue_svc_token::{Minter, SigningKey, generate_ed25519_pem};
use serde_json::Value;
use std::sync::Arc;

mod caller;
mod replay;
mod tls;

struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        for name in ["audit", "auth", "raptor", "stranger"] {
            let (private_pem, public_pem) = generate_ed25519_pem().expect("gen");
            std::fs::write(dir.path().join(format!("{name}.pem")), private_pem.as_bytes()).expect("write");
            std::fs::write(dir.path().join(format!("{name}.pub.pem")), public_pem).expect("write");
        }
        Self { dir }
    }

    fn minter(&self, name: &str) -> Minter {
        let pem = std::fs::read_to_string(self.dir.path().join(format!("{name}.pem"))).expect("read");
        Minter::new(name, Arc::new(SigningKey::from_pem(&pem).expect("key")))
    }

    fn tokens_config(&self) -> TokensConfig {
        TokensConfig {
            issuer: "audit".into(),
            signing_key: self.dir.path().join("audit.pem"),
            previous_public_keys: vec![],
            trusted: ["auth", "raptor"]
                .iter()
                .map(|i| TrustedIssuerConfig {
                    issuer: i.to_string(),
                    jwks_url: None,
                    public_key: Some(self.dir.path().join(format!("{i}.pub.pem"))),
                })
                .collect(),
            leeway_secs: 30,
            jwks_refresh_secs: 300,
            jwks_refetch_min_secs: 30,
            replay_max_entries: queue_svc_token::REPLAY_MAX_ENTRIES,
        }
    }
}

#[derive(serde::Deserialize)]
struct Echo {
    n: u32,
}

async fn write_events(caller: ServiceCaller) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"caller": caller.issuer()}))
}

async fn echo(body: web::Json<Echo>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"n": body.n}))
}

async fn boom() -> Result<HttpResponse, queue_platform::ApiError> {
    Err(queue_platform::ApiError::internal(anyhow::anyhow!("secret detail: connection string postgres://u:pw@h")))
}

/// Routes with the policies under test.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/t/events")
            .app_data(ServicePolicy::issuers(&["auth"]).scope("audit:write").data())
            .post(write_events),
    )
    .service(web::resource("/t/no-policy").get(write_events))
    .route("/t/echo", web::post().to(echo))
    .route("/t/boom", web::get().to(boom));
}

struct Server {
    base: String,
    world: World,
    client: reqwest::Client,
}

fn server_config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        public_url: None,
        workers: Some(1),
        shutdown_timeout_secs: 1,
        max_body_bytes: 1024,
        tls: Default::default(),
    }
}

async fn start() -> Server {
    start_with(TelemetryConfig::default()).await
}

/// The platform of a test service named `queue-test`, trusting `world`'s issuers.
fn test_platform(world: &World, telemetry: &TelemetryConfig) -> std::sync::Arc<Platform> {
    Platform::new("queue-test", None, &world.tokens_config(), telemetry, utoipa::openapi::OpenApi::default())
        .expect("platform")
}

async fn start_with(telemetry: TelemetryConfig) -> Server {
    let world = World::new();
    let platform = test_platform(&world, &telemetry);
    let running = queue_platform::server::serve(platform, &server_config(), Signals::Ignore, routes).expect("serve");
    let base = format!("http://{}", running.addr);
    tokio::spawn(running.wait());
    Server { base, world, client: reqwest::Client::new() }
}

impl Server {
    async fn post_as(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut r = self.client.post(format!("{}{path}", self.base));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.expect("send");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn a_route_accepts_its_issuer_with_its_scope() {
    let s = start().await;
    let t = s.world.minter("auth").mint("audit", &["audit:write"], 60).expect("mint");
    let (status, body) = s.post_as("/t/events", Some(&t)).await;
    assert_eq!((status, body["caller"].as_str()), (200, Some("auth")));
}

#[tokio::test]
async fn a_missing_scope_is_forbidden() {
    let s = start().await;
    let t = s.world.minter("auth").mint("audit", &["audit:read"], 60).expect("mint");
    let (status, body) = s.post_as("/t/events", Some(&t)).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["message"], "missing scope `audit:write`");
}

#[tokio::test]
async fn a_trusted_issuer_not_allowed_on_the_route_is_forbidden() {
    let s = start().await;
    // raptor is trusted by the service, but this route accepts only auth.
    let t = s.world.minter("raptor").mint("audit", &["audit:write"], 60).expect("mint");
    let (status, body) = s.post_as("/t/events", Some(&t)).await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["message"], "issuer `raptor` may not call this route");
    // …and the same token is fine where any trusted issuer is accepted.
    let r = s.client.get(format!("{}/internal/v1/caller", s.base)).bearer_auth(&t).send().await.expect("send");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn no_token_bad_token_and_untrusted_issuers_are_unauthorized() {
    let s = start().await;
    let (status, body) = s.post_as("/t/events", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) = s.post_as("/t/events", Some("not.a.token")).await;
    assert_eq!(status, 401);
    let t = s.world.minter("stranger").mint("audit", &["audit:write"], 60).expect("mint");
    let (status, body) = s.post_as("/t/events", Some(&t)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["message"], "invalid service token", "the reason is logged, not told");
}

#[tokio::test]
async fn a_route_without_a_policy_accepts_nobody() {
    let s = start().await;
    let t = s.world.minter("auth").mint("audit", &["audit:write"], 60).expect("mint");
    let r = s.client.get(format!("{}/t/no-policy", s.base)).bearer_auth(&t).send().await.expect("send");
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn extractor_failures_and_unknown_routes_answer_in_the_json_error_shape() {
    let s = start().await;
    let send = |body: &'static str, ct: &'static str| {
        s.client.post(format!("{}/t/echo", s.base)).header("content-type", ct).body(body).send()
    };
    let cases = [
        (send("{not json", "application/json").await.expect("send"), 400, "bad_request"),
        (send(r#"{"n": "seven"}"#, "application/json").await.expect("send"), 422, "invalid"),
        (send(r#"{"n": 7}"#, "text/plain").await.expect("send"), 400, "bad_request"),
        (
            send(
                Box::leak(format!(r#"{{"n": 1, "pad": "{}"}}"#, "x".repeat(4096)).into_boxed_str()),
                "application/json",
            )
            .await
            .expect("send"),
            413,
            "payload_too_large",
        ),
        (s.client.get(format!("{}/nope", s.base)).send().await.expect("send"), 404, "not_found"),
    ];
    for (r, status, code) in cases {
        assert_eq!(r.status().as_u16(), status);
        let body: Value = r.json().await.expect("json body");
        assert_eq!(body["error"]["code"], code);
    }
    let ok: Value = send(r#"{"n": 7}"#, "application/json").await.expect("send").json().await.expect("json");
    assert_eq!(ok["n"], 7);
}

#[tokio::test]
async fn internal_errors_are_opaque() {
    let s = start().await;
    let r = s.client.get(format!("{}/t/boom", s.base)).send().await.expect("send");
    assert_eq!(r.status(), 500);
    let text = r.text().await.expect("body");
    assert!(!text.contains("secret") && !text.contains("pw@"), "{text}");
    assert!(text.contains("internal error"));
}

#[tokio::test]
async fn an_incoming_traceparent_names_the_trace_and_a_missing_one_starts_a_new_trace() {
    let s = start().await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = s
        .client
        .get(format!("{}/healthz", s.base))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.headers().get("x-trace-id").and_then(|v| v.to_str().ok()), Some(trace));

    let r = s.client.get(format!("{}/healthz", s.base)).header("traceparent", "garbage").send().await.expect("send");
    assert_eq!(r.status(), 200, "a bad traceparent never fails the request");
    let fresh = r.headers().get("x-trace-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert_eq!(fresh.len(), 32);
    assert_ne!(fresh, trace);
}

/// The trace id a request from `local` (the client socket's address) with `traceparent` ends up in.
async fn trace_of(s: &Server, local: [u8; 4], traceparent: &str) -> String {
    let client = reqwest::Client::builder().local_address(std::net::IpAddr::from(local)).build().expect("client");
    let r = client.get(format!("{}/healthz", s.base)).header("traceparent", traceparent).send().await.expect("send");
    assert_eq!(r.status(), 200);
    r.headers().get("x-trace-id").and_then(|v| v.to_str().ok()).expect("x-trace-id").to_string()
}

#[tokio::test]
async fn a_traceparent_is_continued_only_from_a_trusted_peer() {
    let telemetry = TelemetryConfig {
        trusted_peers: queue_platform::net::TrustedNetworks::parse(&["127.0.0.1"]).expect("valid"),
        ..TelemetryConfig::default()
    };
    let s = start_with(telemetry).await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let tp = format!("00-{trace}-00f067aa0ba902b7-01");
    assert_eq!(trace_of(&s, [127, 0, 0, 1], &tp).await, trace, "a trusted peer's trace is continued");
    let fresh = trace_of(&s, [127, 0, 0, 2], &tp).await;
    assert_eq!(fresh.len(), 32);
    assert_ne!(fresh, trace, "an untrusted peer's traceparent starts a new trace");

    // Nobody trusted: not even loopback.
    let telemetry =
        TelemetryConfig { trusted_peers: queue_platform::net::TrustedNetworks::none(), ..TelemetryConfig::default() };
    let s = start_with(telemetry).await;
    assert_ne!(trace_of(&s, [127, 0, 0, 1], &tp).await, trace);
}

#[tokio::test]
async fn metrics_count_requests_per_route() {
    let s = start().await;
    for _ in 0..3 {
        s.client.get(format!("{}/healthz", s.base)).send().await.expect("send");
    }
    s.client.get(format!("{}/nope", s.base)).send().await.expect("send");
    let text = s.client.get(format!("{}/metrics", s.base)).send().await.expect("send").text().await.expect("text");
    let line = text
        .lines()
        .find(|l| l.starts_with("queue_http_requests_total") && l.contains("route=\"/healthz\""))
        .unwrap_or_else(|| panic!("no healthz counter in\n{text}"));
    assert!(line.ends_with(" 3"), "{line}");
    assert!(text.contains("route=\"unmatched\""), "unknown paths are not separate series");
    assert!(text.contains("queue_http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn jwks_and_openapi_are_served() {
    let s = start().await;
    let jwks: Value = s
        .client
        .get(format!("{}/.well-known/jwks.json", s.base))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let kid = s.world.minter("audit").key().kid().to_string();
    assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
    assert_eq!(jwks["keys"][0]["kty"], "OKP");
    assert!(jwks["keys"][0].get("d").is_none(), "never the private part");
    let doc: Value =
        s.client.get(format!("{}/openapi.json", s.base)).send().await.expect("send").json().await.expect("json");
    for path in ["/healthz", "/readyz", "/metrics", "/.well-known/jwks.json", "/internal/v1/caller"] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
}

/// Outgoing calls through the platform's client carry the current trace.
#[tokio::test]
async fn outgoing_calls_carry_traceparent() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    let seen = Arc::new(std::sync::Mutex::new(None::<String>));
    let record = seen.clone();
    let server = actix_web::HttpServer::new(move || {
        let record = record.clone();
        actix_web::App::new().default_service(web::to(move |req: actix_web::HttpRequest| {
            let record = record.clone();
            async move {
                *record.lock().expect("lock") =
                    req.headers().get("traceparent").and_then(|v| v.to_str().ok()).map(String::from);
                HttpResponse::Ok().finish()
            }
        }))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .expect("bind");
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);

    let provider = queue_platform::telemetry::tracer_provider("test", &Default::default()).expect("provider");
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);
    let span = tracing::info_span!("outgoing");
    let trace = queue_platform::telemetry::trace_id_of(&span).expect("span has a trace id").to_string();
    let client = queue_platform::http_client::HttpClient::new();
    {
        use tracing::Instrument;
        client.send(client.get(&format!("http://{addr}/x"))).instrument(span).await.expect("send");
    }
    let header = seen.lock().expect("lock").clone().expect("traceparent sent");
    assert!(header.starts_with(&format!("00-{trace}-")), "{header}");
    handle.stop(false).await;
}
