//! The shape rules of the fields only the server's own endpoints take (role names, reasons,
//! descriptions, list sizes), each as a predicate the domain checks with and a schema the OpenAPI
//! document states, from the same constants. The ids and permission names the check endpoints
//! share with their client are in `queue_rbac_client::rules` (why patterns end in
//! `$(?![\s\S])` is said there).

use queue_rbac_client::rules::{self as wire, string_schema};
use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{KnownFormat, RefOr, SchemaFormat};

/// Role names: at most this many characters.
pub const ROLE_NAME_MAX_LEN: usize = 64;
/// Role names: a lowercase letter, then lowercase letters, digits and `_ . -` (checked by
/// [`is_role_name`]).
pub const ROLE_NAME_PATTERN: &str = r"^[a-z][a-z0-9_.-]{0,63}$(?![\s\S])";
/// Reasons (of a grant, a revoke): at most this many characters.
pub const REASON_MAX_LEN: usize = 1000;
/// Reasons: something besides whitespace (Rust's `char::is_whitespace`, spelled out: the
/// server trims with it), and no NUL (PostgreSQL cannot store it). Checked by [`is_reason`].
pub const REASON_PATTERN: &str =
    r"^[^\u0000]*[^\u0000\t-\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\u0000]*$";
/// A role's description: at most this many characters.
pub const DESCRIPTION_MAX_LEN: usize = 1000;
/// Descriptions: anything but NUL (PostgreSQL cannot store it).
pub const DESCRIPTION_PATTERN: &str = r"^[^\u0000]*$";
/// A role lists 1 to this many permissions.
pub const MAX_ROLE_PERMISSIONS: usize = 64;
/// Grant listings: this many unless `limit` says otherwise, and at most [`MAX_LIMIT`].
pub const DEFAULT_LIMIT: i64 = 500;
pub const MAX_LIMIT: i64 = 5000;

/// Is `name` a role name ([`ROLE_NAME_PATTERN`])?
pub fn is_role_name(name: &str) -> bool {
    (1..=ROLE_NAME_MAX_LEN).contains(&name.len())
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// Is `reason` a reason ([`REASON_PATTERN`], at most [`REASON_MAX_LEN`] characters)? JSON
/// Schema counts characters, not bytes, and so does this.
pub fn is_reason(reason: &str) -> bool {
    !reason.contains('\0') && !reason.trim().is_empty() && reason.chars().count() <= REASON_MAX_LEN
}

/// Is `text` a role description ([`DESCRIPTION_PATTERN`], at most [`DESCRIPTION_MAX_LEN`])?
pub fn is_description(text: &str) -> bool {
    !text.contains('\0') && text.chars().count() <= DESCRIPTION_MAX_LEN
}

pub fn role_name_schema() -> Schema {
    string_schema(
        1,
        ROLE_NAME_MAX_LEN,
        ROLE_NAME_PATTERN,
        "a lowercase letter, then lowercase letters, digits, `_ . -`",
    )
    .into()
}

pub fn reason_schema() -> Schema {
    string_schema(1, REASON_MAX_LEN, REASON_PATTERN, "why, in 1 to 1000 characters (not only whitespace)").into()
}

pub fn description_schema() -> Schema {
    string_schema(0, DESCRIPTION_MAX_LEN, DESCRIPTION_PATTERN, "at most 1000 characters").into()
}

pub fn permissions_schema() -> Schema {
    ArrayBuilder::new()
        .items(RefOr::T(wire::permission_schema()))
        .min_items(Some(1))
        .max_items(Some(MAX_ROLE_PERMISSIONS))
        .description(Some("1 to 64 permission names (duplicates are ignored)"))
        .into()
}

pub fn limit_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(1))
        .maximum(Some(MAX_LIMIT))
        .default(Some(DEFAULT_LIMIT.into()))
        .into()
}

queue_rbac_client::param_schema!(
    /// A listing's `limit`, as a parameter ([`limit_schema`]).
    Limit => limit_schema()
);

/// The schema of a scope: exactly what `Scope` deserializes (an object tagged by `type`, with
/// the ids that type needs and nothing else).
pub fn scope_schema() -> RefOr<Schema> {
    // Titles name the variants' classes in generated clients (`TenantScope`, not `ScopeType1`).
    let variant = |kind: &str, title: &str, description: &str, ids: &[&str]| {
        let tag = ObjectBuilder::new().schema_type(Type::String).enum_values(Some([kind]));
        let mut o = ObjectBuilder::new()
            .schema_type(Type::Object)
            .title(Some(title))
            .description(Some(description))
            .property("type", tag)
            .required("type");
        for id in ids {
            o = o.property(*id, wire::id_schema()).required(*id);
        }
        o.additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(false)))
    };
    OneOfBuilder::new()
        .description(Some("Where a grant applies."))
        .item(variant("global", "GlobalScope", "Everything, in every tenant.", &[]))
        .item(variant("tenant", "TenantScope", "A tenant and all of its tickets.", &["tenant_id"]))
        .item(variant("ticket", "TicketScope", "One ticket of a tenant.", &["tenant_id", "ticket_id"]))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_reasons_descriptions() {
        assert!(is_role_name("customer_admin") && is_role_name("t1.triage-b") && !is_role_name("Admin"));
        assert!(!is_role_name("") && !is_role_name("1x") && !is_role_name(&"a".repeat(65)));
        assert!(is_reason("x") && is_reason(&"é".repeat(1000)) && !is_reason(&"é".repeat(1001)));
        assert!(!is_reason("") && !is_reason(" \n\u{3000}") && !is_reason("a\0b"));
        assert!(is_description("") && !is_description("\0"));
    }

    /// The pattern's whitespace class is exactly what `trim` removes.
    #[test]
    fn the_reason_pattern_spells_rusts_whitespace() {
        let listed = ['\u{85}', '\u{a0}', '\u{1680}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}', '\u{3000}', ' '];
        let ranges = ['\t'..='\r', '\u{2000}'..='\u{200a}'];
        let mut spelled: Vec<char> = listed.into_iter().chain(ranges.into_iter().flatten()).collect();
        spelled.sort();
        let whitespace: Vec<char> = (0..=0x10ffff).filter_map(char::from_u32).filter(|c| c.is_whitespace()).collect();
        assert_eq!(spelled, whitespace);
    }
}
