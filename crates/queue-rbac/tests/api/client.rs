//! queue-rbac-client, the client audit (and later Raptor's tooling) asks checks with, against
//! the real service: the answers it reads and the refusals it names.

use queue_platform::http_client::HttpClient;
use queue_rbac_client::{BatchCheckRequest, CheckRequest, RbacClient, RbacClientError, Resource};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{World, tenant};

/// The client as the service `issuer` uses it.
fn client_of(w: &World, issuer: &str) -> RbacClient {
    let base = url::Url::parse(&w.rbac.url("/")).expect("url");
    RbacClient::new(HttpClient::new(), base, Arc::new(w.keys.minter(issuer)))
}

#[tokio::test]
async fn checks_one_and_many_against_the_real_service() {
    let w = World::start().await;
    let grant = w.grant("u-1", "auditor", tenant("A"), None).await;
    let grant = grant["grant"]["id"].as_str().expect("grant id").to_string();
    let client = client_of(&w, "audit");

    let yes = client.check(&CheckRequest::new("u-1", "audit.read", Resource::tenant("A"))).await.expect("check");
    assert!(yes.allowed);
    assert_eq!(yes.grant_ids.iter().map(ToString::to_string).collect::<Vec<_>>(), vec![grant]);
    let no = client.check(&CheckRequest::new("u-1", "audit.read", Resource::tenant("B"))).await.expect("check");
    assert!(!no.allowed && no.grant_ids.is_empty());
    let ticket = client.check(&CheckRequest::new("u-1", "audit.read", Resource::ticket("A", "T-1"))).await;
    assert!(ticket.expect("check").allowed, "a tenant grant covers its tickets");

    let batch = BatchCheckRequest {
        checks: vec![
            CheckRequest::new("u-1", "audit.read", Resource::tenant("A")),
            CheckRequest::new("u-2", "audit.read", Resource::tenant("A")),
        ],
    };
    let answers = client.check_batch(&batch).await.expect("batch");
    assert_eq!(answers.results.iter().map(|d| d.allowed).collect::<Vec<_>>(), vec![true, false]);
    assert!(answers.revision >= yes.revision);
}

#[tokio::test]
async fn refusals_say_what_failed() {
    let w = World::start().await;
    let question = CheckRequest::new("u-1", "audit.read", Resource::tenant("A"));

    // A malformed question: rbac's 422, not worth retrying.
    let bad = CheckRequest::new("u-1", "not a permission", Resource::tenant("A"));
    match client_of(&w, "audit").check(&bad).await {
        Err(e @ RbacClientError::Status { status: 422, .. }) => assert!(!e.is_retryable(), "{e}"),
        other => panic!("expected 422, got {other:?}"),
    }
    // A service that is not one of rbac's checkers: 403.
    match client_of(&w, "operator").check(&question).await {
        Err(e @ RbacClientError::Status { status: 403, .. }) => assert!(!e.is_retryable(), "{e}"),
        other => panic!("expected 403, got {other:?}"),
    }
    // Nobody listening: unreachable, worth retrying.
    let port = queue_testkit::process::free_port();
    let base = url::Url::parse(&format!("http://127.0.0.1:{port}/")).expect("url");
    let gone =
        RbacClient::new(HttpClient::new(), base, Arc::new(w.keys.minter("audit"))).with_timeout(Duration::from_secs(1));
    match gone.check(&question).await {
        Err(e @ RbacClientError::Unreachable(_)) => assert!(e.is_retryable(), "{e}"),
        other => panic!("expected unreachable, got {other:?}"),
    }
}
