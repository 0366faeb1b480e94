//! `Caller` and `SignedIn` through real sockets: a service token on the route's policy, a
//! session through the service's registered `SessionSource`, and the refusals of each.

use super::*;
use futures_util::future::LocalBoxFuture;
use queue_platform::sessions::SessionSource;
use queue_platform::{ApiError, Caller, SignedIn};

/// Sessions as a test knows them: `good` is alice, anything else is refused.
struct Fixed;

impl SessionSource for Fixed {
    type User = String;

    fn validate<'a>(&'a self, _: &'a Platform, token: &'a str) -> LocalBoxFuture<'a, Result<String, ApiError>> {
        Box::pin(async move {
            match token {
                "good" => Ok("alice".to_string()),
                _ => Err(ApiError::Unauthorized("no such session".into())),
            }
        })
    }
}

async fn either(caller: Caller<String>) -> HttpResponse {
    let who = match &caller {
        Caller::Service(s) => s.issuer().to_string(),
        Caller::User(u) => u.clone(),
    };
    HttpResponse::Ok().json(serde_json::json!({"kind": caller.kind(), "who": who}))
}

async fn user_only(user: SignedIn<String>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"who": user.into_inner()}))
}

async fn start_caller(sessions: bool) -> Server {
    let world = World::new();
    let platform = crate::test_platform(&world, &Default::default());
    let source = sessions.then(|| Fixed.into_data());
    let running = queue_platform::server::serve(platform, &server_config(), Signals::Ignore, move |cfg| {
        if let Some(s) = &source {
            cfg.app_data(s.clone());
        }
        cfg.service(
            web::resource("/c/either")
                .app_data(ServicePolicy::issuers(&["auth"]).scope("audit:read").data())
                .get(either),
        )
        .route("/c/user", web::get().to(user_only));
    })
    .expect("serve");
    let base = format!("http://{}", running.addr);
    tokio::spawn(running.wait());
    Server { base, world, client: reqwest::Client::new() }
}

impl Server {
    async fn get_as(&self, path: &str, bearer: Option<&str>, cookie: Option<&str>) -> (u16, Value) {
        let mut r = self.client.get(format!("{}{path}", self.base));
        if let Some(t) = bearer {
            r = r.bearer_auth(t);
        }
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        let r = r.send().await.expect("send");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn a_caller_is_a_service_on_the_route_policy_or_a_user_of_the_session_source() {
    let s = start_caller(true).await;
    let t = s.world.minter("auth").mint("audit", &["audit:read"], 60).expect("mint");
    let (status, body) = s.get_as("/c/either", Some(&t), None).await;
    assert_eq!((status, body["kind"].as_str(), body["who"].as_str()), (200, Some("service"), Some("auth")), "{body}");
    let raptor = s.world.minter("raptor").mint("audit", &["audit:read"], 60).expect("mint");
    let (status, body) = s.get_as("/c/either", Some(&raptor), None).await;
    assert_eq!(status, 403, "the route's policy still decides: {body}");
    let (status, body) = s.get_as("/c/either", None, Some("queue_session=good")).await;
    assert_eq!((status, body["kind"].as_str(), body["who"].as_str()), (200, Some("user"), Some("alice")), "{body}");
    let (status, body) = s.get_as("/c/either", Some("bad"), None).await;
    assert_eq!((status, body["error"]["message"].as_str()), (401, Some("no such session")), "{body}");
    let (status, body) = s.get_as("/c/either", None, None).await;
    let message = body["error"]["message"].as_str();
    assert_eq!((status, message), (401, Some("a service token or a user session is required")), "{body}");
}

#[tokio::test]
async fn without_a_session_source_a_service_takes_service_tokens_only() {
    let s = start_caller(false).await;
    let (status, body) = s.get_as("/c/either", None, Some("queue_session=good")).await;
    let message = body["error"]["message"].as_str();
    assert_eq!((status, message), (401, Some("this service accepts service tokens only")), "{body}");
    let (status, body) = s.get_as("/c/either", None, None).await;
    assert_eq!((status, body["error"]["message"].as_str()), (401, Some("missing service token")), "{body}");
}

#[tokio::test]
async fn signed_in_takes_a_session_only() {
    let s = start_caller(true).await;
    let (status, body) = s.get_as("/c/user", Some("good"), None).await;
    assert_eq!((status, body["who"].as_str()), (200, Some("alice")), "{body}");
    let (status, body) = s.get_as("/c/user", None, Some("queue_session=good")).await;
    assert_eq!((status, body["who"].as_str()), (200, Some("alice")), "{body}");
    let (status, body) = s.get_as("/c/user", None, None).await;
    assert_eq!((status, body["error"]["message"].as_str()), (401, Some("sign in first")), "{body}");
    // A service token is no session: the source refuses it like any other unknown token.
    let t = s.world.minter("auth").mint("audit", &["audit:read"], 60).expect("mint");
    let (status, body) = s.get_as("/c/user", Some(&t), None).await;
    assert_eq!((status, body["error"]["message"].as_str()), (401, Some("no such session")), "{body}");
}
