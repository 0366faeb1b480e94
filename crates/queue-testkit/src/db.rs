//! A database per test, cloned from a template that holds the migrated schemas. The template
//! is built once per set of migrations (its name is a hash of their versions), under an
//! advisory lock so that test processes sharing a cluster build it once between them.

use diesel::migration::MigrationSource;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use queue_platform::db::SchemaMigrations;
use sha2::{Digest, Sha256};

use crate::cluster::admin_url;

/// A database of this test's own; dropped when the value is.
/// Clones share the database; it is dropped with the last clone (so several services, or two
/// replicas of one, can work on one database).
#[derive(Clone)]
pub struct TestDb {
    pub url: String,
    pub name: String,
    _dropper: std::sync::Arc<DropDatabase>,
}

struct DropDatabase(String);

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn with_db(url: &str, db: &str) -> String {
    let mut u = url::Url::parse(url).expect("DATABASE_URL is a URL");
    u.set_path(&format!("/{db}"));
    u.to_string()
}

async fn admin() -> AsyncPgConnection {
    AsyncPgConnection::establish(admin_url()).await.expect("connect to the test cluster")
}

async fn exists(conn: &mut AsyncPgConnection, name: &str) -> bool {
    diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
        .bind::<Text, _>(name)
        .get_result::<Count>(conn)
        .await
        .map(|c| c.n > 0)
        .unwrap_or(false)
}

fn template_name(schemas: &[SchemaMigrations]) -> String {
    let mut h = Sha256::new();
    for s in schemas {
        h.update(s.schema.as_bytes());
        let list = MigrationSource::<diesel::pg::Pg>::migrations(s.migrations).expect("embedded migrations");
        for m in list {
            h.update(m.name().to_string().as_bytes());
        }
    }
    let digest = h.finalize();
    format!("queue_tmpl_{}", digest.iter().take(6).map(|b| format!("{b:02x}")).collect::<String>())
}

async fn ensure_template(schemas: &[SchemaMigrations]) -> String {
    let name = template_name(schemas);
    let mut conn = admin().await;
    if exists(&mut conn, &name).await {
        return name;
    }
    diesel::sql_query("SELECT pg_advisory_lock(hashtext($1))")
        .bind::<Text, _>(&name)
        .execute(&mut conn)
        .await
        .expect("lock");
    if !exists(&mut conn, &name).await {
        let wip = format!("{name}_wip");
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {wip} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .expect("drop wip");
        diesel::sql_query(format!("CREATE DATABASE {wip}")).execute(&mut conn).await.expect("create template");
        for s in schemas {
            queue_platform::db::migrate(&with_db(admin_url(), &wip), *s).await.expect("migrate the template");
        }
        diesel::sql_query(format!("ALTER DATABASE {wip} RENAME TO {name}")).execute(&mut conn).await.expect("rename");
    }
    diesel::sql_query("SELECT pg_advisory_unlock(hashtext($1))")
        .bind::<Text, _>(&name)
        .execute(&mut conn)
        .await
        .expect("unlock");
    name
}

impl TestDb {
    /// A new database holding these schemas, migrated.
    pub async fn new(schemas: &[SchemaMigrations]) -> Self {
        let template = ensure_template(schemas).await;
        let name = format!("qt_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin().await;
        let mut attempt = 0;
        // CREATE DATABASE fails while another session is connected to the template; that
        // only happens in the moment another process builds it, so retry briefly.
        while let Err(e) =
            diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE {template}")).execute(&mut conn).await
        {
            attempt += 1;
            assert!(attempt < 50, "cannot clone the template: {e}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Self { url: with_db(admin_url(), &name), _dropper: std::sync::Arc::new(DropDatabase(name.clone())), name }
    }

    /// A new empty database (none of Queue's schemas), for an app that creates its own: Raptor
    /// executes raptor-schema.sql on an empty database and refuses one with tables in it. Built
    /// from `template0`, so nothing added to the cluster's `template1` leaks in.
    pub async fn empty() -> Self {
        let name = format!("qt_{}", uuid::Uuid::new_v4().simple());
        let mut conn = admin().await;
        diesel::sql_query(format!("CREATE DATABASE {name} TEMPLATE template0"))
            .execute(&mut conn)
            .await
            .expect("create an empty database");
        Self { url: with_db(admin_url(), &name), _dropper: std::sync::Arc::new(DropDatabase(name.clone())), name }
    }

    /// A fresh connection to this database.
    pub async fn conn(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.url).await.expect("connect to the test database")
    }

    /// Drops the database now, disconnecting everyone (to test what a service does when its
    /// database goes away).
    pub async fn drop_now(&self) {
        let mut conn = admin().await;
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
            .execute(&mut conn)
            .await
            .expect("drop database");
    }
}

impl Drop for DropDatabase {
    fn drop(&mut self) {
        // Best effort, off the async runtime: a leftover database on a throwaway cluster is
        // harmless, but on a shared DATABASE_URL cluster they would pile up.
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(mut conn) = AsyncPgConnection::establish(admin_url()).await {
                    let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}
