//! The `rbac` schema: the table definitions diesel generates from migrations/rbac, and the
//! queries. Every query takes a connection, so it works inside the caller's transaction. Rows
//! here have the database's shape; the domain turns them into its own types.

pub(crate) mod grants;
pub(crate) mod links;
pub(crate) mod outbox;
pub(crate) mod replicas;
pub(crate) mod revisions;
pub(crate) mod roles;
mod schema;
pub(crate) mod shadow;
pub(crate) mod writeback;

pub type Conn = diesel_async::AsyncPgConnection;

#[diesel::declare_sql_function]
extern "SQL" {
    /// The database's clock now (`now()` is the start of the transaction): leases are counted on it.
    fn clock_timestamp() -> diesel::sql_types::Timestamptz;
}
