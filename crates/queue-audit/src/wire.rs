//! Wire types and their validation: input is parsed into domain types at the edge, and every
//! refusal names the field (422), or says the payload is too large (413).

use chrono::{DateTime, SubsecRound, Utc};
use queue_platform::ApiError;
use serde_json::{Map, Value};

use crate::domain::append::NewEvent;
use crate::domain::chain::canonical_json;

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
        Some(Value::String(s)) if s.len() > max => Err(ApiError::invalid(field, format!("longer than {max} bytes"))),
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
            Ok((required(o, &p, "type", 64)?, required(o, &p, "id", 256)?))
        }
        None | Some(Value::Null) => Err(ApiError::invalid(format!("{prefix}{key}"), "required")),
        Some(_) => Err(ApiError::invalid(format!("{prefix}{key}"), "must be an object {type, id}")),
    }
}

const FIELDS: [&str; 10] =
    ["id", "tenant_id", "actor", "action", "target", "occurred_at", "ip", "user_agent", "trace_id", "payload"];

/// Parses one event object; `prefix` is how the field names are reported (`events[3].`).
pub fn parse_event(v: &Value, prefix: &str, max_payload: usize) -> Result<NewEvent, ApiError> {
    let obj = v.as_object().ok_or_else(|| ApiError::invalid(prefix.trim_end_matches('.'), "must be an object"))?;
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::invalid(format!("{prefix}{k}"), "unknown field"));
    }
    let id = required(obj, prefix, "id", 64)?;
    let event_id =
        uuid::Uuid::parse_str(&id).map_err(|_| ApiError::invalid(format!("{prefix}id"), "must be a UUID"))?;
    let tenant_id = required(obj, prefix, "tenant_id", 128)?;
    if !tenant_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)) {
        return Err(ApiError::invalid(format!("{prefix}tenant_id"), "allowed: letters, digits, . _ : -"));
    }
    let (actor_type, actor_id) = party(obj, prefix, "actor")?;
    let (target_type, target_id) = party(obj, prefix, "target")?;
    let action = required(obj, prefix, "action", 128)?;
    if !action.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._:-".contains(&b)) {
        return Err(ApiError::invalid(format!("{prefix}action"), "allowed: a-z, 0-9, . _ : -"));
    }
    let occurred = required(obj, prefix, "occurred_at", 64)?;
    let occurred_at = DateTime::parse_from_rfc3339(&occurred)
        .map_err(|_| ApiError::invalid(format!("{prefix}occurred_at"), "must be an RFC 3339 timestamp"))?
        .with_timezone(&Utc)
        .trunc_subsecs(6);
    let ip = text(obj, prefix, "ip", 64, false)?;
    if let Some(ip) = &ip {
        ip.parse::<std::net::IpAddr>()
            .map_err(|_| ApiError::invalid(format!("{prefix}ip"), "must be an IP address"))?;
    }
    let user_agent = text(obj, prefix, "user_agent", 1024, false)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok() -> Value {
        json!({"id": "6f1c2d7e-0000-4000-8000-000000000001", "tenant_id": "t1", "actor": {"type": "user", "id": "u1"},
               "action": "login.ok", "target": {"type": "session", "id": "s1"}, "occurred_at": "2026-11-22T20:51:37.1234567Z",
               "payload": {"b": 1, "a": [true]}})
    }

    fn field_of(v: Value) -> String {
        match parse_event(&v, "", 1024) {
            Err(ApiError::Unprocessable { field, .. }) => field,
            other => panic!("expected 422, got {other:?}"),
        }
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
        v["payload"] = json!({"big": "x".repeat(2000)});
        assert!(matches!(parse_event(&v, "", 1024), Err(ApiError::PayloadTooLarge(_))));
    }
}
