//! The OpenAPI contract, completed in one place and kept by the server (docs/api-contract.md).
//!
//! Handlers declare what is theirs: parameters, bodies, the statuses their domain answers. What
//! the platform itself answers on every service is declared here, once, from the same rules the
//! platform enforces: the security schemes; 400/413/422 from the body, query and path extractors;
//! 401/403 from service-token and session authentication; 503 with `Retry-After` when the
//! database or the replay set cannot serve. Every error status gets the error body's schema
//! (API.md: `{"error": {"code", "message", "field?"}}`), and 429/503 the `Retry-After` header.
//!
//! [`Contract`] is the document's paths and methods as a lookup, so a method the document does
//! not declare on a path it knows is answered 405 with `Allow` (as JSON), not 404.

use actix_web::http::Method;
use serde_json::{Map, Value, json};

/// The operation-level requirement handlers write for "a user session": expanded here into its
/// two carriers, the cookie and the bearer.
pub const SESSION: &str = "session";
pub const SERVICE_TOKEN: &str = "service_token";
pub const SESSION_COOKIE: &str = "session_cookie";
pub const SESSION_BEARER: &str = "session_bearer";

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
const ERROR_SCHEMA: &str = "#/components/schemas/ErrorBody";

/// Completes a service's document: security schemes, the statuses the platform answers, the
/// error body on every error status and `Retry-After` where a client should wait. `cookie` is
/// the session cookie's name (`sessions::COOKIE`).
pub fn complete(document: &mut Value, cookie: &str) {
    let schemes = json!({
        SERVICE_TOKEN: {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "A service token: an EdDSA JWT (`typ: queue-svc+jwt`) from a trusted issuer, for this \
                service's audience, carrying the scopes the operation lists; at most 5 minutes long. Tokens \
                sent to state-changing operations are one-use. See docs/service-tokens.md."
        },
        SESSION_COOKIE: {
            "type": "apiKey", "in": "cookie", "name": cookie,
            "description": "A user session from queue-auth, as the browser's cookie."
        },
        SESSION_BEARER: {
            "type": "http", "scheme": "bearer", "bearerFormat": "opaque session token",
            "description": "A user session from queue-auth, as `Authorization: Bearer <session token>`."
        }
    });
    let components = object(document, "components");
    object_in(components, "securitySchemes").extend(schemes.as_object().cloned().unwrap_or_default());
    object_in(object_in(components, "headers"), "Retry-After").extend(
        json!({
            "description": "Seconds to wait before trying again.",
            "schema": {"type": "integer", "minimum": 1}
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
    );

    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else { continue };
        let path_level: Vec<Value> = item.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
        for method in METHODS {
            if let Some(op) = item.get_mut(method).and_then(Value::as_object_mut) {
                complete_operation(path, method, op, &path_level);
            }
        }
    }
}

fn complete_operation(path: &str, method: &str, op: &mut Map<String, Value>, path_level: &[Value]) {
    expand_session(op);
    let parameters: Vec<&Value> =
        path_level.iter().chain(op.get("parameters").and_then(Value::as_array).into_iter().flatten()).collect();
    let located = |place: &str| parameters.iter().any(|p| p["in"] == place);
    let (query, in_path) = (located("query"), located("path"));
    let body = op.contains_key("requestBody");
    let secured = op
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|r| r.as_object().is_some_and(|o| !o.is_empty())));
    let changes = !matches!(method, "get" | "head" | "options");

    let mut bad_request = Vec::new();
    if body {
        bad_request.push("the body is not JSON, or not sent as `Content-Type: application/json`");
    }
    if query {
        bad_request.push("a query parameter is missing or malformed");
    }
    let responses = object_in(op, "responses");
    let mut add = |status: &str, description: String| {
        responses.entry(status.to_string()).or_insert_with(|| json!({ "description": description }));
    };
    if !bad_request.is_empty() {
        add("400", format!("Not a request this operation can read: {}.", bad_request.join("; ")));
    }
    if body {
        add("413", "The body is larger than the service accepts.".into());
        add("422", "Well-formed JSON that is not what the operation takes; `field` names the offending part.".into());
    }
    if in_path {
        add("404", "No such resource, or a path parameter that cannot name one.".into());
    }
    if secured {
        add(
            "401",
            "No credential, or one that does not verify (expired, wrong audience, unknown key, a spent \
             one-use token, an ended session)."
                .into(),
        );
        add("403", "The credential verifies but may not do this (issuer, scope, or permission).".into());
    }
    if !is_platform(path) {
        let what = if changes && secured {
            "A dependency (the database, or a peer such as audit) is unreachable, or the replay set of \
             one-use tokens is full; nothing changed."
        } else {
            "A dependency (the database, or a peer) is unreachable; nothing changed."
        };
        add("503", format!("{what} Try again after `Retry-After` seconds."));
    }
    for (status, response) in responses.iter_mut() {
        let Some(response) = response.as_object_mut() else { continue };
        if !(status.starts_with('4') || status.starts_with('5')) {
            continue;
        }
        if !response.contains_key("content") {
            response.insert("content".into(), json!({"application/json": {"schema": {"$ref": ERROR_SCHEMA}}}));
        }
        if status == "429" || status == "503" {
            object_in(response, "headers")
                .entry("Retry-After".to_string())
                .or_insert_with(|| json!({"$ref": "#/components/headers/Retry-After"}));
        }
    }
}

/// The platform's own endpoints (health, metrics, keys, this document): no database behind them.
fn is_platform(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json") || path.starts_with("/.well-known/")
}

/// `{"session": []}` → `{"session_cookie": []}, {"session_bearer": []}` (alternatives).
fn expand_session(op: &mut Map<String, Value>) {
    let Some(security) = op.get_mut("security").and_then(Value::as_array_mut) else { return };
    let mut expanded = Vec::with_capacity(security.len() + 1);
    for requirement in security.drain(..) {
        match requirement.as_object() {
            Some(r) if r.contains_key(SESSION) => {
                let scopes = r[SESSION].clone();
                expanded.push(json!({ SESSION_COOKIE: scopes.clone() }));
                expanded.push(json!({ SESSION_BEARER: scopes }));
            }
            _ => expanded.push(requirement),
        }
    }
    *security = expanded;
}

fn object<'a>(document: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    match document.as_object_mut() {
        Some(o) => object_in(o, key),
        None => unreachable!("an OpenAPI document is an object"),
    }
}

fn object_in<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = map.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().unwrap_or_else(|| unreachable!("set to an object above"))
}

/// The methods each of the document's paths declares, to answer 405 with `Allow`.
#[derive(Debug, Default, Clone)]
pub struct Contract {
    paths: Vec<(Vec<Segment>, Vec<Method>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Parameter,
}

impl Contract {
    pub fn from_document(document: &Value) -> Self {
        let mut paths = Vec::new();
        for (template, item) in document["paths"].as_object().into_iter().flatten() {
            let segments = template
                .split('/')
                .map(|s| {
                    if s.starts_with('{') && s.ends_with('}') {
                        Segment::Parameter
                    } else {
                        Segment::Literal(s.to_string())
                    }
                })
                .collect();
            let methods = METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
                .collect();
            paths.push((segments, methods));
        }
        Self { paths }
    }

    /// The methods the document declares on `path` (a request path), if it knows the path. A
    /// literal segment wins over a parameter (`/grants/batch` before `/grants/{id}`).
    pub fn allowed(&self, path: &str) -> Option<Vec<Method>> {
        let parts: Vec<&str> = path.split('/').collect();
        let mut found: Option<(usize, &Vec<Method>)> = None;
        for (segments, methods) in &self.paths {
            if segments.len() != parts.len() {
                continue;
            }
            let mut literals = 0;
            let matches = segments.iter().zip(&parts).all(|(s, p)| match s {
                Segment::Literal(l) => {
                    literals += 1;
                    l == p
                }
                Segment::Parameter => !p.is_empty(),
            });
            if matches && found.is_none_or(|(n, _)| literals > n) {
                found = Some((literals, methods));
            }
        }
        found.map(|(_, m)| m.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Value {
        json!({"paths": {
            "/api/v1/things/{id}": {"delete": {
                "parameters": [{"name": "id", "in": "path", "required": true}],
                "requestBody": {"content": {"application/json": {}}},
                "security": [{"service_token": ["things:write"]}, {"session": []}],
                "responses": {"200": {"description": "gone"}, "409": {"description": "in use"},
                              "429": {"description": "slow down"}}
            }},
            "/api/v1/things/batch": {"post": {"responses": {"201": {"description": "made"}}}},
            "/healthz": {"get": {"responses": {"200": {"description": "up"}}}}
        }})
    }

    #[test]
    fn the_platform_statuses_schemes_error_bodies_and_retry_after_are_declared() {
        let mut d = document();
        complete(&mut d, "queue_session");
        let op = &d["paths"]["/api/v1/things/{id}"]["delete"];
        for status in ["400", "401", "403", "404", "409", "413", "422", "429", "503"] {
            assert_eq!(
                op["responses"][status]["content"]["application/json"]["schema"]["$ref"], ERROR_SCHEMA,
                "{status}: {op}"
            );
        }
        assert_eq!(op["responses"]["200"].get("content"), None, "success bodies are the handler's");
        assert_eq!(op["responses"]["409"]["description"], "in use", "a handler's description stays");
        for status in ["429", "503"] {
            assert_eq!(op["responses"][status]["headers"]["Retry-After"]["$ref"], "#/components/headers/Retry-After");
        }
        assert_eq!(
            op["security"],
            json!([{"service_token": ["things:write"]}, {"session_cookie": []}, {"session_bearer": []}])
        );
        let schemes = &d["components"]["securitySchemes"];
        assert_eq!(schemes["service_token"]["bearerFormat"], "JWT");
        assert_eq!(schemes["session_cookie"]["name"], "queue_session");
        // No body, no query, no security: nothing of theirs; the platform's own: not even 503.
        let batch = &d["paths"]["/api/v1/things/batch"]["post"]["responses"];
        assert_eq!(
            batch.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["201".into(), "503".into()])
        );
        let health = &d["paths"]["/healthz"]["get"]["responses"];
        assert_eq!(health.as_object().map(Map::len), Some(1));
    }

    #[test]
    fn allowed_names_the_declared_methods_and_a_literal_segment_wins() {
        let mut d = document();
        d["paths"]["/api/v1/things/{id}"]["get"] = json!({"responses": {}});
        let c = Contract::from_document(&d);
        assert_eq!(c.allowed("/api/v1/things/42"), Some(vec![Method::GET, Method::DELETE]));
        assert_eq!(c.allowed("/api/v1/things/batch"), Some(vec![Method::POST]));
        assert_eq!(c.allowed("/api/v1/things/"), None, "an empty segment names nothing");
        assert_eq!(c.allowed("/api/v1/things/42/more"), None);
        assert_eq!(c.allowed("/nowhere"), None);
    }
}
