//! Reading and writing the `rbac` schema.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::model::{Grant, Role, Scope};

pub type Conn = AsyncPgConnection;
type SqlUuid = diesel::sql_types::Uuid;

#[derive(diesel::QueryableByName)]
struct GrantRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    principal_id: String,
    #[diesel(sql_type = SqlUuid)]
    role_id: Uuid,
    #[diesel(sql_type = Text)]
    role_name: String,
    #[diesel(sql_type = Text)]
    scope_type: String,
    #[diesel(sql_type = Nullable<Text>)]
    tenant_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    ticket_id: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    expires_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Text)]
    granted_by: String,
    #[diesel(sql_type = Text)]
    reason: String,
    #[diesel(sql_type = Timestamptz)]
    granted_at: DateTime<Utc>,
    #[diesel(sql_type = SqlUuid)]
    audit_event_id: Uuid,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    revoked_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    revoked_by: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    revoke_reason: Option<String>,
}

impl GrantRow {
    fn into_grant(self) -> Result<Grant, diesel::result::Error> {
        let scope = Scope::from_columns(&self.scope_type, self.tenant_id, self.ticket_id).ok_or_else(|| {
            diesel::result::Error::DeserializationError(format!("grant {} has an invalid scope", self.id).into())
        })?;
        Ok(Grant {
            id: self.id,
            principal_id: self.principal_id,
            role: self.role_name,
            role_id: self.role_id,
            scope,
            expires_at: self.expires_at,
            granted_by: self.granted_by,
            reason: self.reason,
            granted_at: self.granted_at,
            audit_event_id: self.audit_event_id,
            revoked_at: self.revoked_at,
            revoked_by: self.revoked_by,
            revoke_reason: self.revoke_reason,
        })
    }
}

const GRANT_SELECT: &str = "SELECT g.id, g.principal_id, g.role_id, r.name AS role_name, g.scope_type, g.tenant_id, \
     g.ticket_id, g.expires_at, g.granted_by, g.reason, g.granted_at, g.audit_event_id, g.revoked_at, g.revoked_by, \
     g.revoke_reason";
const GRANT_FROM: &str = " FROM rbac.rbac_grants g JOIN rbac.rbac_roles r ON r.id = g.role_id";

pub async fn grant(conn: &mut Conn, id: Uuid) -> Result<Option<Grant>, diesel::result::Error> {
    let rows: Vec<GrantRow> = diesel::sql_query(format!("{GRANT_SELECT}{GRANT_FROM} WHERE g.id = $1"))
        .bind::<SqlUuid, _>(id)
        .load(conn)
        .await?;
    rows.into_iter().next().map(GrantRow::into_grant).transpose()
}

/// Filters of `GET /grants`; `at` gives the grants in force at that instant, otherwise the
/// grants in force now (or all, revoked and expired too, with `include_inactive`).
#[derive(Debug, Default, Clone)]
pub struct GrantFilter {
    pub principal_id: Option<String>,
    pub tenant_id: Option<String>,
    pub ticket_id: Option<String>,
    pub at: Option<DateTime<Utc>>,
    pub include_inactive: bool,
    pub limit: i64,
}

pub async fn grants(conn: &mut Conn, f: &GrantFilter) -> Result<Vec<Grant>, diesel::result::Error> {
    let mut sql = format!("{GRANT_SELECT}{GRANT_FROM} WHERE true");
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    let p = f.principal_id.as_ref().map(|_| next());
    let t = f.tenant_id.as_ref().map(|_| next());
    let k = f.ticket_id.as_ref().map(|_| next());
    let at = (!f.include_inactive || f.at.is_some()).then(&mut next);
    let lim = next();
    if let Some(i) = p {
        sql.push_str(&format!(" AND g.principal_id = ${i}"));
    }
    if let Some(i) = t {
        sql.push_str(&format!(" AND g.tenant_id = ${i}"));
    }
    if let Some(i) = k {
        sql.push_str(&format!(" AND g.ticket_id = ${i}"));
    }
    if let Some(i) = at {
        sql.push_str(&format!(
            " AND g.granted_at <= ${i} AND (g.revoked_at IS NULL OR g.revoked_at > ${i}) \
              AND (g.expires_at IS NULL OR g.expires_at > ${i})"
        ));
    }
    sql.push_str(&format!(" ORDER BY g.granted_at, g.id LIMIT ${lim}"));
    let mut q = diesel::sql_query(sql).into_boxed();
    if let Some(v) = &f.principal_id {
        q = q.bind::<Text, _>(v.clone());
    }
    if let Some(v) = &f.tenant_id {
        q = q.bind::<Text, _>(v.clone());
    }
    if let Some(v) = &f.ticket_id {
        q = q.bind::<Text, _>(v.clone());
    }
    if at.is_some() {
        q = q.bind::<Timestamptz, _>(f.at.unwrap_or_else(Utc::now));
    }
    q = q.bind::<BigInt, _>(f.limit);
    let rows: Vec<GrantRow> = q.load(conn).await?;
    rows.into_iter().map(GrantRow::into_grant).collect()
}

/// Grants in force at `at` that reach a ticket: global ones, the tenant's, the ticket's.
pub async fn grants_reaching_ticket(
    conn: &mut Conn,
    tenant: &str,
    ticket: &str,
    at: DateTime<Utc>,
) -> Result<Vec<(Grant, Vec<String>)>, diesel::result::Error> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(embed)]
        grant: GrantRow,
        #[diesel(sql_type = Array<Text>)]
        permissions: Vec<String>,
    }
    let rows: Vec<Row> = diesel::sql_query(format!(
        "{GRANT_SELECT}, ARRAY(SELECT rp.permission FROM rbac.rbac_role_permissions rp WHERE rp.role_id = g.role_id \
           ORDER BY rp.permission) AS permissions{GRANT_FROM} \
         WHERE (g.scope_type = 'global' OR (g.scope_type = 'tenant' AND g.tenant_id = $1) \
                OR (g.scope_type = 'ticket' AND g.tenant_id = $1 AND g.ticket_id = $2)) \
           AND g.granted_at <= $3 AND (g.revoked_at IS NULL OR g.revoked_at > $3) \
           AND (g.expires_at IS NULL OR g.expires_at > $3) \
         ORDER BY g.principal_id, g.granted_at"
    ))
    .bind::<Text, _>(tenant)
    .bind::<Text, _>(ticket)
    .bind::<Timestamptz, _>(at)
    .load(conn)
    .await?;
    rows.into_iter().map(|r| Ok((r.grant.into_grant()?, r.permissions))).collect()
}

/// The unrevoked, unexpired grants of some principals, without permissions (the check engine
/// joins them with its role cache): principal, grant id, role id, scope, expiry.
pub async fn active_grants_of(
    conn: &mut Conn,
    principals: &[&str],
) -> Result<Vec<(String, Uuid, Uuid, Scope, Option<DateTime<Utc>>)>, diesel::result::Error> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        principal_id: String,
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
        #[diesel(sql_type = SqlUuid)]
        role_id: Uuid,
        #[diesel(sql_type = Text)]
        scope_type: String,
        #[diesel(sql_type = Nullable<Text>)]
        tenant_id: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        ticket_id: Option<String>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        expires_at: Option<DateTime<Utc>>,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT principal_id, id, role_id, scope_type, tenant_id, ticket_id, expires_at FROM rbac.rbac_grants \
         WHERE principal_id = ANY($1) AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind::<Array<Text>, _>(principals)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let scope = Scope::from_columns(&r.scope_type, r.tenant_id, r.ticket_id)?;
            Some((r.principal_id, r.id, r.role_id, scope, r.expires_at))
        })
        .collect())
}

/// Every role's permissions.
pub async fn role_permissions(conn: &mut Conn) -> Result<Vec<(Uuid, Vec<String>)>, diesel::result::Error> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        role_id: Uuid,
        #[diesel(sql_type = Array<Text>)]
        permissions: Vec<String>,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT role_id, array_agg(permission ORDER BY permission) AS permissions \
         FROM rbac.rbac_role_permissions GROUP BY role_id",
    )
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.role_id, r.permissions)).collect())
}

#[derive(diesel::QueryableByName)]
struct RoleRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Nullable<Text>)]
    tenant_id: Option<String>,
    #[diesel(sql_type = Bool)]
    builtin: bool,
    #[diesel(sql_type = Text)]
    description: String,
    #[diesel(sql_type = Array<Text>)]
    permissions: Vec<String>,
}

impl From<RoleRow> for Role {
    fn from(r: RoleRow) -> Self {
        Role {
            id: r.id,
            name: r.name,
            tenant_id: r.tenant_id,
            builtin: r.builtin,
            description: r.description,
            permissions: r.permissions,
        }
    }
}

const ROLE_COLUMNS: &str = "SELECT r.id, r.name, r.tenant_id, r.builtin, r.description, \
     ARRAY(SELECT rp.permission FROM rbac.rbac_role_permissions rp WHERE rp.role_id = r.id ORDER BY rp.permission) \
       AS permissions FROM rbac.rbac_roles r";

/// Built-in roles and, with `tenant`, that tenant's own.
pub async fn roles(conn: &mut Conn, tenant: Option<&str>) -> Result<Vec<Role>, diesel::result::Error> {
    let rows: Vec<RoleRow> = diesel::sql_query(format!(
        "{ROLE_COLUMNS} WHERE r.tenant_id IS NULL OR r.tenant_id = $1 ORDER BY r.builtin DESC, r.name"
    ))
    .bind::<Nullable<Text>, _>(tenant)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(Role::from).collect())
}

/// The role a name means for a tenant: the tenant's own role of that name, else the built-in.
pub async fn role_by_name(
    conn: &mut Conn,
    name: &str,
    tenant: Option<&str>,
) -> Result<Option<Role>, diesel::result::Error> {
    let rows: Vec<RoleRow> = diesel::sql_query(format!(
        "{ROLE_COLUMNS} WHERE r.name = $1 AND (r.tenant_id IS NULL OR r.tenant_id = $2) \
         ORDER BY r.tenant_id NULLS LAST LIMIT 1"
    ))
    .bind::<Text, _>(name)
    .bind::<Nullable<Text>, _>(tenant)
    .load(conn)
    .await?;
    Ok(rows.into_iter().next().map(Role::from))
}

pub async fn permissions_exist(conn: &mut Conn, names: &[String]) -> Result<Vec<String>, diesel::result::Error> {
    #[derive(diesel::QueryableByName)]
    struct Missing {
        #[diesel(sql_type = Text)]
        name: String,
    }
    let rows: Vec<Missing> = diesel::sql_query(
        "SELECT n AS name FROM unnest($1::text[]) AS n WHERE NOT EXISTS \
         (SELECT 1 FROM rbac.rbac_permissions p WHERE p.name = n)",
    )
    .bind::<Array<Text>, _>(names)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|m| m.name).collect())
}

/// Records, in the current transaction, which audit event was written for it.
pub async fn link_audit(
    conn: &mut Conn,
    audit_event_id: Uuid,
    tenant: &str,
    action: &str,
) -> Result<(), diesel::result::Error> {
    diesel::sql_query("INSERT INTO rbac.rbac_audit_links (audit_event_id, tenant_id, action) VALUES ($1, $2, $3)")
        .bind::<SqlUuid, _>(audit_event_id)
        .bind::<Text, _>(tenant)
        .bind::<Text, _>(action)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn insert_grant(conn: &mut Conn, g: &Grant) -> Result<(), diesel::result::Error> {
    diesel::sql_query(
        "INSERT INTO rbac.rbac_grants (id, principal_id, role_id, scope_type, tenant_id, ticket_id, expires_at, \
           granted_by, reason, granted_at, audit_event_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind::<SqlUuid, _>(g.id)
    .bind::<Text, _>(&g.principal_id)
    .bind::<SqlUuid, _>(g.role_id)
    .bind::<Text, _>(g.scope.kind())
    .bind::<Nullable<Text>, _>(g.scope.tenant())
    .bind::<Nullable<Text>, _>(g.scope.ticket())
    .bind::<Nullable<Timestamptz>, _>(g.expires_at)
    .bind::<Text, _>(&g.granted_by)
    .bind::<Text, _>(&g.reason)
    .bind::<Timestamptz, _>(g.granted_at)
    .bind::<SqlUuid, _>(g.audit_event_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes a grant that is not revoked yet; false if it already was.
pub async fn revoke_grant(
    conn: &mut Conn,
    id: Uuid,
    by: &str,
    reason: &str,
    at: DateTime<Utc>,
    event: Uuid,
) -> Result<bool, diesel::result::Error> {
    let n = diesel::sql_query(
        "UPDATE rbac.rbac_grants SET revoked_at = $2, revoked_by = $3, revoke_reason = $4, revoke_event_id = $5 \
         WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<Timestamptz, _>(at)
    .bind::<Text, _>(by)
    .bind::<Text, _>(reason)
    .bind::<SqlUuid, _>(event)
    .execute(conn)
    .await?;
    Ok(n == 1)
}

pub async fn insert_role(conn: &mut Conn, role: &Role, created_by: &str) -> Result<(), diesel::result::Error> {
    diesel::sql_query(
        "INSERT INTO rbac.rbac_roles (id, name, tenant_id, builtin, description, created_by) \
         VALUES ($1, $2, $3, false, $4, $5)",
    )
    .bind::<SqlUuid, _>(role.id)
    .bind::<Text, _>(&role.name)
    .bind::<Nullable<Text>, _>(role.tenant_id.as_deref())
    .bind::<Text, _>(&role.description)
    .bind::<Text, _>(created_by)
    .execute(conn)
    .await?;
    diesel::sql_query("INSERT INTO rbac.rbac_role_permissions (role_id, permission) SELECT $1, unnest($2::text[])")
        .bind::<SqlUuid, _>(role.id)
        .bind::<Array<Text>, _>(&role.permissions)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(diesel::QueryableByName)]
struct Rev {
    #[diesel(sql_type = BigInt)]
    revision: i64,
}

pub async fn revision(conn: &mut Conn) -> Result<i64, diesel::result::Error> {
    let r: Rev = diesel::sql_query("SELECT revision FROM rbac.rbac_revision WHERE id = 1").get_result(conn).await?;
    Ok(r.revision)
}

/// Changes in `(after, upto]`: (revision, principal or `None` for anyone).
pub async fn changes(
    conn: &mut Conn,
    after: i64,
    upto: i64,
) -> Result<Vec<(i64, Option<String>)>, diesel::result::Error> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        revision: i64,
        #[diesel(sql_type = Nullable<Text>)]
        principal_id: Option<String>,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT revision, principal_id FROM rbac.rbac_changes WHERE revision > $1 AND revision <= $2 ORDER BY revision",
    )
    .bind::<BigInt, _>(after)
    .bind::<BigInt, _>(upto)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.revision, r.principal_id)).collect())
}

/// Grants whose expiry passed and is not yet in the audit log (unrevoked ones only), locked for
/// this transaction so that two replicas do not both record one.
pub async fn unrecorded_expiries(conn: &mut Conn, limit: i64) -> Result<Vec<Grant>, diesel::result::Error> {
    let rows: Vec<GrantRow> = diesel::sql_query(format!(
        "{GRANT_SELECT}{GRANT_FROM} WHERE g.expires_at <= now() AND g.expiry_recorded_at IS NULL AND g.revoked_at IS NULL \
         ORDER BY g.expires_at LIMIT $1 FOR UPDATE OF g SKIP LOCKED"
    ))
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    rows.into_iter().map(GrantRow::into_grant).collect()
}

pub async fn mark_expiry_recorded(conn: &mut Conn, id: Uuid) -> Result<(), diesel::result::Error> {
    diesel::sql_query("UPDATE rbac.rbac_grants SET expiry_recorded_at = now() WHERE id = $1")
        .bind::<SqlUuid, _>(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Renews this replica's lease (`lease_ms` from the database's clock now) and records the
/// revision it has applied; also forgets replicas whose lease ended a day ago.
pub async fn renew_lease(
    conn: &mut Conn,
    replica: Uuid,
    applied: i64,
    lease_ms: u64,
) -> Result<(), diesel::result::Error> {
    diesel::sql_query(
        "INSERT INTO rbac.rbac_replicas (replica_id, applied_revision, lease_until, renewed_at)
         VALUES ($1, $2, clock_timestamp() + $3 * interval '1 millisecond', clock_timestamp())
         ON CONFLICT (replica_id) DO UPDATE
           SET applied_revision = GREATEST(rbac.rbac_replicas.applied_revision, EXCLUDED.applied_revision),
               lease_until = EXCLUDED.lease_until, renewed_at = EXCLUDED.renewed_at",
    )
    .bind::<SqlUuid, _>(replica)
    .bind::<BigInt, _>(applied)
    .bind::<BigInt, _>(i64::try_from(lease_ms).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    diesel::sql_query("DELETE FROM rbac.rbac_replicas WHERE lease_until < clock_timestamp() - interval '1 day'")
        .execute(conn)
        .await?;
    Ok(())
}

/// Records that this replica has applied every change up to `applied`.
pub async fn record_applied(conn: &mut Conn, replica: Uuid, applied: i64) -> Result<(), diesel::result::Error> {
    diesel::sql_query(
        "UPDATE rbac.rbac_replicas SET applied_revision = GREATEST(applied_revision, $2) WHERE replica_id = $1",
    )
    .bind::<SqlUuid, _>(replica)
    .bind::<BigInt, _>(applied)
    .execute(conn)
    .await?;
    Ok(())
}

/// How many replicas hold a live lease but have not applied `revision` yet.
pub async fn replicas_behind(conn: &mut Conn, revision: i64) -> Result<i64, diesel::result::Error> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        behind: i64,
    }
    let r: Row = diesel::sql_query(
        "SELECT count(*) AS behind FROM rbac.rbac_replicas
         WHERE lease_until > clock_timestamp() AND applied_revision < $1",
    )
    .bind::<BigInt, _>(revision)
    .get_result(conn)
    .await?;
    Ok(r.behind)
}

/// The outbox the audit relay delivers from (`queue_audit_client::OutboxRelay`).
pub const OUTBOX_TABLE: &str = "rbac.rbac_audit_outbox";

/// Holds a compensating event in the outbox, due only after `hold_secs` (committed on its own,
/// before the change's audit event is written: if the change never commits, it is delivered).
pub async fn hold_compensation(
    conn: &mut Conn,
    id: Uuid,
    event: &serde_json::Value,
    hold_secs: u64,
) -> Result<(), diesel::result::Error> {
    diesel::sql_query(
        "INSERT INTO rbac.rbac_audit_outbox (id, event, next_attempt_at) \
         VALUES ($1, $2, now() + $3 * interval '1 second')",
    )
    .bind::<SqlUuid, _>(id)
    .bind::<diesel::sql_types::Jsonb, _>(event)
    .bind::<BigInt, _>(i64::try_from(hold_secs).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(())
}

/// In the change's transaction: takes the held compensation out, so it commits (or not) with
/// the change. False if it is gone or was delivered already: the audit log says the change was
/// aborted, so it must not be applied. Waits while the relay is delivering it (row lock).
pub async fn claim_compensation(conn: &mut Conn, id: Uuid) -> Result<bool, diesel::result::Error> {
    let n = diesel::sql_query(
        "DELETE FROM rbac.rbac_audit_outbox WHERE id = $1 AND delivered_at IS NULL AND failed_at IS NULL",
    )
    .bind::<SqlUuid, _>(id)
    .execute(conn)
    .await?;
    Ok(n == 1)
}

/// The change did not happen: deliver its compensation now.
pub async fn release_compensation(conn: &mut Conn, id: Uuid) -> Result<(), diesel::result::Error> {
    diesel::sql_query(
        "UPDATE rbac.rbac_audit_outbox SET next_attempt_at = now() WHERE id = $1 AND delivered_at IS NULL",
    )
    .bind::<SqlUuid, _>(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// The change's audit event was certainly not written (the audit service refused it): nothing
/// to compensate.
pub async fn drop_compensation(conn: &mut Conn, id: Uuid) -> Result<(), diesel::result::Error> {
    diesel::sql_query("DELETE FROM rbac.rbac_audit_outbox WHERE id = $1 AND delivered_at IS NULL")
        .bind::<SqlUuid, _>(id)
        .execute(conn)
        .await?;
    Ok(())
}
