//! Reading Raptor: one connection, one read-only REPEATABLE READ transaction for the whole import
//! (every kind sees the same moment, so a grant never names a customer the users did not
//! include), and per kind the columns its record needs, a page at a time in id order. Raptor's
//! session tokens are hashed in the query (`sha256`): the plaintext never leaves its database.

use anyhow::Context;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::pg::Pg;
use diesel::sql_types::{Array, BigInt, Bool, Bytea, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use queue_platform::config::redact_url;

/// A row of one kind: how to count the kind and read a page of it after a given id.
pub trait SourceRow: QueryableByName<Pg> + Send + 'static {
    /// `SELECT count(*) AS n …`
    const COUNT: &'static str;
    /// The rows with an id above `$1`, in id order, at most `$2`.
    const PAGE: &'static str;
    fn id(&self) -> i64;
}

/// Raptor's database, inside the import's snapshot.
pub struct Snapshot {
    conn: AsyncPgConnection,
    /// When the snapshot was taken (the transaction's `now()`).
    pub taken_at: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Now {
    #[diesel(sql_type = Timestamptz)]
    now: DateTime<Utc>,
}

impl Snapshot {
    /// Connects to `url` and opens the snapshot. Errors name the URL without its password.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let shown = redact_url(url);
        let mut conn = AsyncPgConnection::establish(url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to Raptor's database at {shown}: {e}"))?;
        conn.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .with_context(|| format!("cannot open a read-only snapshot of {shown}"))?;
        let now = diesel::sql_query("SELECT now() AS now").get_result::<Now>(&mut conn).await?;
        Ok(Self { conn, taken_at: now.now })
    }

    /// How many rows of `R`'s kind the snapshot holds.
    pub async fn count<R: SourceRow>(&mut self) -> anyhow::Result<u64> {
        let c = diesel::sql_query(R::COUNT)
            .get_result::<Count>(&mut self.conn)
            .await
            .with_context(|| format!("reading Raptor ({}): is this Raptor's database?", R::COUNT))?;
        Ok(u64::try_from(c.n).unwrap_or(0))
    }

    /// At most `limit` rows after id `after`, in id order.
    pub async fn page<R: SourceRow>(&mut self, after: i64, limit: usize) -> anyhow::Result<Vec<R>> {
        diesel::sql_query(R::PAGE)
            .bind::<BigInt, _>(after)
            .bind::<BigInt, _>(i64::try_from(limit).unwrap_or(i64::MAX))
            .load::<R>(&mut self.conn)
            .await
            .with_context(|| format!("reading Raptor: {}", R::PAGE))
    }

    /// A read of queuectl's own inside the snapshot (`legacy status`'s counts), `$1` bound to
    /// `since` (NULL when there is none).
    pub async fn read<T: QueryableByName<Pg> + Send + 'static>(
        &mut self,
        sql: &'static str,
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<T> {
        diesel::sql_query(sql)
            .bind::<Nullable<Timestamptz>, _>(since)
            .get_result::<T>(&mut self.conn)
            .await
            .with_context(|| format!("reading Raptor ({sql}): is this Raptor's database?"))
    }

    /// Ends the snapshot (it only ever read).
    pub async fn close(mut self) -> anyhow::Result<()> {
        self.conn.batch_execute("ROLLBACK").await.context("closing the snapshot")?;
        Ok(())
    }
}

/// `customers`.
#[derive(QueryableByName, Debug)]
pub struct CustomerRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub tenant_id: String,
    #[diesel(sql_type = Text)]
    pub email: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub email_verified_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub display_name: Option<String>,
    #[diesel(sql_type = Bool)]
    pub is_active: bool,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

impl SourceRow for CustomerRow {
    const COUNT: &'static str = "SELECT count(*) AS n FROM customers";
    const PAGE: &'static str = "SELECT id, tenant_id::text AS tenant_id, email, email_verified_at, display_name, \
         is_active, created_at FROM customers WHERE id > $1 ORDER BY id LIMIT $2";
    fn id(&self) -> i64 {
        self.id
    }
}

/// `customer_sessions`, the token as its SHA-256 (of the cookie string's bytes, as auth hashes
/// its own session tokens).
#[derive(QueryableByName, Debug)]
pub struct SessionRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub customer_id: i64,
    #[diesel(sql_type = Bytea)]
    pub token_sha256: Vec<u8>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub expires_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_seen_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub revoked_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub ip: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub user_agent: Option<String>,
}

impl SourceRow for SessionRow {
    const COUNT: &'static str = "SELECT count(*) AS n FROM customer_sessions";
    const PAGE: &'static str = "SELECT id, customer_id, sha256(convert_to(token, 'UTF8')) AS token_sha256, \
         created_at, expires_at, last_seen_at, revoked_at, host(ip) AS ip, user_agent \
         FROM customer_sessions WHERE id > $1 ORDER BY id LIMIT $2";
    fn id(&self) -> i64 {
        self.id
    }
}

/// `customer_backup_codes`.
#[derive(QueryableByName, Debug)]
pub struct BackupCodeRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub customer_id: i64,
    #[diesel(sql_type = Text)]
    pub code_hash: String,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub used_at: Option<DateTime<Utc>>,
}

impl SourceRow for BackupCodeRow {
    const COUNT: &'static str = "SELECT count(*) AS n FROM customer_backup_codes";
    const PAGE: &'static str = "SELECT id, customer_id, code_hash, created_at, used_at \
         FROM customer_backup_codes WHERE id > $1 ORDER BY id LIMIT $2";
    fn id(&self) -> i64 {
        self.id
    }
}

/// `webauthn_credentials`.
#[derive(QueryableByName, Debug)]
pub struct CredentialRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub customer_id: i64,
    #[diesel(sql_type = Bytea)]
    pub credential_id: Vec<u8>,
    #[diesel(sql_type = Bytea)]
    pub public_key: Vec<u8>,
    #[diesel(sql_type = BigInt)]
    pub sign_count: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub aaguid: Option<String>,
    #[diesel(sql_type = Text)]
    pub device_type: String,
    #[diesel(sql_type = Bool)]
    pub backed_up: bool,
    #[diesel(sql_type = Bool)]
    pub user_verified: bool,
    #[diesel(sql_type = Nullable<Array<Text>>)]
    pub transports: Option<Vec<String>>,
    #[diesel(sql_type = Bytea)]
    pub user_handle: Vec<u8>,
    #[diesel(sql_type = Nullable<Text>)]
    pub name: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_used_at: Option<DateTime<Utc>>,
}

impl SourceRow for CredentialRow {
    const COUNT: &'static str = "SELECT count(*) AS n FROM webauthn_credentials";
    // A NULL inside the transports array says nothing: dropped rather than sent.
    const PAGE: &'static str = "SELECT id, customer_id, credential_id, public_key, sign_count, aaguid, \
         device_type, backed_up, user_verified, array_remove(transports, NULL) AS transports, user_handle, \
         name, created_at, last_used_at FROM webauthn_credentials WHERE id > $1 ORDER BY id LIMIT $2";
    fn id(&self) -> i64 {
        self.id
    }
}

/// `rbac_roles` with their `rbac_role_permissions`.
#[derive(QueryableByName, Debug)]
pub struct RoleRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub tenant_id: Option<String>,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub description: Option<String>,
    #[diesel(sql_type = Array<Text>)]
    pub permissions: Vec<String>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

impl SourceRow for RoleRow {
    const COUNT: &'static str = "SELECT count(*) AS n FROM rbac_roles";
    const PAGE: &'static str = "SELECT r.id, r.tenant_id::text AS tenant_id, r.name, r.description, r.created_at, \
         coalesce(array_agg(p.permission ORDER BY p.permission) FILTER (WHERE p.permission IS NOT NULL), \
         '{}') AS permissions FROM rbac_roles r LEFT JOIN rbac_role_permissions p ON p.role_id = r.id \
         WHERE r.id > $1 GROUP BY r.id ORDER BY r.id LIMIT $2";
    fn id(&self) -> i64 {
        self.id
    }
}

/// `rbac_grants` with their role's name and tenant.
#[derive(QueryableByName, Debug)]
pub struct GrantRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = BigInt)]
    pub customer_id: i64,
    #[diesel(sql_type = BigInt)]
    pub role_id: i64,
    #[diesel(sql_type = Text)]
    pub role: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub role_tenant_id: Option<String>,
    #[diesel(sql_type = Text)]
    pub scope_type: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub tenant_id: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub ticket_id: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub granted_by: Option<i64>,
    #[diesel(sql_type = Timestamptz)]
    pub granted_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub expires_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    pub reason: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub revoked_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub revoked_by: Option<i64>,
}

impl SourceRow for GrantRow {
    const COUNT: &'static str = "SELECT count(*) AS n FROM rbac_grants";
    const PAGE: &'static str = "SELECT g.id, g.customer_id, g.role_id, r.name AS role, r.tenant_id::text AS role_tenant_id, \
         g.scope_type, g.tenant_id::text AS tenant_id, g.ticket_id, g.granted_by, g.granted_at, g.expires_at, \
         g.reason, g.revoked_at, g.revoked_by FROM rbac_grants g JOIN rbac_roles r ON r.id = g.role_id \
         WHERE g.id > $1 ORDER BY g.id LIMIT $2";
    fn id(&self) -> i64 {
        self.id
    }
}
