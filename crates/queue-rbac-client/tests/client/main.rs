//! The client against the real rbac service (with the real audit service, which rbac writes its
//! grants to), each on a throwaway database, trusting each other's test keys.

use queue_audit::AuditConfig;
use queue_audit::config::KeysConfig;
use queue_platform::Signals;
use queue_platform::http_client::HttpClient;
use queue_rbac::RbacConfig;
use queue_rbac_client::{BatchCheckRequest, CheckRequest, RbacClient, RbacClientError, Resource};
use queue_testkit::{TestApp, TestDb, TestKeys};
use reqwest::StatusCode;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

struct World {
    keys: TestKeys,
    rbac: TestApp,
    _audit: TestApp,
    _audit_keys: tempfile::TempDir,
}

impl World {
    async fn start() -> Self {
        let keys = TestKeys::new();
        let audit_keys = tempfile::tempdir().expect("tmp");
        let (local, _) = KeysConfig::local_in(audit_keys.path(), false).expect("audit keys");
        let audit = TestApp::spawn_in(
            "audit",
            TestDb::new(&[queue_audit::MIGRATIONS]).await,
            keys.clone(),
            move |base| queue_audit::run(AuditConfig::new(base, local), Signals::Ignore),
            |_| {},
        )
        .await;
        let audit_url = url::Url::parse(&audit.url("/")).expect("url");
        let rbac = TestApp::spawn_in(
            "rbac",
            TestDb::new(&[queue_rbac::MIGRATIONS]).await,
            keys.clone(),
            move |base| queue_rbac::run(RbacConfig::new(base, audit_url), Signals::Ignore),
            |_| {},
        )
        .await;
        Self { keys, rbac, _audit: audit, _audit_keys: audit_keys }
    }

    /// The client as the service `issuer` uses it.
    fn client_of(&self, issuer: &str) -> RbacClient {
        let base = url::Url::parse(&self.rbac.url("/")).expect("url");
        RbacClient::new(HttpClient::new(), base, Arc::new(self.keys.minter(issuer)))
    }

    /// Grants `role` on tenant `tenant` to `principal` (as Raptor); the grant's id.
    async fn grant(&self, principal: &str, role: &str, tenant: &str) -> String {
        let token = self.keys.token("raptor", "rbac", &["rbac:grant"]);
        let body = json!({"principal_id": principal, "role": role, "scope": {"type": "tenant", "tenant_id": tenant},
                          "reason": "test"});
        let (s, v) = self.rbac.post_json_as("/api/v1/rbac/grants", &token, &body).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["grant"]["id"].as_str().expect("grant id").to_string()
    }
}

#[tokio::test]
async fn checks_one_and_many_against_the_real_service() {
    let w = World::start().await;
    let grant = w.grant("u-1", "auditor", "A").await;
    let client = w.client_of("audit");

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
    match w.client_of("audit").check(&bad).await {
        Err(e @ RbacClientError::Status { status: 422, .. }) => assert!(!e.is_retryable(), "{e}"),
        other => panic!("expected 422, got {other:?}"),
    }
    // A service that is not one of rbac's checkers: 403.
    match w.client_of("operator").check(&question).await {
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
