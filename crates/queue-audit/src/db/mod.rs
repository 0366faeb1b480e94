//! The database layer's tables: diesel's view of the `audit` schema, generated from
//! migrations/audit by `make schema` (scripts/schema.sh) and checked by `make test`.

pub mod schema;
