//! The database layer's tables: diesel's view of the `auth` schema, generated from
//! migrations/auth by `make schema` (scripts/schema.sh) and checked by `make test`.

pub mod schema;
