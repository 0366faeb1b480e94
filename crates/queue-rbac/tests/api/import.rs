//! Issue 19: Raptor's roles and grants imported through `/internal/v1/import/{roles,grants}`,
//! against the real audit service: built-ins matched, never widened; grants kept with their
//! granter, time, reason, expiry and revocation, checking as at Raptor; idempotent by legacy id;
//! dry runs; only importers.

use crate::support::World;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The importer's token (spent by each POST: a fresh one per call).
fn operator(w: &World) -> String {
    w.keys.token("operator", "rbac", &["rbac:import"])
}

async fn import(w: &World, kind: &str, records: Value, dry_run: bool) -> Vec<Value> {
    let body = json!({"records": records, "dry_run": dry_run});
    let (s, v) = w.rbac.post_json_as(&format!("/internal/v1/import/{kind}"), &operator(w), &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["results"].as_array().expect("results").clone()
}

fn outcomes(results: &[Value]) -> Vec<&str> {
    results.iter().map(|r| r["outcome"].as_str().unwrap_or("?")).collect()
}

fn legacy_events<'a>(events: &'a [Value], action: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["action"] == action).collect()
}

async fn unaudited(w: &World) -> Vec<Value> {
    let (s, v) = w.rbac.get_json_as("/api/v1/rbac/reconcile", &w.admin()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["unaudited"].as_array().expect("unaudited").clone()
}

async fn grants_at(w: &World, principal: &str, at: DateTime<Utc>) -> Vec<Value> {
    let path = format!("/api/v1/rbac/grants?principal_id={principal}&at={}", ts(at));
    let (s, v) = w.rbac.get_json_as(&path, &w.admin()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["grants"].as_array().expect("grants").clone()
}

const TENANT: &str = "6f1c2d4e-8a3b-4c5d-9e6f-7a8b9c0d1e2f";

#[tokio::test]
async fn built_in_roles_are_matched_never_widened_and_a_tenants_roles_are_created() {
    let w = World::start().await;
    let created_at = Utc::now() - Duration::days(700);
    let records = json!([
        {"legacy_id": "1", "tenant_id": null, "name": "viewer", "description": "reads",
         "permissions": ["ticket.read"], "created_at": ts(created_at)},
        {"legacy_id": "2", "tenant_id": null, "name": "agent", "description": null,
         "permissions": ["ticket.read", "ticket.write", "audit.read"], "created_at": ts(created_at)},
        {"legacy_id": "3", "tenant_id": TENANT, "name": "triage", "description": "first line",
         "permissions": ["ticket.write", "ticket.read", "ticket.read"], "created_at": ts(created_at)},
        {"legacy_id": "4", "tenant_id": TENANT, "name": "wizard", "permissions": ["ticket.levitate"],
         "created_at": ts(created_at)},
        {"legacy_id": "5", "tenant_id": null, "name": "superuser", "permissions": ["ticket.read"],
         "created_at": ts(created_at)},
        {"legacy_id": "6", "tenant_id": TENANT, "name": "Bad Name", "permissions": [], "created_at": ts(created_at)},
    ]);
    let revision = w.scalar("SELECT revision AS n FROM rbac.rbac_revision").await;
    let dry = import(&w, "roles", records.clone(), true).await;
    // A built-in that matches is linked to Raptor's row once (`updated`: its grants made at Queue
    // are written back to Raptor), then `unchanged`.
    assert_eq!(outcomes(&dry), vec!["updated", "refused", "created", "refused", "refused", "refused"], "{dry:?}");
    assert_eq!(w.scalar("SELECT count(*) AS n FROM rbac.rbac_roles WHERE legacy_id IS NOT NULL").await, 0);
    assert_eq!(w.scalar("SELECT revision AS n FROM rbac.rbac_revision").await, revision, "a dry run writes nothing");

    let results = import(&w, "roles", records.clone(), false).await;
    assert_eq!(outcomes(&results), outcomes(&dry), "the dry run said what would happen: {results:?}");
    assert_eq!(results[0]["id"], "00000000-0000-4000-8000-000000000001", "Queue's built-in viewer");
    assert!(results[0]["reason"].as_str().expect("reason").contains("linked to Queue's built-in `viewer`"));
    let agent = results[1]["reason"].as_str().expect("reason");
    assert!(agent.contains("built-in `agent`") && agent.contains("only at Raptor: audit.read"), "{agent}");
    assert!(results[3]["reason"].as_str().expect("reason").contains("ticket.levitate"), "{results:?}");
    assert!(results[4]["reason"].as_str().expect("reason").contains("no built-in role `superuser`"));
    assert!(results[5]["reason"].as_str().expect("reason").contains("Bad Name"));
    let triage = results[2]["id"].as_str().expect("id").to_string();

    let (s, v) = w.rbac.get_json_as(&format!("/api/v1/rbac/roles?tenant_id={TENANT}"), &w.admin()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let role = v["roles"].as_array().expect("roles").iter().find(|r| r["id"] == triage.as_str()).expect("triage");
    assert_eq!(role["permissions"], json!(["ticket.read", "ticket.write"]));
    assert_eq!(role["tenant_id"], TENANT);
    assert_eq!(role["description"], "first line");
    let kept = w
        .scalar(&format!(
            "SELECT count(*) AS n FROM rbac.rbac_roles WHERE id = '{triage}' AND legacy_id = '3' \
             AND created_at = '{}' AND created_by = 'service:operator'",
            ts(created_at)
        ))
        .await;
    assert_eq!(kept, 1, "Raptor's time and legacy id kept");
    let agent_perms = w.scalar(
        "SELECT count(*) AS n FROM rbac.rbac_role_permissions WHERE role_id = '00000000-0000-4000-8000-000000000002'",
    );
    assert_eq!(agent_perms.await, 2, "the built-in was not widened");

    let events = w.audit_events(TENANT).await;
    let imported = legacy_events(&events, "rbac.legacy.role.imported");
    assert_eq!(imported.len(), 1, "one event per created record: {events:?}");
    assert_eq!(imported[0]["actor"], json!({"type": "service", "id": "operator"}));
    assert_eq!(imported[0]["target"], json!({"type": "role", "id": triage}));
    assert_eq!(imported[0]["payload"]["legacy_id"], "3");

    // Again: nothing new, nothing written, no event.
    let again = import(&w, "roles", records, false).await;
    assert_eq!(outcomes(&again), vec!["unchanged", "refused", "unchanged", "refused", "refused", "refused"]);
    assert_eq!(again[2]["id"], triage.as_str());
    assert_eq!(w.audit_events(TENANT).await.len(), events.len());
    assert!(unaudited(&w).await.is_empty(), "imports are audited changes, not changes made around the service");

    // Raptor changed the role's permissions since: refused, named (Queue never rewrites a role).
    let changed = json!([{"legacy_id": "3", "tenant_id": TENANT, "name": "triage",
        "permissions": ["ticket.read"], "created_at": ts(created_at)}]);
    let r = import(&w, "roles", changed, false).await;
    assert_eq!(outcomes(&r), vec!["refused"]);
    assert!(r[0]["reason"].as_str().expect("reason").contains("only at Queue: ticket.write"), "{r:?}");

    // A role of that name defined at Queue before the import is linked.
    let body = json!({"name": "night", "tenant_id": TENANT, "permissions": ["ticket.read"]});
    let (s, v) = w.rbac.post_json_as("/api/v1/rbac/roles", &w.admin(), &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let night = json!([{"legacy_id": "7", "tenant_id": TENANT, "name": "night", "permissions": ["ticket.read"],
        "created_at": ts(created_at)}]);
    let r = import(&w, "roles", night.clone(), false).await;
    assert_eq!(outcomes(&r), vec!["updated"], "{r:?}");
    assert_eq!(r[0]["id"], v["role"]["id"]);
    assert_eq!(outcomes(&import(&w, "roles", night, false).await), vec!["unchanged"]);
    assert_eq!(legacy_events(&w.audit_events(TENANT).await, "rbac.legacy.role.updated").len(), 1);
}

/// Raptor's grants: one in force granted last year by another user with a reason, one expired,
/// one revoked, one by the system without a reason.
fn raptor_grants(now: DateTime<Utc>) -> Value {
    let last_year = now - Duration::days(400);
    json!([
        {"legacy_id": "901", "principal_id": "u-dana", "role": "agent", "role_tenant_id": null,
         "scope": {"type": "ticket", "tenant_id": TENANT, "ticket_id": "T-1042"},
         "granted_by": "u-erin", "granted_at": ts(last_year), "expires_at": null,
         "reason": "covers T-1042 while Sam is away", "revoked_at": null, "revoked_by": null},
        {"legacy_id": "902", "principal_id": "u-frank", "role": "agent", "role_tenant_id": null,
         "scope": {"type": "tenant", "tenant_id": TENANT, "ticket_id": null},
         "granted_by": "u-erin", "granted_at": ts(last_year), "expires_at": ts(now - Duration::days(30)),
         "reason": "summer cover", "revoked_at": null, "revoked_by": null},
        {"legacy_id": "903", "principal_id": "u-gus", "role": "agent", "role_tenant_id": null,
         "scope": {"type": "tenant", "tenant_id": TENANT, "ticket_id": null},
         "granted_by": "u-erin", "granted_at": ts(last_year), "expires_at": null,
         "reason": "temp", "revoked_at": ts(now - Duration::days(10)), "revoked_by": "u-erin"},
        {"legacy_id": "904", "principal_id": "u-hal", "role": "auditor", "role_tenant_id": null,
         "scope": {"type": "global", "tenant_id": null, "ticket_id": null},
         "granted_by": null, "granted_at": ts(last_year), "expires_at": null,
         "reason": null, "revoked_at": null, "revoked_by": null},
    ])
}

#[tokio::test]
async fn grants_keep_their_history_and_check_as_at_raptor() {
    let w = World::start().await;
    let now = Utc::now();
    let last_year = now - Duration::days(400);
    // Checked before the import: a cached "no" must not outlive the import.
    assert!(!w.allowed("u-dana", "ticket.write", TENANT, Some("T-1042")).await);
    let revision = w.scalar("SELECT revision AS n FROM rbac.rbac_revision").await;

    let results = import(&w, "grants", raptor_grants(now), false).await;
    assert_eq!(outcomes(&results), vec!["created"; 4], "{results:?}");
    assert!(w.scalar("SELECT revision AS n FROM rbac.rbac_revision").await >= revision + 4, "revisions moved");

    // In force: allowed, where Raptor allowed it and nowhere else.
    assert!(w.allowed("u-dana", "ticket.write", TENANT, Some("T-1042")).await);
    assert!(!w.allowed("u-dana", "ticket.write", TENANT, Some("T-1043")).await);
    assert!(w.allowed("u-hal", "audit.read", "any-tenant", None).await);
    // Expired and revoked: denied.
    assert!(!w.allowed("u-frank", "ticket.read", TENANT, None).await, "expired at Raptor");
    assert!(!w.allowed("u-gus", "ticket.read", TENANT, None).await, "revoked at Raptor");

    // The history: the original time, granter and reason.
    let then = grants_at(&w, "u-dana", last_year + Duration::days(1)).await;
    assert_eq!(then.len(), 1, "{then:?}");
    let g = &then[0];
    assert_eq!(g["id"], results[0]["id"]);
    assert_eq!(
        DateTime::parse_from_rfc3339(g["granted_at"].as_str().expect("t")).expect("t"),
        ts(last_year).parse::<DateTime<Utc>>().expect("t")
    );
    assert_eq!(g["granted_by"], "user:u-erin");
    assert_eq!(g["reason"], "covers T-1042 while Sam is away");
    assert!(grants_at(&w, "u-dana", last_year - Duration::days(1)).await.is_empty(), "not before its time");
    // The expired and the revoked one were in force in their time, and are not now.
    assert_eq!(grants_at(&w, "u-frank", now - Duration::days(60)).await.len(), 1);
    assert!(grants_at(&w, "u-frank", now).await.is_empty());
    let gus = grants_at(&w, "u-gus", now - Duration::days(20)).await;
    assert_eq!(gus.len(), 1);
    assert!(grants_at(&w, "u-gus", now).await.is_empty());
    let (_, all) = w.rbac.get_json_as("/api/v1/rbac/grants?principal_id=u-gus&include_inactive=true", &w.admin()).await;
    let revoked = &all["grants"][0];
    assert_eq!(revoked["revoked_by"], "user:u-erin");
    assert_eq!(revoked["revoke_reason"], "revoked at Raptor");
    // The system's grant without a reason.
    let hal = &grants_at(&w, "u-hal", now).await[0];
    assert_eq!(hal["granted_by"], "system:raptor");
    assert_eq!(hal["reason"], "imported from Raptor");

    // One audit event per grant, in the grant's tenant's chain, each before its row.
    let events = w.audit_events(TENANT).await;
    let imported = legacy_events(&events, "rbac.legacy.grant.imported");
    assert_eq!(imported.len(), 3, "{events:?}");
    let platform = w.audit_events("_platform").await;
    assert_eq!(legacy_events(&platform, "rbac.legacy.grant.imported").len(), 1, "the global grant's");
    let dana = imported.iter().find(|e| e["payload"]["legacy_id"] == "901").expect("event of 901");
    assert_eq!(dana["actor"], json!({"type": "service", "id": "operator"}));
    assert_eq!(dana["target"], json!({"type": "grant", "id": results[0]["id"]}));
    assert_eq!(dana["payload"]["grant"]["granted_by"], "user:u-erin");
    assert_eq!(dana["id"], g["audit_event_id"]);
    #[derive(diesel::QueryableByName)]
    struct At {
        #[diesel(sql_type = diesel::sql_types::Timestamptz)]
        at: DateTime<Utc>,
    }
    let row_written: At = diesel_async::RunQueryDsl::get_result(
        diesel::sql_query(
            "SELECT changed_at AS at FROM rbac.rbac_grants_shadow WHERE new_row->>'legacy_id' = '901' \
             AND operation = 'INSERT'",
        ),
        &mut w.sql().await,
    )
    .await
    .expect("shadow row");
    let recorded = DateTime::parse_from_rfc3339(dana["recorded_at"].as_str().expect("recorded")).expect("time");
    assert!(recorded < row_written.at, "audit {recorded} before the grant {}", row_written.at);
    assert!(unaudited(&w).await.is_empty(), "imports are linked to their audit events");

    // The expiry that happened at Raptor is told by the import's event, not announced again.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let after = w.audit_events(TENANT).await;
    assert!(legacy_events(&after, "rbac.grant.expired").is_empty(), "{after:?}");
}

#[tokio::test]
async fn an_import_sent_again_changes_nothing_and_a_raptor_revocation_updates() {
    let w = World::start().await;
    let now = Utc::now();
    let records = raptor_grants(now);

    // A dry run: the outcomes, and nothing written.
    let dry = import(&w, "grants", records.clone(), true).await;
    assert_eq!(outcomes(&dry), vec!["created"; 4]);
    assert!(dry.iter().all(|r| r.get("id").is_none()), "nothing was created: {dry:?}");
    assert_eq!(w.scalar("SELECT count(*) AS n FROM rbac.rbac_grants").await, 0);
    assert!(w.audit_events(TENANT).await.is_empty());

    let first = import(&w, "grants", records.clone(), false).await;
    assert_eq!(outcomes(&first), vec!["created"; 4]);
    let events = w.audit_events(TENANT).await.len();
    let revision = w.scalar("SELECT revision AS n FROM rbac.rbac_revision").await;

    // The same batch again: unchanged, the same ids, nothing written, no event.
    let again = import(&w, "grants", records.clone(), false).await;
    assert_eq!(outcomes(&again), vec!["unchanged"; 4], "{again:?}");
    let ids = |r: &[Value]| r.iter().map(|x| x["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&first));
    assert_eq!(w.audit_events(TENANT).await.len(), events);
    assert_eq!(w.scalar("SELECT revision AS n FROM rbac.rbac_revision").await, revision);
    assert_eq!(w.scalar("SELECT count(*) AS n FROM rbac.rbac_grants").await, 4);

    // Raptor revoked 901 since: a dry run says so and changes nothing; the real one revokes it.
    let revoked_at = now - Duration::minutes(5);
    let mut changed = records.clone();
    changed[0]["revoked_at"] = json!(ts(revoked_at));
    changed[0]["revoked_by"] = json!("u-erin");
    let dry = import(&w, "grants", changed.clone(), true).await;
    assert_eq!(outcomes(&dry), vec!["updated", "unchanged", "unchanged", "unchanged"]);
    assert!(w.allowed("u-dana", "ticket.write", TENANT, Some("T-1042")).await, "the dry run revoked nothing");
    let r = import(&w, "grants", changed.clone(), false).await;
    assert_eq!(outcomes(&r), vec!["updated", "unchanged", "unchanged", "unchanged"]);
    assert!(r[0]["reason"].as_str().expect("reason").contains("revoked at Raptor"), "{r:?}");
    assert!(!w.allowed("u-dana", "ticket.write", TENANT, Some("T-1042")).await, "revoked: denied");
    assert_eq!(grants_at(&w, "u-dana", revoked_at - Duration::minutes(1)).await.len(), 1, "in force before");
    assert!(grants_at(&w, "u-dana", revoked_at + Duration::seconds(1)).await.is_empty(), "not after");
    let updated = legacy_events(&w.audit_events(TENANT).await, "rbac.legacy.grant.updated").len();
    assert_eq!(updated, 1);
    assert_eq!(outcomes(&import(&w, "grants", changed.clone(), false).await), vec!["unchanged"; 4]);

    // A term Raptor changed otherwise: refused, named.
    let mut rewritten = records;
    rewritten[1]["reason"] = json!("a new story");
    rewritten[1]["expires_at"] = json!(ts(now + Duration::days(30)));
    let r = import(&w, "grants", rewritten, false).await;
    assert_eq!(r[1]["outcome"], "refused");
    let reason = r[1]["reason"].as_str().expect("reason");
    assert!(reason.contains("expires_at") && reason.contains("reason"), "{reason}");
    assert!(!w.allowed("u-frank", "ticket.read", TENANT, None).await, "not extended");
    assert!(unaudited(&w).await.is_empty());
}

#[tokio::test]
async fn only_importers_import_and_bad_records_are_refused_one_by_one() {
    let w = World::start().await;
    let now = Utc::now();
    let body = json!({"records": raptor_grants(now)});
    // Raptor's token (a granter and reader, no importer), the operator without the scope.
    let refused = [
        w.admin(),
        w.keys.token("raptor", "rbac", &["rbac:import"]),
        w.keys.token("operator", "rbac", &["rbac:grant", "rbac:read"]),
    ];
    for token in refused {
        let (s, v) = w.rbac.post_json_as("/internal/v1/import/grants", &token, &body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    }
    let (s, v) = w.rbac.post_json_as("/internal/v1/import/roles", &w.admin(), &json!({"records": []})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");

    // Batches of 0 and 1001, an unknown field: the whole batch is refused.
    let one = raptor_grants(now)[0].clone();
    let mut many = Vec::new();
    for i in 0..1001 {
        let mut r = one.clone();
        r["legacy_id"] = json!((10_000 + i).to_string());
        many.push(r);
    }
    for (records, want) in
        [(json!([]), StatusCode::UNPROCESSABLE_ENTITY), (json!(many), StatusCode::UNPROCESSABLE_ENTITY)]
    {
        let (s, v) =
            w.rbac.post_json_as("/internal/v1/import/grants", &operator(&w), &json!({"records": records})).await;
        assert_eq!(s, want, "{v}");
    }
    let mut extra = one.clone();
    extra["password"] = json!("x");
    let (s, _) = w.rbac.post_json_as("/internal/v1/import/grants", &operator(&w), &json!({"records": [extra]})).await;
    assert!(s == StatusCode::BAD_REQUEST || s == StatusCode::UNPROCESSABLE_ENTITY, "{s}");
    assert_eq!(w.scalar("SELECT count(*) AS n FROM rbac.rbac_grants").await, 0);

    // Bad records are refused one by one; the good one in the batch is imported.
    let roles = json!([{"legacy_id": "3", "tenant_id": "tenant-b", "name": "triage", "permissions": ["ticket.read"],
        "created_at": ts(now)}]);
    assert_eq!(outcomes(&import(&w, "roles", roles, false).await), vec!["created"]);
    let with = |id: &str, f: &dyn Fn(&mut Value)| {
        let mut r = one.clone();
        r["legacy_id"] = json!(id);
        f(&mut r);
        r
    };
    let records = json!([
        with("1", &|_| {}),
        with("1", &|_| {}),
        with("x1", &|_| {}),
        with("2", &|r| r["role"] = json!("triage")),
        with("3", &|r| {
            r["role"] = json!("triage");
            r["role_tenant_id"] = json!("tenant-b");
        }),
        with("4", &|r| r["scope"] = json!({"type": "tenant", "tenant_id": null, "ticket_id": null})),
        with("5", &|r| r["principal_id"] = json!("not an id")),
        with("6", &|r| r["revoked_by"] = json!("u-erin")),
    ]);
    let r = import(&w, "grants", records, false).await;
    assert_eq!(
        outcomes(&r),
        vec!["created", "refused", "refused", "refused", "refused", "refused", "refused", "refused"]
    );
    let reasons: Vec<&str> = r.iter().map(|x| x["reason"].as_str().unwrap_or("")).collect();
    assert!(reasons[1].contains("twice"), "{reasons:?}");
    assert!(reasons[2].contains("legacy_id"), "{reasons:?}");
    assert!(reasons[3].contains("no role `triage` built in"), "{reasons:?}");
    assert!(reasons[4].contains("only be granted within that tenant"), "another tenant's role: {reasons:?}");
    assert!(reasons[5].contains("scope"), "{reasons:?}");
    assert!(reasons[6].contains("principal_id"), "{reasons:?}");
    assert!(reasons[7].contains("revoked_by"), "{reasons:?}");
    assert_eq!(w.scalar("SELECT count(*) AS n FROM rbac.rbac_grants").await, 1);
}

/// A batch of new grants is pre-written together (one audit call per 100 events, then one
/// transaction): with the audit service down nothing of the batch is applied, the answer is 503,
/// and every event that may have been written has its compensation due in the outbox; a batch of
/// 250 grants sent when it is up is created whole, each grant linked to its own event.
#[tokio::test]
async fn a_batch_of_new_grants_is_audited_first_as_a_whole_or_not_applied() {
    let w = World::start().await;
    let now = Utc::now();
    let many: Vec<Value> = (1..=250)
        .map(|i| {
            json!({"legacy_id": format!("{}", 5000 + i), "principal_id": format!("u-{i}"), "role": "viewer",
                   "role_tenant_id": null, "scope": {"type": "ticket", "tenant_id": TENANT, "ticket_id": format!("T-{i}")},
                   "granted_by": null, "granted_at": ts(now - Duration::days(3)), "expires_at": null, "reason": null,
                   "revoked_at": null, "revoked_by": null})
        })
        .collect();
    let created = import(&w, "grants", json!(many), false).await;
    assert_eq!(outcomes(&created), vec!["created"; 250]);
    let events = legacy_events(&w.audit_events(TENANT).await, "rbac.legacy.grant.imported").len();
    assert_eq!(events, 250, "one event per grant");
    assert_eq!(
        w.scalar(
            "SELECT count(*) AS n FROM rbac.rbac_grants g JOIN rbac.rbac_audit_links l ON l.audit_event_id = g.audit_event_id \
             WHERE g.legacy_id IS NOT NULL"
        )
        .await,
        250,
        "every grant linked to its event"
    );
    assert!(unaudited(&w).await.is_empty());
    assert_eq!(w.scalar("SELECT count(*) AS n FROM rbac.rbac_audit_outbox").await, 0, "every compensation claimed");

    w.audit.stop().await;
    let more = json!([{"legacy_id": "7001", "principal_id": "u-x", "role": "viewer", "role_tenant_id": null,
        "scope": {"type": "tenant", "tenant_id": TENANT, "ticket_id": null}, "granted_by": null,
        "granted_at": ts(now), "expires_at": null, "reason": null, "revoked_at": null, "revoked_by": null},
        {"legacy_id": "7002", "principal_id": "u-y", "role": "viewer", "role_tenant_id": null,
        "scope": {"type": "tenant", "tenant_id": TENANT, "ticket_id": null}, "granted_by": null,
        "granted_at": ts(now), "expires_at": null, "reason": null, "revoked_at": null, "revoked_by": null}]);
    let body = json!({"records": more, "dry_run": false});
    let (s, v) = w.rbac.post_json_as("/internal/v1/import/grants", &operator(&w), &body).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(w.scalar("SELECT count(*) AS n FROM rbac.rbac_grants WHERE legacy_id LIKE '700_'").await, 0);
    assert_eq!(
        w.scalar(
            "SELECT count(*) AS n FROM rbac.rbac_audit_outbox WHERE delivered_at IS NULL AND failed_at IS NULL \
             AND (next_attempt_at <= now() OR attempts > 0)"
        )
        .await,
        2,
        "both compensations due (or tried already, the relay backing off): the audit service may have written the events"
    );
}
