//! PostgreSQL access: an async diesel pool (diesel-async + deadpool, see docs/adr/0002) and
//! the migration runner.
//!
//! Every service owns one schema. Its migrations are embedded in its binary and run with
//! `search_path` set to that schema, so diesel's `__diesel_schema_migrations` table lives in
//! the service's own schema too and two services never see each other's migration history.
//! Concurrent migrators (two replicas starting together) are serialised by an advisory lock.

use diesel::sql_types::Text;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};
use std::time::Duration;

use crate::config::{DatabaseConfig, redact_url};

pub type PgPool = Pool<AsyncPgConnection>;
pub type PgConn = Object<AsyncPgConnection>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("migration of schema `{schema}` failed: {message}")]
    Migration { schema: String, message: String },
}

impl DbError {
    /// A failed query, classified per the error policy: a connection that was closed or could
    /// not send means the database is unreachable (503); anything else is the query's own
    /// failure (500).
    pub fn from_query(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match e {
            Error::DatabaseError(
                DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
                info,
            ) => Self::Unavailable(info.message().to_string()),
            other => Self::Query(other),
        }
    }
}

/// A pool of connections to the service's database.
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    timeout: Duration,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("status", &self.pool.status()).finish()
    }
}

impl Db {
    /// Builds the pool. Connections are opened lazily, so this succeeds with the database down.
    pub fn new(config: &DatabaseConfig) -> Result<Self, DbError> {
        Self::with_role(config, None)
    }

    /// Like `new`, and every connection switches to `role` (`SET ROLE`) before use, so the
    /// service works with that role's privileges (and row-level security applies to it) even
    /// when it logs in as the schema owner.
    pub fn with_role(config: &DatabaseConfig, role: Option<&'static str>) -> Result<Self, DbError> {
        let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
        // No test query on every checkout (a round trip per use): a connection the server has
        // closed fails its first query, the request answers 503, and deadpool drops it.
        // /readyz still checks the database for real.
        manager_config.recycling_method = diesel_async::pooled_connection::RecyclingMethod::Fast;
        if let Some(role) = role {
            manager_config.custom_setup = Box::new(move |url| {
                let url = url.to_string();
                Box::pin(async move {
                    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
                    let mut conn = AsyncPgConnection::establish(&url).await?;
                    conn.batch_execute(&format!("SET ROLE {role}"))
                        .await
                        .map_err(diesel::ConnectionError::CouldntSetupConfiguration)?;
                    Ok(conn)
                })
            });
        }
        let manager =
            AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(config.url.clone(), manager_config);
        let timeout = Duration::from_secs(config.timeout_secs);
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .runtime(deadpool_runtime())
            .build()
            .map_err(|e| DbError::Unavailable(e.to_string()))?;
        Ok(Self { pool, timeout })
    }

    pub async fn conn(&self) -> Result<PgConn, DbError> {
        self.pool.get().await.map_err(|e| DbError::Unavailable(e.to_string()))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// `SELECT 1` within the pool timeout: what `/readyz` asks.
    pub async fn ping(&self) -> Result<(), DbError> {
        let check = async {
            let mut conn = self.conn().await?;
            diesel::sql_query("SELECT 1").execute(&mut conn).await?;
            Ok::<_, DbError>(())
        };
        tokio::time::timeout(self.timeout, check).await.map_err(|_| DbError::Unavailable("timed out".into()))?
    }
}

/// A statement that PostgreSQL prepares once per connection, though diesel would not cache it.
///
/// diesel treats hand-written SQL (`sql_query`), every `UPDATE`, upserts and `INSERT`s with
/// optional columns as unsafe to cache, because their text can vary with the values.
/// diesel-async then prepares them afresh on each use: one more round trip, a parse and a plan,
/// and the prepare holds the connection's statement cache lock, so statements sent together in
/// one pipeline wait for each other's prepares. Wrapped, the statement is cached under its final
/// text and bind types (a text that does vary is still correct: one entry per text), prepared on
/// its first use on a connection and only bound and executed after that.
///
/// Only where the text has few forms: every distinct text stays in the connection's cache
/// (docs/adr/0002-async-diesel-pool.md, addendum).
pub fn prepared<Q>(query: Q) -> Prepared<Q> {
    Prepared(query)
}

/// See [`prepared`].
#[derive(Debug, Clone, Copy)]
#[must_use = "queries are only executed when loaded or executed"]
pub struct Prepared<Q>(Q);

impl<Q: diesel::query_builder::QueryFragment<diesel::pg::Pg>> diesel::query_builder::QueryFragment<diesel::pg::Pg>
    for Prepared<Q>
{
    fn walk_ast<'b>(&'b self, pass: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &diesel::pg::Pg) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> diesel::query_builder::QueryId for Prepared<Q> {
    type QueryId = ();
    // No static id: the cache is keyed by the statement's text and bind types.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: diesel::query_builder::Query> diesel::query_builder::Query for Prepared<Q> {
    type SqlType = Q::SqlType;
}

fn deadpool_runtime() -> deadpool::Runtime {
    deadpool::Runtime::Tokio1
}

/// A service's schema and its embedded migrations.
#[derive(Clone, Copy)]
pub struct SchemaMigrations {
    pub schema: &'static str,
    pub migrations: &'static EmbeddedMigrations,
}

impl std::fmt::Debug for SchemaMigrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaMigrations").field("schema", &self.schema).finish()
    }
}

/// The shadow-table functions (crates/queue-platform/sql/shadow.sql, docs/shadow-tables.md),
/// installed before any service's migrations so that each can call `queue_shadow.attach`.
pub const SHADOW_SQL: &str = include_str!("../sql/shadow.sql");

fn install_shadow(conn: &mut AsyncConnectionWrapper<AsyncPgConnection>) -> diesel::QueryResult<()> {
    use diesel::connection::SimpleConnection;
    // Several services may migrate at once; CREATE OR REPLACE FUNCTION is not safe concurrently.
    diesel::RunQueryDsl::execute(diesel::sql_query("SELECT pg_advisory_lock(hashtext('queue-shadow'))"), conn)?;
    let result = conn.batch_execute(SHADOW_SQL);
    diesel::RunQueryDsl::execute(diesel::sql_query("SELECT pg_advisory_unlock(hashtext('queue-shadow'))"), conn)?;
    result
}

/// Lends a `&'static EmbeddedMigrations` to diesel, which wants a source by value.
struct Source(&'static EmbeddedMigrations);

impl diesel::migration::MigrationSource<diesel::pg::Pg> for Source {
    fn migrations(&self) -> diesel::migration::Result<Vec<Box<dyn diesel::migration::Migration<diesel::pg::Pg>>>> {
        diesel::migration::MigrationSource::<diesel::pg::Pg>::migrations(self.0)
    }
}

/// Creates the schema if needed and applies pending migrations; returns the versions applied.
pub async fn migrate(database_url: &str, target: SchemaMigrations) -> Result<Vec<String>, DbError> {
    let url = database_url.to_string();
    let schema = target.schema;
    let fail = move |message: String| DbError::Migration { schema: schema.to_string(), message };
    tracing::info!(schema, database = %redact_url(&url), "running migrations");
    tokio::task::spawn_blocking(move || {
        use diesel::Connection;
        use diesel::connection::SimpleConnection;
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::establish(&url)
            .map_err(|e| fail(format!("cannot connect to {}: {}", redact_url(&url), one_line(&e.to_string()))))?;
        let lock = diesel::sql_query("SELECT pg_advisory_lock(hashtext($1))")
            .bind::<Text, _>(format!("queue-migrate:{schema}"));
        diesel::RunQueryDsl::execute(lock, &mut conn).map_err(|e| fail(e.to_string()))?;
        let result = (|| {
            install_shadow(&mut conn).map_err(|e| fail(format!("installing queue_shadow: {e}")))?;
            conn.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}"))
                .map_err(|e| fail(e.to_string()))?;
            let applied = conn.run_pending_migrations(Source(target.migrations)).map_err(|e| fail(e.to_string()))?;
            Ok(applied.iter().map(|v| v.to_string()).collect::<Vec<_>>())
        })();
        // Closing the connection releases the advisory lock even if this fails.
        let _ = conn.batch_execute("SELECT pg_advisory_unlock_all()");
        result
    })
    .await
    .map_err(|e| DbError::Migration { schema: schema.to_string(), message: e.to_string() })?
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::DbError;
    use diesel::result::{DatabaseErrorKind, Error};

    fn db_error(kind: DatabaseErrorKind) -> Error {
        Error::DatabaseError(kind, Box::new("from the test".to_string()))
    }

    #[test]
    fn a_lost_connection_is_unavailable_and_a_failed_query_is_not() {
        for kind in [DatabaseErrorKind::ClosedConnection, DatabaseErrorKind::UnableToSendCommand] {
            assert!(matches!(DbError::from_query(db_error(kind)), DbError::Unavailable(_)));
        }
        for e in [db_error(DatabaseErrorKind::Unknown), db_error(DatabaseErrorKind::UniqueViolation), Error::NotFound] {
            assert!(matches!(DbError::from_query(e), DbError::Query(_)));
        }
    }
}
