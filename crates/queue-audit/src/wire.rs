//! Wire types and their validation: input is parsed into domain types at the edge, and every
//! refusal names the field (422), or says the payload is too large (413).

use chrono::{DateTime, SubsecRound, Utc};
use queue_platform::ApiError;
use serde_json::{Map, Value, json};

use crate::domain::append::NewEvent;
use crate::domain::chain::canonical_json;

// The rules of an event's fields: the checks below and the schemas in the OpenAPI document
// ([`event_schema`], [`tenant_id_schema`], …) are built from these, so they cannot disagree.
// Lengths are in characters (as JSON Schema's `maxLength` counts them).

/// An event id: a UUID in its hyphenated form (36 characters).
pub const EVENT_ID_LEN: usize = 36;
pub const TENANT_ID_MAX: usize = 128;
/// Letters, digits and `. _ : -` (no comma: the writer passes tenant lists comma-separated).
pub const TENANT_ID_PATTERN: &str = "^[A-Za-z0-9._:-]+$";
pub const ACTION_MAX: usize = 128;
pub const ACTION_PATTERN: &str = "^[a-z0-9._:-]+$";
pub const PARTY_TYPE_MAX: usize = 64;
pub const PARTY_ID_MAX: usize = 256;
pub const OCCURRED_AT_MAX: usize = 64;
pub const IP_MAX: usize = 64;
pub const USER_AGENT_MAX: usize = 1024;
/// A string in the payload (a key or a value) holds no U+0000: the payload is also kept as
/// `jsonb`, which cannot hold it.
pub const PAYLOAD_TEXT_PATTERN: &str = "^[^\\u0000]*$";
/// How deep arrays and objects may nest inside a payload (the payload object itself is level 0).
/// A bound any audit record stays far within; it also lets the document state the payload
/// without a recursive schema, which code generators cannot all follow.
pub const PAYLOAD_MAX_DEPTH: usize = 5;
/// A W3C trace id.
pub const TRACE_ID_PATTERN: &str = "^[0-9a-f]{32}$";
/// Free text holds no control characters (`char::is_control`: U+0000–U+001F, U+007F–U+009F).
pub const TEXT_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

fn tenant_chars(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

fn action_chars(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._:-".contains(&b))
}

/// A tenant id as a read names it: what a write would accept, or the reason it never could.
pub fn check_tenant_id(s: &str) -> Result<(), String> {
    match s.chars().count() {
        0 => Err("must not be empty".into()),
        n if n > TENANT_ID_MAX => Err(format!("longer than {TENANT_ID_MAX} characters")),
        _ if !tenant_chars(s) => Err("allowed: letters, digits, . _ : -".into()),
        _ => Ok(()),
    }
}

/// An action as a read filter names it.
pub fn check_action(s: &str) -> Result<(), String> {
    match s.chars().count() {
        0 => Err("must not be empty".into()),
        n if n > ACTION_MAX => Err(format!("longer than {ACTION_MAX} characters")),
        _ if !action_chars(s) => Err("allowed: a-z, 0-9, . _ : -".into()),
        _ => Ok(()),
    }
}

/// A party id (actor or target) as a read filter names it.
pub fn check_party_id(s: &str) -> Result<(), String> {
    match s.chars().count() {
        0 => Err("must not be empty".into()),
        n if n > PARTY_ID_MAX => Err(format!("longer than {PARTY_ID_MAX} characters")),
        _ if s.chars().any(char::is_control) => Err("contains control characters".into()),
        _ => Ok(()),
    }
}

fn text(
    obj: &Map<String, Value>,
    prefix: &str,
    key: &str,
    max: usize,
    required: bool,
) -> Result<Option<String>, ApiError> {
    let field = format!("{prefix}{key}");
    match obj.get(key) {
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(ApiError::invalid(field, "required")),
        Some(Value::String(s)) if s.is_empty() && required => Err(ApiError::invalid(field, "must not be empty")),
        Some(Value::String(s)) if s.chars().count() > max => {
            Err(ApiError::invalid(field, format!("longer than {max} characters")))
        }
        Some(Value::String(s)) if s.chars().any(char::is_control) => {
            Err(ApiError::invalid(field, "contains control characters"))
        }
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(field, "must be a string")),
    }
}

fn required(obj: &Map<String, Value>, prefix: &str, key: &str, max: usize) -> Result<String, ApiError> {
    Ok(text(obj, prefix, key, max, true)?.unwrap_or_default())
}

fn party(obj: &Map<String, Value>, prefix: &str, key: &str) -> Result<(String, String), ApiError> {
    let p = format!("{prefix}{key}.");
    match obj.get(key) {
        Some(Value::Object(o)) => {
            if let Some(k) = o.keys().find(|k| !matches!(k.as_str(), "type" | "id")) {
                return Err(ApiError::invalid(format!("{p}{k}"), "unknown field"));
            }
            Ok((required(o, &p, "type", PARTY_TYPE_MAX)?, required(o, &p, "id", PARTY_ID_MAX)?))
        }
        None | Some(Value::Null) => Err(ApiError::invalid(format!("{prefix}{key}"), "required")),
        Some(_) => Err(ApiError::invalid(format!("{prefix}{key}"), "must be an object {type, id}")),
    }
}

/// Where in `v` a key or a string holds U+0000, as a path below `at`.
fn nul_in(v: &Value, at: &str) -> Option<String> {
    match v {
        Value::String(s) if s.contains('\0') => Some(at.to_string()),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| nul_in(item, &format!("{at}[{i}]"))),
        Value::Object(o) => {
            o.iter().find_map(
                |(k, item)| {
                    if k.contains('\0') { Some(at.to_string()) } else { nul_in(item, &format!("{at}.{k}")) }
                },
            )
        }
        _ => None,
    }
}

/// Where in `v` (at nesting `level`) an array or object sits deeper than [`PAYLOAD_MAX_DEPTH`].
fn too_deep(v: &Value, at: &str, level: usize) -> Option<String> {
    let children: Box<dyn Iterator<Item = (String, &Value)>> = match v {
        Value::Array(items) => Box::new(items.iter().enumerate().map(|(i, item)| (format!("{at}[{i}]"), item))),
        Value::Object(o) => Box::new(o.iter().map(|(k, item)| (format!("{at}.{k}"), item))),
        _ => return None,
    };
    if level > PAYLOAD_MAX_DEPTH {
        return Some(at.to_string());
    }
    children.into_iter().find_map(|(path, item)| too_deep(item, &path, level + 1))
}

const FIELDS: [&str; 10] =
    ["id", "tenant_id", "actor", "action", "target", "occurred_at", "ip", "user_agent", "trace_id", "payload"];

/// Parses one event object; `prefix` is how the field names are reported (`events[3].`).
pub fn parse_event(v: &Value, prefix: &str, max_payload: usize) -> Result<NewEvent, ApiError> {
    let obj = v.as_object().ok_or_else(|| ApiError::invalid(prefix.trim_end_matches('.'), "must be an object"))?;
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::invalid(format!("{prefix}{k}"), "unknown field"));
    }
    let id = required(obj, prefix, "id", EVENT_ID_LEN)?;
    // Hyphenated only (`format: uuid`); the uuid crate would also take the simple, braced and
    // URN forms.
    let event_id = uuid::Uuid::parse_str(&id)
        .ok()
        .filter(|_| id.len() == EVENT_ID_LEN)
        .ok_or_else(|| ApiError::invalid(format!("{prefix}id"), "must be a UUID (8-4-4-4-12 hex digits)"))?;
    let tenant_id = required(obj, prefix, "tenant_id", TENANT_ID_MAX)?;
    if !tenant_chars(&tenant_id) {
        return Err(ApiError::invalid(format!("{prefix}tenant_id"), "allowed: letters, digits, . _ : -"));
    }
    let (actor_type, actor_id) = party(obj, prefix, "actor")?;
    let (target_type, target_id) = party(obj, prefix, "target")?;
    let action = required(obj, prefix, "action", ACTION_MAX)?;
    if !action_chars(&action) {
        return Err(ApiError::invalid(format!("{prefix}action"), "allowed: a-z, 0-9, . _ : -"));
    }
    let occurred = required(obj, prefix, "occurred_at", OCCURRED_AT_MAX)?;
    let occurred_at = DateTime::parse_from_rfc3339(&occurred)
        .map_err(|_| ApiError::invalid(format!("{prefix}occurred_at"), "must be an RFC 3339 timestamp"))?
        .with_timezone(&Utc)
        .trunc_subsecs(6);
    let ip = text(obj, prefix, "ip", IP_MAX, false)?;
    if let Some(ip) = &ip {
        ip.parse::<std::net::IpAddr>()
            .map_err(|_| ApiError::invalid(format!("{prefix}ip"), "must be an IP address"))?;
    }
    let user_agent = text(obj, prefix, "user_agent", USER_AGENT_MAX, false)?;
    let trace_id = text(obj, prefix, "trace_id", 32, false)?;
    if let Some(t) = &trace_id
        && (t.len() != 32 || !t.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    {
        return Err(ApiError::invalid(format!("{prefix}trace_id"), "must be 32 lowercase hex digits (W3C trace id)"));
    }
    let payload = match obj.get("payload") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => return Err(ApiError::invalid(format!("{prefix}payload"), "must be an object")),
    };
    if let Some(at) = too_deep(&payload, "payload", 0) {
        return Err(ApiError::invalid(
            format!("{prefix}{at}"),
            format!("arrays and objects nest at most {PAYLOAD_MAX_DEPTH} levels deep in a payload"),
        ));
    }
    if let Some(at) = nul_in(&payload, "payload") {
        return Err(ApiError::invalid(format!("{prefix}{at}"), "must not hold U+0000 (in a key or a string)"));
    }
    let payload_canonical = canonical_json(&payload);
    if payload_canonical.len() > max_payload {
        return Err(ApiError::PayloadTooLarge(format!("{prefix}payload is larger than {max_payload} bytes")));
    }
    Ok(NewEvent {
        event_id,
        tenant_id,
        actor_type,
        actor_id,
        action,
        target_type,
        target_id,
        occurred_at,
        ip,
        user_agent,
        trace_id,
        payload_canonical,
    })
}

// ---- the schemas of the OpenAPI document, from the rules above ----

fn schema(value: Value) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    match serde_json::from_value(value) {
        Ok(schema) => schema,
        // The values below are fixed JSON Schema: only a typo here could fail, and a test
        // (`the_schemas_are_valid_schemas`) catches it.
        Err(e) => unreachable!("an invalid schema in wire.rs: {e}"),
    }
}

fn tenant_id_value() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": TENANT_ID_MAX, "pattern": TENANT_ID_PATTERN})
}

fn action_value() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": ACTION_MAX, "pattern": ACTION_PATTERN})
}

fn party_id_value() -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": PARTY_ID_MAX, "pattern": TEXT_PATTERN})
}

/// A tenant id (in the body and in the reads' `tenant_id` query parameter).
pub fn tenant_id_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    schema(tenant_id_value())
}

/// An action (in the body and the reads' `action` filter).
pub fn action_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    schema(action_value())
}

/// A party id (in the body and the reads' `actor_id` and `target_id` filters).
pub fn party_id_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    schema(party_id_value())
}

fn party_schema(description: &str) -> Value {
    json!({
        "type": "object", "description": description, "additionalProperties": false, "required": ["type", "id"],
        "properties": {
            "type": {"type": "string", "minLength": 1, "maxLength": PARTY_TYPE_MAX, "pattern": TEXT_PATTERN},
            "id": party_id_value()
        }
    })
}

fn event_example() -> Value {
    json!({
        "id": "0b7e6f3a-5d2c-4f1e-9a8b-3c4d5e6f7a8b", "tenant_id": "acme",
        "actor": {"type": "user", "id": "u_7Hq2"}, "action": "raptor.ticket.closed",
        "target": {"type": "ticket", "id": "T-1042"}, "occurred_at": "2026-12-07T14:03:22.481Z",
        "ip": "203.0.113.7", "user_agent": "raptor/4.2", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "payload": {"resolution": "fixed"}
    })
}

/// One event as `POST /api/v1/audit/events` takes it ([`parse_event`] checks the same rules
/// and names the field it refuses).
pub fn event_schema() -> Value {
    json!({
        "type": "object",
        "description": "One audit event. `id` is the idempotency key: the same id with the same content \
            returns the first result (201 again); with other content, 409.",
        "additionalProperties": false,
        "required": ["id", "tenant_id", "actor", "action", "target", "occurred_at"],
        "properties": {
            "id": {"type": "string", "format": "uuid", "minLength": EVENT_ID_LEN, "maxLength": EVENT_ID_LEN},
            "tenant_id": tenant_id_value(),
            "actor": party_schema("Who acted."),
            "action": action_value(),
            "target": party_schema("What was acted on."),
            "occurred_at": {"type": "string", "format": "date-time", "maxLength": OCCURRED_AT_MAX,
                "description": "RFC 3339; kept to the microsecond."},
            "ip": {"oneOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}, {"type": "null"}]},
            "user_agent": {"type": ["string", "null"], "maxLength": USER_AGENT_MAX, "pattern": TEXT_PATTERN},
            "trace_id": {"type": ["string", "null"], "pattern": TRACE_ID_PATTERN, "description": "W3C trace id."},
            "payload": {"type": ["object", "null"],
                "propertyNames": {"type": "string", "pattern": PAYLOAD_TEXT_PATTERN},
                "additionalProperties": {"$ref": format!("#/components/schemas/{}", payload_value_name(1))},
                "description": format!("Free-form; `{{}}` when absent; arrays and objects nest at most \
                    {PAYLOAD_MAX_DEPTH} levels deep. Larger than `chain.max_payload_bytes` of canonical JSON: 413.")}
        },
        "example": event_example()
    })
}

/// The name of the schema of a payload value at nesting `level` (1 to [`PAYLOAD_MAX_DEPTH`] + 1).
fn payload_value_name(level: usize) -> String {
    format!("PayloadValue{level}")
}

/// Any JSON value at nesting `level` whose keys and strings hold no U+0000; arrays and objects
/// only up to [`PAYLOAD_MAX_DEPTH`] (written out level by level, not recursively).
fn payload_value_schema(level: usize) -> Value {
    let mut any_of = vec![
        json!({"type": "null"}),
        json!({"type": "boolean"}),
        json!({"type": "number"}),
        json!({"type": "string", "pattern": PAYLOAD_TEXT_PATTERN}),
    ];
    if level <= PAYLOAD_MAX_DEPTH {
        let next = json!({"$ref": format!("#/components/schemas/{}", payload_value_name(level + 1))});
        any_of.push(json!({"type": "array", "items": next}));
        any_of.push(json!({"type": "object", "propertyNames": {"type": "string", "pattern": PAYLOAD_TEXT_PATTERN},
            "additionalProperties": next}));
    }
    json!({"anyOf": any_of})
}

/// The payload values' schemas, one per nesting level.
fn payload_value_schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
    for level in 1..=PAYLOAD_MAX_DEPTH + 1 {
        schemas.push((payload_value_name(level), schema(payload_value_schema(level))));
    }
}

/// `{"events": [...]}`: 1 to `max_batch` events.
pub fn batch_schema(max_batch: usize) -> Value {
    json!({
        "type": "object",
        "description": "Events (of one tenant or several), appended atomically: all or none.",
        "additionalProperties": false,
        "required": ["events"],
        "properties": {
            "events": {"type": "array", "minItems": 1, "maxItems": max_batch, "items": {"$ref": "#/components/schemas/Event"}}
        },
        "example": {"events": [event_example()]}
    })
}

/// The body of `POST /api/v1/audit/events` in the document (the handler reads a `Value` and
/// [`parse_event`] checks it, naming the refused field).
pub struct EventBody;

impl utoipa::PartialSchema for EventBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema(event_schema())
    }
}

impl utoipa::ToSchema for EventBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "Event".into()
    }

    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        payload_value_schemas(schemas);
    }
}

/// The body of `POST /api/v1/audit/events/batch` in the document, at the default
/// `chain.max_batch`; [`configured_batch`] states the configured one.
pub struct BatchBody;

impl utoipa::PartialSchema for BatchBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        schema(batch_schema(crate::config::ChainConfig::default().max_batch))
    }
}

impl utoipa::ToSchema for BatchBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "EventBatch".into()
    }

    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        schemas.push(("Event".into(), schema(event_schema())));
        payload_value_schemas(schemas);
    }
}

/// Puts the configured batch limit into the document's `EventBatch` (the handler refuses more
/// with 422).
pub fn configured_batch(doc: &mut utoipa::openapi::OpenApi, max_batch: usize) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.insert("EventBatch".into(), schema(batch_schema(max_batch)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok() -> Value {
        json!({"id": "6f1c2d7e-0000-4000-8000-000000000001", "tenant_id": "t1", "actor": {"type": "user", "id": "u1"},
               "action": "login.ok", "target": {"type": "session", "id": "s1"}, "occurred_at": "2026-11-22T20:51:37.1234567Z",
               "payload": {"b": 1, "a": [true]}})
    }

    #[test]
    fn a_payload_nests_at_most_max_depth_levels() {
        let nest =
            |n: usize| (0..n).fold(json!(1), |inner, i| if i % 2 == 0 { json!([inner]) } else { json!({"k": inner}) });
        let mut v = ok();
        v["payload"] = json!({"a": nest(PAYLOAD_MAX_DEPTH)});
        assert!(parse_event(&v, "", 1 << 16).is_ok(), "{PAYLOAD_MAX_DEPTH} levels are fine");
        v["payload"] = json!({"a": nest(PAYLOAD_MAX_DEPTH + 1)});
        let field = field_of(v);
        assert!(field.starts_with("payload.a") && field.len() > "payload.a".len(), "{field}");
        // The document states the same bound: a container at the last level is a scalar-only schema.
        let last = payload_value_schema(PAYLOAD_MAX_DEPTH + 1);
        assert_eq!(last["anyOf"].as_array().map(Vec::len), Some(4), "{last}");
        let deepest_container = payload_value_schema(PAYLOAD_MAX_DEPTH);
        assert_eq!(deepest_container["anyOf"].as_array().map(Vec::len), Some(6), "{deepest_container}");
    }

    fn field_of(v: Value) -> String {
        match parse_event(&v, "", 1024) {
            Err(ApiError::Unprocessable { field, .. }) => field,
            other => panic!("expected 422, got {other:?}"),
        }
    }

    #[test]
    fn the_schemas_are_valid_schemas() {
        for (name, value) in [
            ("event", event_schema()),
            ("batch", batch_schema(7)),
            ("payload", payload_value_schema(1)),
            ("deepest payload", payload_value_schema(PAYLOAD_MAX_DEPTH + 1)),
        ] {
            let back = serde_json::to_value(schema(value.clone())).expect("serialise");
            assert_eq!(back, value, "{name}: utoipa keeps every keyword");
        }
        for (name, s) in [("tenant", tenant_id_schema()), ("action", action_schema()), ("party", party_id_schema())] {
            assert!(serde_json::to_value(s).expect("serialise")["pattern"].is_string(), "{name}");
        }
    }

    #[test]
    fn the_example_is_a_good_event() {
        parse_event(&event_schema()["example"], "", 1024).expect("the documented example parses");
    }

    #[test]
    fn ids_are_hyphenated_uuids_and_lengths_count_characters() {
        let mut v = ok();
        v["id"] = json!("6f1c2d7e00004000800000000000000a");
        assert_eq!(field_of(v), "id");
        let mut v = ok();
        v["actor"]["id"] = json!("é".repeat(PARTY_ID_MAX));
        parse_event(&v, "", 1024).expect("256 characters of two bytes each");
        assert!(check_tenant_id("t,1").is_err() && check_tenant_id("").is_err() && check_tenant_id("t1").is_ok());
        assert!(check_action("Auth.x").is_err() && check_party_id("a\u{85}").is_err());
    }

    #[test]
    fn a_good_event_parses_canonically() {
        let e = parse_event(&ok(), "", 1024).expect("valid");
        assert_eq!(e.payload_canonical, r#"{"a":[true],"b":1}"#);
        assert_eq!(crate::domain::chain::timestamp(&e.occurred_at), "2026-11-22T20:51:37.123456Z");
    }

    #[test]
    fn each_bad_field_is_named() {
        let mut v = ok();
        v["id"] = json!("nope");
        assert_eq!(field_of(v), "id");
        let mut v = ok();
        v["actor"] = json!({"type": "user"});
        assert_eq!(field_of(v), "actor.id");
        let mut v = ok();
        v["occurred_at"] = json!("yesterday");
        assert_eq!(field_of(v), "occurred_at");
        let mut v = ok();
        v["ip"] = json!("999.1.1.1");
        assert_eq!(field_of(v), "ip");
        let mut v = ok();
        v["colour"] = json!("red");
        assert_eq!(field_of(v), "colour");
        let mut v = ok();
        v["action"] = json!(7);
        assert_eq!(field_of(v), "action");
        let mut v = ok();
        v["payload"] = json!({"a": [{"b": "x\u{0}"}]});
        assert_eq!(field_of(v), "payload.a[0].b");
        let mut v = ok();
        v["payload"] = json!({"big": "x".repeat(2000)});
        assert!(matches!(parse_event(&v, "", 1024), Err(ApiError::PayloadTooLarge(_))));
    }
}
