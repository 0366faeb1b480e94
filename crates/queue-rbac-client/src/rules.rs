//! The shape rules of the check endpoints' fields, in one place for the server that enforces
//! them and the OpenAPI schemas that state them: each rule is a predicate the server calls and
//! a schema built from the same constants.
//!
//! Patterns end in `$(?![\s\S])`, not `$` alone: in Python's regex dialect (which schemathesis
//! and hypothesis generate from) `$` also matches before a trailing newline, so `^x$` would admit
//! `"x\n"`, which the server refuses. The lookahead means "the end of the text" in every dialect.

use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{Ref, RefOr};

/// Ids of principals, tenants and tickets: at most this many characters.
pub const ID_MAX_LEN: usize = 128;
/// Ids: 1 to [`ID_MAX_LEN`] letters, digits and `. _ : - @` (checked by [`is_id`]).
pub const ID_PATTERN: &str = r"^[A-Za-z0-9._:@-]{1,128}$(?![\s\S])";
/// Permission names: at most this many characters.
pub const PERMISSION_MAX_LEN: usize = 64;
/// Permission names: two or more dotted lowercase words, e.g. `ticket.read` (checked by
/// [`is_permission`]).
pub const PERMISSION_PATTERN: &str = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$(?![\s\S])";
/// A batch holds 1 to this many checks.
pub const MAX_BATCH_CHECKS: usize = 1000;

/// Is `value` an id ([`ID_PATTERN`])?
pub fn is_id(value: &str) -> bool {
    (1..=ID_MAX_LEN).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-@".contains(&b))
}

/// Is `value` a permission name ([`PERMISSION_PATTERN`])?
pub fn is_permission(value: &str) -> bool {
    value.len() <= PERMISSION_MAX_LEN
        && value.split('.').count() >= 2
        && value.split('.').all(|w| {
            w.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
                && w.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// A string schema with a length range and a pattern.
pub fn string_schema(min: usize, max: usize, pattern: &str, description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(min))
        .max_length(Some(max))
        .pattern(Some(pattern))
        .description(Some(description))
}

/// The schema of an id ([`ID_PATTERN`]).
pub fn id_schema() -> Schema {
    string_schema(1, ID_MAX_LEN, ID_PATTERN, "1-128 letters, digits and `. _ : - @`").into()
}

/// [`id_schema`], or `null` (an optional id in a body).
pub fn id_or_null_schema() -> Schema {
    string_schema(1, ID_MAX_LEN, ID_PATTERN, "1-128 letters, digits and `. _ : - @`")
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .into()
}

/// The schema of a permission name ([`PERMISSION_PATTERN`]).
pub fn permission_schema() -> Schema {
    string_schema(3, PERMISSION_MAX_LEN, PERMISSION_PATTERN, "dotted lowercase words, e.g. `ticket.read`").into()
}

/// The schema of a batch's checks: 1 to [`MAX_BATCH_CHECKS`] of them.
pub fn checks_schema() -> Schema {
    ArrayBuilder::new()
        .items(RefOr::Ref(Ref::from_schema_name("CheckRequest")))
        .min_items(Some(1))
        .max_items(Some(MAX_BATCH_CHECKS))
        .into()
}

/// Declares a schema-only type for parameters (`#[param(value_type = Option<Id>, inline)]`):
/// `schema_with` on a parameter drops its description and required-ness, `value_type` keeps them.
#[macro_export]
macro_rules! param_schema {
    ($(#[$doc:meta])* $name:ident => $schema:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::RefOr::T($schema)
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

param_schema!(
    /// An id, as a parameter ([`id_schema`]).
    Id => id_schema()
);
param_schema!(
    /// A permission name, as a parameter ([`permission_schema`]).
    Permission => permission_schema()
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_permissions() {
        assert!(is_id("tenant-1") && is_id("user@example.com") && is_id(&"a".repeat(128)));
        assert!(!is_id("") && !is_id("a b") && !is_id("a,b") && !is_id(&"a".repeat(129)) && !is_id("é"));
        assert!(is_permission("ticket.read") && is_permission("a.b_2.c"));
        assert!(!is_permission("ticket") && !is_permission("Ticket.read") && !is_permission("ticket..read"));
        assert!(!is_permission("1a.b") && !is_permission(&format!("a.{}", "b".repeat(63))));
    }
}
