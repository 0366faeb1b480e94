//! The rules the text fields of requests follow, each one pattern and one length: the server
//! checks a value with [`Rule::check`] and the OpenAPI document states the same rule
//! ([`Rule::schema`], through `#[schema(schema_with = ...)]`), so the two cannot drift.
//!
//! Patterns are written in the subset that regex-lite, ECMA-262 and Python read alike (no
//! Unicode classes: whitespace and control characters are spelled out), and lengths count
//! characters (code points), as JSON Schema's `maxLength` does.

use std::sync::LazyLock;

use queue_platform::ApiError;
use regex_lite::Regex;
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};

/// `char::is_whitespace` (Unicode White_Space), as a class body.
macro_rules! ws {
    () => {
        r"\t-\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
    };
}
/// `char::is_control` (Unicode Cc), as a class body.
macro_rules! ctrl {
    () => {
        r"\x00-\x1f\x7f-\x9f"
    };
}

/// One field's rule: what the document says and what the handler checks.
pub struct Rule {
    field: &'static str,
    /// Empty: any text (only the length is checked).
    pattern: &'static str,
    max_chars: usize,
    /// The refusal's message (422, `field` set).
    says: &'static str,
    example: &'static str,
    compiled: LazyLock<Regex>,
}

macro_rules! rule {
    ($name:ident, $field:literal, $pattern:expr, $max:expr, $says:literal, $example:literal) => {
        pub static $name: Rule = Rule {
            field: $field,
            pattern: $pattern,
            max_chars: $max,
            says: $says,
            example: $example,
            compiled: LazyLock::new(|| Regex::new($pattern).expect("a static pattern compiles")),
        };
    };
}

rule!(
    EMAIL,
    "email",
    concat!(
        "^[",
        ws!(),
        "]*[^@",
        ws!(),
        ctrl!(),
        "]{1,64}@[^@.",
        ws!(),
        ctrl!(),
        r"]+(?:\.[^@.",
        ws!(),
        ctrl!(),
        "]+)+[",
        ws!(),
        "]*$"
    ),
    254,
    "an address: up to 64 characters before the one @, a dotted domain after it, no spaces or control \
     characters (surrounding whitespace is ignored), at most 254 characters",
    "ada@example.com"
);
rule!(TENANT_ID, "tenant_id", "^[A-Za-z0-9._:-]{1,128}$", 128, "1-128 of: letters, digits, . _ : -", "acme");
rule!(
    DISPLAY_NAME,
    "display_name",
    concat!("^[^", ctrl!(), "]*$"),
    200,
    "at most 200 printable characters",
    "Ada Lovelace"
);
rule!(
    PASSKEY_NAME,
    "name",
    concat!("^[^", ctrl!(), "]*[^", ws!(), ctrl!(), "][^", ctrl!(), "]*$"),
    100,
    "1 to 100 printable characters, not only spaces",
    "Work laptop"
);
rule!(EMAIL_CODE, "code", "^[0-9]{8}$", 8, "8 digits", "04719382");
rule!(
    LINK_TOKEN,
    "token",
    "^[A-Za-z0-9_-]{43}$",
    43,
    "the link's token: 43 characters of base64url",
    "q3Vt1Yb0m2cHc8Wk5n9dPzL4xRaTfGhJiKlMnOpQrSs"
);
// Any text: a code that is not one is refused like a wrong one (401), by the same path.
rule!(BACKUP_CODE, "code", "", 64, "at most 64 characters", "7KQM-2XJD");

impl Rule {
    /// Whether `value` follows the rule.
    pub fn fits(&self, value: &str) -> bool {
        value.chars().count() <= self.max_chars && self.compiled.is_match(value)
    }

    /// `Ok` when `value` follows the rule, else the 422 naming the field.
    pub fn check(&self, value: &str) -> Result<(), ApiError> {
        if self.fits(value) { Ok(()) } else { Err(ApiError::invalid(self.field, self.says)) }
    }

    fn builder(&self, nullable: bool) -> ObjectBuilder {
        let kind =
            if nullable { SchemaType::from_iter([Type::String, Type::Null]) } else { SchemaType::new(Type::String) };
        ObjectBuilder::new()
            .schema_type(kind)
            // An empty pattern (any text) is left out.
            .pattern((!self.pattern.is_empty()).then_some(self.pattern))
            .max_length(Some(self.max_chars))
            .description(Some(self.says))
            .examples([serde_json::Value::from(self.example)])
    }

    /// The field's schema: a string with the rule's pattern and length.
    pub fn schema(&self) -> RefOr<Schema> {
        RefOr::T(Schema::Object(self.builder(false).build()))
    }

    /// The same, for an optional field that may also be `null` (serde reads both as absent).
    pub fn schema_or_null(&self) -> RefOr<Schema> {
        RefOr::T(Schema::Object(self.builder(true).build()))
    }
}

/// For `#[schema(schema_with = ...)]`, which takes a function.
pub mod schema {
    use super::*;

    pub fn email() -> RefOr<Schema> {
        EMAIL.schema()
    }
    pub fn email_or_null() -> RefOr<Schema> {
        EMAIL.schema_or_null()
    }
    pub fn tenant_id_or_null() -> RefOr<Schema> {
        TENANT_ID.schema_or_null()
    }
    pub fn display_name_or_null() -> RefOr<Schema> {
        DISPLAY_NAME.schema_or_null()
    }
    pub fn passkey_name() -> RefOr<Schema> {
        PASSKEY_NAME.schema()
    }
    pub fn passkey_name_or_null() -> RefOr<Schema> {
        PASSKEY_NAME.schema_or_null()
    }
    pub fn backup_code() -> RefOr<Schema> {
        BACKUP_CODE.schema()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles_and_its_example_fits() {
        for rule in [&EMAIL, &TENANT_ID, &DISPLAY_NAME, &PASSKEY_NAME, &EMAIL_CODE, &LINK_TOKEN, &BACKUP_CODE] {
            assert!(rule.fits(rule.example), "{}: {}", rule.field, rule.example);
        }
    }

    #[test]
    fn an_address_is_what_it_was() {
        for ok in ["a@b.co", "  Ada@Example.COM ", "ü@bücher.de", "x+tag@sub.example.org"] {
            assert!(EMAIL.fits(ok), "{ok}");
        }
        for bad in ["", "a", "a@b", "a@.b", "a@b.", "a@b..c", "a b@c.de", "a@b@c.de", "a\u{0}@b.co", "@b.co"] {
            assert!(!EMAIL.fits(bad), "{bad:?}");
        }
        assert!(!EMAIL.fits(&format!("{}@b.co", "a".repeat(65))));
        assert!(!EMAIL.fits(&format!("a@{}.co", "b".repeat(252))));
    }

    #[test]
    fn a_passkey_name_needs_more_than_spaces() {
        assert!(PASSKEY_NAME.fits("Work laptop"));
        assert!(!PASSKEY_NAME.fits("   "));
        assert!(!PASSKEY_NAME.fits("a\nb"));
        assert!(!PASSKEY_NAME.fits(&"x".repeat(101)));
    }
}
