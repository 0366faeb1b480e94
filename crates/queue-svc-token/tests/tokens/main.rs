//! Attacks on service-token verification. Each test asserts the specific reason for refusal,
//! so removing the check it exercises makes it fail (another check would refuse with another
//! reason, or the token would pass).

use actix_web::{App, HttpResponse, HttpServer, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use queue_svc_token::*;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct FixedClock(u64);
impl Clock for FixedClock {
    fn now_secs(&self) -> u64 {
        self.0
    }
}

const NOW: u64 = 1_800_000_000;

mod replay;

fn key() -> Arc<SigningKey> {
    let (private_pem, _) = generate_ed25519_pem().expect("generate");
    Arc::new(SigningKey::from_pem(&private_pem).expect("parse"))
}

fn verifier_for(issuers: Vec<(&str, &SigningKey)>) -> Verifier {
    let trusted = issuers
        .into_iter()
        .map(|(name, k)| TrustedIssuer { name: name.into(), source: IssuerSource::Static(vec![k.public().clone()]) })
        .collect();
    Verifier::new(VerifierSettings::new("audit"), trusted, reqwest::Client::new(), Arc::new(FixedClock(NOW)))
}

fn claims() -> Value {
    json!({"iss": "auth", "aud": "audit", "iat": NOW, "exp": NOW + 60, "jti": "j-1", "scope": ["audit:write"]})
}

fn with(mut base: Value, key: &str, v: Value) -> Value {
    base[key] = v;
    base
}

/// A compact JWS whose header and signature we write by hand.
fn raw_token(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

async fn verify(v: &Verifier, t: &str) -> Result<VerifiedToken, TokenError> {
    v.verify(t).await
}

#[tokio::test]
async fn a_well_formed_token_verifies() {
    let k = key();
    let v = verifier_for(vec![("auth", &k)]);
    let t = Minter::new("auth", k.clone()).sign(&claims()).expect("sign");
    let ok = verify(&v, &t).await.expect("valid token");
    assert_eq!(ok.issuer(), "auth");
    assert!(ok.has_scope("audit:write"));
    assert!(!ok.has_scope("audit:read"));
}

#[tokio::test]
async fn alg_none_is_refused() {
    let k = key();
    let v = verifier_for(vec![("auth", &k)]);
    let header = json!({"alg": "none", "typ": TOKEN_TYPE, "kid": k.kid()});
    let t = raw_token(&header, &claims(), b"");
    assert_eq!(verify(&v, &t).await, Err(TokenError::AlgorithmNotAllowed("none".into())));
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let k = key();
    let v = verifier_for(vec![("auth", &k)]);
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some(TOKEN_TYPE.into());
    header.kid = Some(k.kid().into());
    // The classic confusion attack: use the published public key as an HMAC secret.
    let public_pem = k.public().to_pem();
    let t = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(public_pem.as_bytes()));
    let t = t.expect("encode");
    assert_eq!(verify(&v, &t).await, Err(TokenError::AlgorithmNotAllowed("HS256".into())));
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let k = key();
    let v = verifier_for(vec![("auth", &k)]);
    let t = Minter::new("auth", k.clone()).sign(&with(claims(), "aud", json!("rbac"))).expect("sign");
    assert_eq!(verify(&v, &t).await, Err(TokenError::WrongAudience("rbac".into())));
}

#[tokio::test]
async fn several_audiences_are_refused_even_when_one_matches() {
    let k = key();
    let v = verifier_for(vec![("auth", &k)]);
    let t = Minter::new("auth", k.clone()).sign(&with(claims(), "aud", json!(["audit", "rbac"]))).expect("sign");
    assert_eq!(verify(&v, &t).await, Err(TokenError::MultipleAudiences));
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let k = key();
    let v = verifier_for(vec![("auth", &k)]);
    let c = with(with(claims(), "iat", json!(NOW - 120)), "exp", json!(NOW - 60));
    let t = Minter::new("auth", k.clone()).sign(&c).expect("sign");
    assert_eq!(verify(&v, &t).await, Err(TokenError::Expired));
    // Within the leeway it still passes: the check is about skew, not about the second.
    let c = with(with(claims(), "iat", json!(NOW - 70)), "exp", json!(NOW - 10));
    let t = Minter::new("auth", k.clone()).sign(&c).expect("sign");
    assert!(verify(&v, &t).await.is_ok());
}

#[tokio::test]
async fn iat_in_the_future_beyond_the_skew_is_refused() {
    let k = key();
    let v = verifier_for(vec![("auth", &k)]);
    let c = with(with(claims(), "iat", json!(NOW + 120)), "exp", json!(NOW + 180));
    let t = Minter::new("auth", k.clone()).sign(&c).expect("sign");
    assert_eq!(verify(&v, &t).await, Err(TokenError::IssuedInFuture));
}

#[tokio::test]
async fn a_lifetime_over_five_minutes_is_refused() {
    let k = key();
    let v = verifier_for(vec![("auth", &k)]);
    let t = Minter::new("auth", k.clone()).sign(&with(claims(), "exp", json!(NOW + 3600))).expect("sign");
    assert_eq!(verify(&v, &t).await, Err(TokenError::LifetimeTooLong));
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let k = key();
    let v = verifier_for(vec![("auth", &k)]);
    let t = Minter::new("auth", k.clone()).sign(&claims()).expect("sign");
    let parts: Vec<&str> = t.split('.').collect();
    let forged = with(claims(), "scope", json!(["audit:write", "rbac:grant"]));
    let t = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(forged.to_string()), parts[2]);
    assert_eq!(verify(&v, &t).await, Err(TokenError::BadSignature));
}

#[tokio::test]
async fn jku_x5u_and_jwk_headers_are_refused() {
    let k = key();
    let v = verifier_for(vec![("auth", &k)]);
    let m = Minter::new("auth", k.clone());
    for (name, value) in [
        ("jku", json!("http://127.0.0.1:1/jwks.json")),
        ("x5u", json!("http://127.0.0.1:1/cert.pem")),
        ("jwk", serde_json::to_value(k.public().to_jwk()).expect("jwk")),
    ] {
        // Signed with the right key: only the header member is wrong.
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.into());
        header.kid = Some(k.kid().into());
        match name {
            "jku" => header.jku = value.as_str().map(String::from),
            "x5u" => header.x5u = value.as_str().map(String::from),
            _ => header.jwk = Some(serde_json::from_value(value).expect("jwk")),
        }
        let t = m.sign_with_header(&header, &claims()).expect("sign");
        assert_eq!(verify(&v, &t).await, Err(TokenError::ForbiddenHeader(name.into())), "header {name}");
    }
}

#[tokio::test]
async fn a_wrong_typ_is_refused() {
    let k = key();
    let v = verifier_for(vec![("auth", &k)]);
    let m = Minter::new("auth", k.clone());
    for typ in [Some("JWT"), Some("at+jwt"), None] {
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = typ.map(String::from);
        header.kid = Some(k.kid().into());
        let t = m.sign_with_header(&header, &claims()).expect("sign");
        assert_eq!(verify(&v, &t).await, Err(TokenError::WrongType), "typ {typ:?}");
    }
}

#[tokio::test]
async fn an_untrusted_issuer_is_refused() {
    let k = key();
    let v = verifier_for(vec![("auth", &k)]);
    let t = Minter::new("mallory", k.clone()).sign(&with(claims(), "iss", json!("mallory"))).expect("sign");
    assert_eq!(verify(&v, &t).await, Err(TokenError::UntrustedIssuer("mallory".into())));
}

#[tokio::test]
async fn one_issuers_key_never_verifies_another_issuers_token() {
    let auth_key = key();
    let rbac_key = key();
    let v = verifier_for(vec![("auth", &auth_key), ("rbac", &rbac_key)]);
    // rbac signs a token claiming to be auth.
    let t = Minter::new("rbac", rbac_key.clone()).sign(&claims()).expect("sign");
    assert_eq!(verify(&v, &t).await, Err(TokenError::UnknownKey { issuer: "auth".into(), kid: rbac_key.kid().into() }));
}

/// A JWKS endpoint on a real loopback socket that counts how often it is fetched.
struct JwksServer {
    url: String,
    hits: Arc<AtomicUsize>,
    /// While false the endpoint answers 503.
    up: Arc<AtomicBool>,
    keys: Arc<Mutex<JwkSet>>,
    handle: actix_web::dev::ServerHandle,
}

impl JwksServer {
    async fn start(initial: &[&SigningKey]) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let keys = Arc::new(Mutex::new(JwkSet { keys: initial.iter().map(|k| k.public().to_jwk()).collect() }));
        let up = Arc::new(AtomicBool::new(true));
        let (h, k, u) = (hits.clone(), keys.clone(), up.clone());
        let server = HttpServer::new(move || {
            let (h, k, u) = (h.clone(), k.clone(), u.clone());
            App::new().route(
                "/.well-known/jwks.json",
                web::get().to(move || {
                    let (h, k, u) = (h.clone(), k.clone(), u.clone());
                    async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        if !u.load(Ordering::SeqCst) {
                            return HttpResponse::ServiceUnavailable().finish();
                        }
                        let set = k.lock().expect("lock").clone();
                        HttpResponse::Ok().json(set)
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { url: format!("http://{addr}/.well-known/jwks.json"), hits, up, keys, handle }
    }

    fn publish(&self, k: &SigningKey) {
        self.keys.lock().expect("lock").keys.push(k.public().to_jwk());
    }
}

fn jwks_verifier(url: &str, refetch_min_interval: Duration) -> Verifier {
    let mut settings = VerifierSettings::new("audit");
    settings.refetch_min_interval = refetch_min_interval;
    let trusted = vec![TrustedIssuer { name: "auth".into(), source: IssuerSource::Jwks(url.into()) }];
    Verifier::new(settings, trusted, reqwest::Client::new(), Arc::new(SystemClock))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_is_refused_after_one_rate_limited_refetch() {
    let published = key();
    let server = JwksServer::start(&[&published]).await;
    let v = jwks_verifier(&server.url, Duration::from_secs(3600));
    let good = Minter::new("auth", published.clone()).mint("audit", &["audit:write"], 60).expect("mint");
    verify(&v, &good).await.expect("published key verifies after the first fetch");
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);

    let stranger = key();
    let bad = Minter::new("auth", stranger.clone()).mint("audit", &["audit:write"], 60).expect("mint");
    let expected = Err(TokenError::UnknownKey { issuer: "auth".into(), kid: stranger.kid().into() });
    assert_eq!(verify(&v, &bad).await, expected);
    // The first fetch was moments ago, so the unknown kid did not trigger another one.
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    assert_eq!(verify(&v, &bad).await, expected);
    assert_eq!(server.hits.load(Ordering::SeqCst), 1, "refetches are rate-limited");
    server.handle.stop(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_triggers_a_refetch_that_finds_a_rotated_key() {
    let old = key();
    let server = JwksServer::start(&[&old]).await;
    let v = jwks_verifier(&server.url, Duration::ZERO);
    let t = Minter::new("auth", old.clone()).mint("audit", &[], 60).expect("mint");
    verify(&v, &t).await.expect("old key");

    let new = key();
    let t = Minter::new("auth", new.clone()).mint("audit", &[], 60).expect("mint");
    let expected = Err(TokenError::UnknownKey { issuer: "auth".into(), kid: new.kid().into() });
    assert_eq!(verify(&v, &t).await, expected, "not published yet");
    let hits_before = server.hits.load(Ordering::SeqCst);
    server.publish(&new);
    verify(&v, &t).await.expect("the rotated key is fetched on demand");
    assert_eq!(server.hits.load(Ordering::SeqCst), hits_before + 1);
    server.handle.stop(false).await;
}

#[tokio::test]
async fn an_unreachable_jwks_is_reported_as_unavailable() {
    // Bind and drop: nothing listens on this port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let v = jwks_verifier(&format!("http://127.0.0.1:{port}/.well-known/jwks.json"), Duration::ZERO);
    let k = key();
    let t = Minter::new("auth", k.clone()).mint("audit", &[], 60).expect("mint");
    assert_eq!(verify(&v, &t).await, Err(TokenError::KeysUnavailable("auth".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fetch_is_retried_soon_and_a_successful_one_is_not() {
    let k = key();
    let server = JwksServer::start(&[&k]).await;
    let mut settings = VerifierSettings::new("audit");
    settings.refetch_min_interval = Duration::from_secs(3600);
    settings.failed_fetch_backoff = Duration::ZERO;
    let trusted = vec![TrustedIssuer { name: "auth".into(), source: IssuerSource::Jwks(server.url.clone()) }];
    let v = Verifier::new(settings, trusted, reqwest::Client::new(), Arc::new(SystemClock));

    // The peer is down while we start: the periodic refresh fails.
    server.up.store(false, Ordering::SeqCst);
    v.refresh_all().await;
    // It comes up; the first token is verified at once, not an hour later.
    server.up.store(true, Ordering::SeqCst);
    let t = Minter::new("auth", k.clone()).mint("audit", &[], 60).expect("mint");
    verify(&v, &t).await.expect("found after the peer came up");

    // After that success, an unknown kid does not fetch again within the interval.
    let hits = server.hits.load(Ordering::SeqCst);
    let stranger = key();
    let t2 = Minter::new("auth", stranger.clone()).mint("audit", &[], 60).expect("mint");
    assert!(matches!(verify(&v, &t2).await, Err(TokenError::UnknownKey { .. })));
    assert_eq!(server.hits.load(Ordering::SeqCst), hits);
    server.handle.stop(false).await;
}

#[tokio::test]
async fn garbage_is_malformed() {
    let k = key();
    let v = verifier_for(vec![("auth", &k)]);
    for t in ["", "a.b", "a.b.c.d", "!!!.???.***", &"x".repeat(10_000)] {
        assert_eq!(verify(&v, t).await, Err(TokenError::Malformed), "{t:.20}");
    }
}

/// A verified token is remembered, but its expiry is still checked on every use.
#[tokio::test]
async fn a_cached_token_still_expires() {
    struct MovingClock(std::sync::atomic::AtomicU64);
    impl Clock for MovingClock {
        fn now_secs(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }
    let k = key();
    let clock = Arc::new(MovingClock(std::sync::atomic::AtomicU64::new(NOW)));
    let trusted = vec![TrustedIssuer { name: "auth".into(), source: IssuerSource::Static(vec![k.public().clone()]) }];
    let v = Verifier::new(VerifierSettings::new("audit"), trusted, reqwest::Client::new(), clock.clone());
    let t = Minter::new("auth", k.clone()).sign(&claims()).expect("sign");
    verify(&v, &t).await.expect("fresh");
    verify(&v, &t).await.expect("cached");
    clock.0.store(NOW + 60 + 31, Ordering::SeqCst);
    assert_eq!(verify(&v, &t).await, Err(TokenError::Expired));
}
