//! One use per service token on state-changing requests (issue 16 item 10), through real
//! sockets: a token spent on a POST is refused the second time; reads, and POSTs that only
//! read (`ReadOnlyRoute`), may reuse it.

use super::*;
use queue_platform::service_auth::ReadOnlyRoute;

async fn lookup(caller: ServiceCaller) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"caller": caller.issuer()}))
}

/// The shared routes plus a POST that only reads.
fn routes_with_lookup(cfg: &mut web::ServiceConfig) {
    routes(cfg);
    cfg.service(
        web::resource("/t/lookup")
            .app_data(ServicePolicy::issuers(&["auth"]).scope("audit:write").data())
            .app_data(ReadOnlyRoute)
            .post(lookup),
    );
}

async fn start_with_lookup() -> Server {
    let world = World::new();
    let platform = Platform::new(
        "queue-test",
        None,
        &world.tokens_config(),
        &Default::default(),
        utoipa::openapi::OpenApi::default(),
    )
    .expect("platform");
    let running =
        queue_platform::server::serve(platform, &server_config(), Signals::Ignore, routes_with_lookup).expect("serve");
    let base = format!("http://{}", running.addr);
    tokio::spawn(running.wait());
    Server { base, world, client: reqwest::Client::new() }
}

#[tokio::test]
async fn a_token_spent_on_a_write_is_refused_the_second_time() {
    let s = start().await;
    let t = s.world.minter("auth").mint("audit", &["audit:write"], 60).expect("mint");
    let (status, _) = s.post_as("/t/events", Some(&t)).await;
    assert_eq!(status, 200);
    let (status, body) = s.post_as("/t/events", Some(&t)).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("token_replayed")), "{body}");
    // A fresh token (fresh jti) for the same write is fine.
    let fresh = s.world.minter("auth").mint("audit", &["audit:write"], 60).expect("mint");
    assert_eq!(s.post_as("/t/events", Some(&fresh)).await.0, 200);
}

#[tokio::test]
async fn reads_and_read_only_posts_may_reuse_a_token() {
    let s = start_with_lookup().await;
    let t = s.world.minter("auth").mint("audit", &["audit:write"], 60).expect("mint");
    for _ in 0..3 {
        let r = s.client.get(format!("{}/internal/v1/caller", s.base)).bearer_auth(&t).send().await.expect("send");
        assert_eq!(r.status(), 200);
        assert_eq!(s.post_as("/t/lookup", Some(&t)).await.0, 200);
    }
    // Reads did not spend it: its one write still goes through, once.
    assert_eq!(s.post_as("/t/events", Some(&t)).await.0, 200);
    assert_eq!(s.post_as("/t/events", Some(&t)).await.0, 401);
}

#[tokio::test]
async fn a_refused_call_does_not_spend_the_token() {
    let s = start().await;
    // The right issuer without the scope is refused by the route (403), which spends nothing.
    let t = s.world.minter("auth").mint("audit", &["audit:read"], 60).expect("mint");
    assert_eq!(s.post_as("/t/events", Some(&t)).await.0, 403);
    assert_eq!(s.post_as("/t/events", Some(&t)).await.0, 403, "still 403 (missing scope), not token_replayed");
}
