//! Email verification: code and link, expiry, attempts, atomic consumption, cooldown, caps, the
//! same answer for known and unknown addresses, and the Postmark mailer against a stand-in.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

use crate::support::{Auth, code_in, link_token_in};

const SEND: &str = "/api/v1/auth/email/verification";
const CONFIRM: &str = "/api/v1/auth/email/verification/confirm";

#[tokio::test]
async fn a_code_creates_the_user_and_returns_an_enrollment_session() {
    let auth = Auth::start().await;
    let code = auth.request_code("new@example.com").await;
    let mail = auth.mail_to("new@example.com", 0).await;
    assert!(mail.contains("Subject: Your Queue verification code"), "{mail}");
    assert!(mail.contains("http://localhost:8080/verify-email?token="), "{mail}");

    let r = auth
        .app
        .client
        .post(auth.app.url(CONFIRM))
        .json(&json!({"email": "New@Example.com", "code": code}))
        .send()
        .await
        .expect("confirm");
    assert_eq!(r.status(), 200);
    let cookie = r.headers().get("set-cookie").and_then(|v| v.to_str().ok()).expect("cookie").to_string();
    let v: Value = r.json().await.expect("json");
    assert_eq!((v["created"].as_bool(), v["session"]["kind"].as_str()), (Some(true), Some("enrollment")), "{v}");
    let token = v["session"]["token"].as_str().expect("token");
    assert!(cookie.starts_with(&format!("queue_session={token};")), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain-HTTP localhost development: no Secure: {cookie}");

    let (s, me) = auth.get("/api/v1/auth/session", token).await;
    assert_eq!(s, 200);
    assert_eq!(me["user"]["email"], "new@example.com");
    assert!(me["user"]["email_verified_at"].is_string());

    // The code is single use: a spent code does not verify (401, like a wrong backup code).
    let (s, _) = auth.post(CONFIRM, None, &json!({"email": "new@example.com", "code": code})).await;
    assert_eq!(s, 401);
    // Neither the code nor the link token is anywhere in the database.
    let link = link_token_in(&mail);
    for secret in [code.as_str(), link.as_str()] {
        assert_eq!(
            auth.scalar(&format!(
                "SELECT count(*) AS n FROM (SELECT row_to_json(t)::text AS j FROM auth.email_verifications t
                 UNION ALL SELECT row_to_json(t)::text FROM auth.mail_intents t
                 UNION ALL SELECT row_to_json(t)::text FROM auth.audit_outbox t) x WHERE j LIKE '%{secret}%'"
            ))
            .await,
            0
        );
    }
    for action in ["auth.email.verification_sent", "auth.user.created", "auth.email.verified", "auth.session.created"] {
        assert_eq!(
            auth.scalar(&format!("SELECT count(*) AS n FROM auth.audit_outbox WHERE event->>'action' = '{action}'"))
                .await,
            1,
            "{action}"
        );
    }
}

#[tokio::test]
async fn the_link_works_once() {
    let auth = Auth::start().await;
    auth.request_code("link@example.com").await;
    let token = link_token_in(&auth.mail_to("link@example.com", 0).await);
    let (s, v) = auth.post(CONFIRM, None, &json!({"token": token})).await;
    assert_eq!((s.as_u16(), v["session"]["kind"].as_str()), (200, Some("enrollment")), "{v}");
    let (s, v) = auth.post(CONFIRM, None, &json!({"token": token})).await;
    assert_eq!(s, 401, "{v}");
}

#[tokio::test]
async fn known_and_unknown_addresses_get_the_same_answers() {
    let auth = Auth::start().await;
    // A token per provisioning call: a write spends its token.
    let raptor = || auth.app.token("raptor", &["users:write"]);
    auth.post("/internal/v1/users", Some(&raptor()), &json!({"email": "known@example.com"})).await;
    let known = auth.post(SEND, None, &json!({"email": "known@example.com"})).await;
    let unknown = auth.post(SEND, None, &json!({"email": "unknown@example.com"})).await;
    assert_eq!(known, unknown);
    assert_eq!(known.0, 202);
    let known = auth.post(CONFIRM, None, &json!({"email": "known@example.com", "code": "00000000"})).await;
    let unknown = auth.post(CONFIRM, None, &json!({"email": "nobody@example.com", "code": "00000000"})).await;
    assert_eq!(known, unknown);
    assert_eq!(known.0, 401);
}

#[tokio::test]
async fn five_wrong_attempts_burn_the_code_and_fifteen_minutes_expire_it() {
    let auth = Auth::start_with(|c| c.limits.delay_after_failures = 100).await;
    let code = auth.request_code("try@example.com").await;
    let wrong = if code == "12345678" { "87654321" } else { "12345678" };
    for _ in 0..5 {
        let (s, _) = auth.post(CONFIRM, None, &json!({"email": "try@example.com", "code": wrong})).await;
        assert_eq!(s, 401);
    }
    let (s, _) = auth.post(CONFIRM, None, &json!({"email": "try@example.com", "code": code})).await;
    assert_eq!(s, 401, "the right code after 5 failures is refused");
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.users").await, 0);

    auth.advance(61);
    let code = auth.request_code_n("try@example.com", 1).await;
    auth.advance(15 * 60);
    let (s, _) = auth.post(CONFIRM, None, &json!({"email": "try@example.com", "code": code})).await;
    assert_eq!(s, 401, "15 minutes old: expired");
}

#[tokio::test]
async fn resends_wait_for_the_cooldown_and_stop_at_the_daily_cap() {
    let auth = Auth::start_with(|c| c.email.daily_cap_per_address = 2).await;
    let (s, _) = auth.post(SEND, None, &json!({"email": "cap@example.com"})).await;
    assert_eq!(s, 202);
    let r =
        auth.app.client.post(auth.app.url(SEND)).json(&json!({"email": "cap@example.com"})).send().await.expect("send");
    assert_eq!(r.status(), 429);
    let retry: i64 =
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).expect("retry-after");
    assert!((1..=60).contains(&retry));
    auth.advance(61);
    let (s, _) = auth.post(SEND, None, &json!({"email": "cap@example.com"})).await;
    assert_eq!(s, 202);
    auth.advance(61);
    let (s, v) = auth.post(SEND, None, &json!({"email": "cap@example.com"})).await;
    assert_eq!((s.as_u16(), v["error"]["code"].as_str()), (429, Some("rate_limited")));
    auth.advance(24 * 3600);
    let (s, _) = auth.post(SEND, None, &json!({"email": "cap@example.com"})).await;
    assert_eq!(s, 202, "a new day");
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.email_verifications").await, 3);
}

#[tokio::test]
async fn bad_input_is_refused() {
    let auth = Auth::start().await;
    for body in [json!({"email": "nope"}), json!({"email": "a@example.com", "extra": 1}), json!({})] {
        let (s, v) = auth.post(SEND, None, &body).await;
        assert_eq!(s, 422, "{body}: {v}");
    }
    for body in [
        json!({"email": "a@example.com", "code": "12ab5678"}),
        json!({"email": "a@example.com"}),
        json!({"email": "a@example.com", "code": "12345678", "token": "x"}),
    ] {
        let (s, v) = auth.post(CONFIRM, None, &body).await;
        assert_eq!(s, 422, "{body}: {v}");
    }
    assert_eq!(auth.scalar("SELECT count(*) AS n FROM auth.email_verifications").await, 0);
}

/// What the stand-in received: (server token header, body, the MessageID it answered).
type Received = Arc<Mutex<Vec<(Option<String>, Value, String)>>>;

/// A loopback Postmark: fails the first `fail_first` sends with 500, then accepts.
struct Postmark {
    url: String,
    received: Received,
    handle: actix_web::dev::ServerHandle,
}

impl Postmark {
    fn start(fail_first: usize) -> Self {
        let received: Received = Arc::default();
        let calls = Arc::new(Mutex::new(0usize));
        let r2 = received.clone();
        let server = HttpServer::new(move || {
            let received = r2.clone();
            let calls = calls.clone();
            App::new().route(
                "/email",
                web::post().to(move |req: HttpRequest, body: web::Json<Value>| {
                    let received = received.clone();
                    let calls = calls.clone();
                    async move {
                        let n = {
                            let mut c = calls.lock().expect("lock");
                            *c += 1;
                            *c
                        };
                        if n <= fail_first {
                            return HttpResponse::InternalServerError().json(json!({"ErrorCode": 500, "Message": "down"}));
                        }
                        let id = uuid::Uuid::new_v4().to_string();
                        let token = req.headers().get("x-postmark-server-token").and_then(|v| v.to_str().ok()).map(String::from);
                        received.lock().expect("lock").push((token, body.into_inner(), id.clone()));
                        HttpResponse::Ok().json(json!({"To": "x", "SubmittedAt": "2026-11-22T10:00:00Z", "MessageID": id, "ErrorCode": 0, "Message": "OK"}))
                    }
                }),
            )
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .expect("bind");
        let url = format!("http://{}", server.addrs()[0]);
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self { url, received, handle }
    }
}

#[tokio::test]
async fn postmark_sends_each_intent_once_and_keeps_the_message_id() {
    let postmark = Postmark::start(1);
    let token_dir = tempfile::tempdir().expect("tmp");
    let token_file = token_dir.path().join("postmark.token");
    std::fs::write(&token_file, "server-token-123\n").expect("write");
    let url = postmark.url.clone();
    let auth = Auth::start_with(move |c| {
        c.mailer.kind = "postmark".into();
        c.mailer.postmark_base_url = url.parse().expect("url");
        c.mailer.postmark_token_file = Some(token_file);
        c.mailer.from = "Queue <auth@example.com>".into();
    })
    .await;
    let (s, _) = auth.post(SEND, None, &json!({"email": "pm@example.com"})).await;
    assert_eq!(s, 202);
    // The first send fails (500); the relay retries and the second is accepted.
    let mut sent = 0;
    for _ in 0..200 {
        sent = auth.scalar("SELECT count(*) AS n FROM auth.mail_intents WHERE sent_at IS NOT NULL").await;
        if sent == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(sent, 1, "the intent was sent");
    let received = postmark.received.lock().expect("lock").clone();
    assert_eq!(received.len(), 1, "one message for one intent");
    let (token, body, message_id) = &received[0];
    assert_eq!(token.as_deref(), Some("server-token-123"));
    assert_eq!(
        (body["To"].as_str(), body["From"].as_str()),
        (Some("pm@example.com"), Some("Queue <auth@example.com>"))
    );
    assert_eq!(body["MessageStream"], "outbound");
    let code = code_in(body["TextBody"].as_str().expect("body"));
    assert_eq!(
        auth.scalar(&format!(
            "SELECT count(*) AS n FROM auth.mail_intents WHERE provider = 'postmark' AND provider_message_id = '{message_id}' AND attempts = 2 AND text_body = ''"
        ))
        .await,
        1
    );
    // Nothing more is sent later: the relay is idle with the intent done.
    let (s, _) = auth.post(CONFIRM, None, &json!({"email": "pm@example.com", "code": code})).await;
    assert_eq!(s, 200);
    assert_eq!(postmark.received.lock().expect("lock").len(), 1);
    postmark.handle.stop(false).await;
}
