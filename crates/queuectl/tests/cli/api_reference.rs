//! docs/api/<service>.md is rendered from the OpenAPI document the service serves at
//! `GET /openapi.json` (utoipa). Each service is started in this process with its real `run`
//! on port 0, its document fetched over a real socket and rendered to Markdown; the test fails
//! when a committed page differs. `QUEUE_UPDATE_API_DOCS=1` rewrites the pages instead.

use queue_platform::Signals;
use queue_testkit::TestApp;
use serde_json::{Map, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const UPDATE_VAR: &str = "QUEUE_UPDATE_API_DOCS";
const METHODS: [&str; 7] = ["get", "post", "put", "patch", "delete", "head", "options"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_reference_matches_the_served_openapi_documents() {
    let dir = tempfile::tempdir().expect("tmp");
    let documents = [
        ("auth", auth_document(dir.path()).await),
        ("rbac", rbac_document().await),
        ("audit", audit_document(dir.path()).await),
        ("proxy", proxy_document().await),
    ];
    let update = std::env::var(UPDATE_VAR).is_ok_and(|v| v == "1");
    let mut stale = Vec::new();
    for (service, document) in &documents {
        assert!(document["paths"].as_object().is_some_and(|p| !p.is_empty()), "{service}: no paths in {document}");
        let json = serde_json::to_string_pretty(document).expect("json") + "\n";
        for (file, text) in
            [(format!("{service}.md"), render(service, document)), (format!("{service}.openapi.json"), json)]
        {
            let path = docs_dir().join(&file);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            if committed == text {
                continue;
            }
            if update {
                std::fs::create_dir_all(docs_dir()).expect("mkdir docs/api");
                std::fs::write(&path, &text).expect("write the API reference");
            } else {
                stale.push(format!("docs/api/{file}"));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "API reference out of date: {} differs from what the service serves at GET /openapi.json. \
         Regenerate with `{UPDATE_VAR}=1 cargo test -p queuectl --test cli api_reference` and commit the result.",
        stale.join(", ")
    );
}

#[test]
fn rendering_names_method_parameters_body_and_responses() {
    let document = serde_json::json!({
        "info": {"title": "queue-x", "description": "X."},
        "paths": {"/api/v1/things/{id}": {"post": {
            "summary": "Makes a thing.",
            "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string", "format": "uuid"}}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewThing"}}}},
            "responses": {"201": {"description": "Made", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
                          "409": {"description": "Exists"}},
            "security": [{"service_token": []}]
        }}},
        "components": {"schemas": {"Thing": {"type": "object", "required": ["id"], "additionalProperties": false,
            "example": {"id": "6f1c2d7e-0000-4000-8000-000000000001"},
            "properties": {"id": {"type": "string", "format": "uuid"}, "note": {"type": ["string", "null"], "maxLength": 200}}}}}
    });
    let page = render("x", &document);
    for expected in [
        "## `POST /api/v1/things/{id}`",
        "Makes a thing.",
        "| `id` | path | yes | string (uuid) | — |",
        "Request body (`application/json`, required): [`NewThing`](#newthing)",
        "| 201 | Made | [`Thing`](#thing) |",
        "| 409 | Exists | — |",
        "Authentication: `service_token`",
        "| `note` | string \\| null | no | at most 200 chars |",
        "Unknown fields are refused.",
        "\"id\": \"6f1c2d7e-0000-4000-8000-000000000001\"",
    ] {
        assert!(page.contains(expected), "missing {expected:?} in\n{page}");
    }
}

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/api")
}

async fn fetch(app: &TestApp) -> Value {
    let (status, document) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200, "{}: {document}", app.identity);
    document
}

async fn auth_document(dir: &Path) -> Value {
    let pepper = dir.join("pepper.key");
    queue_auth::config::write_pepper(&pepper, true).expect("pepper");
    let mail = dir.join("mail");
    let app = TestApp::spawn("auth", queue_auth::MIGRATIONS, move |base| {
        let mut config = queue_auth::config::AuthConfig::new(base, pepper);
        config.mailer.dev_dir = mail;
        queue_auth::run(config, Signals::Ignore)
    })
    .await;
    let document = fetch(&app).await;
    app.stop().await;
    document
}

async fn rbac_document() -> Value {
    let app = TestApp::spawn("rbac", queue_rbac::MIGRATIONS, |c| {
        let audit = url::Url::parse("http://127.0.0.1:9/").expect("url");
        queue_rbac::run(queue_rbac::RbacConfig::new(c, audit), Signals::Ignore)
    })
    .await;
    let document = fetch(&app).await;
    app.stop().await;
    document
}

async fn audit_document(dir: &Path) -> Value {
    let keys = queue_audit::config::KeysConfig::local_in(dir, true).expect("audit keys").0;
    let app = TestApp::spawn("audit", queue_audit::MIGRATIONS, move |c| {
        queue_audit::run(queue_audit::AuditConfig::new(c, keys), Signals::Ignore)
    })
    .await;
    let document = fetch(&app).await;
    app.stop().await;
    document
}

async fn proxy_document() -> Value {
    let keys = queue_testkit::TestKeys::new();
    // The proxy's document is served on its admin listener only, to an operator's token.
    let token = keys.token("operator", "proxy", &["proxy:admin"]);
    crate::with_proxy_admin(&keys, async |addr| {
        let response = reqwest::Client::new()
            .get(format!("http://{addr}/openapi.json"))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        response.json().await.expect("json")
    })
    .await
}

// ---- rendering ----

fn render(service: &str, document: &Value) -> String {
    let mut out = String::new();
    let title = document["info"]["title"].as_str().unwrap_or(service);
    let _ = writeln!(out, "# {title} API reference\n");
    let _ = writeln!(
        out,
        "<!-- Generated from GET /openapi.json by crates/queuectl/tests/cli/api_reference.rs; do not edit by hand.\n     \
         Regenerate: {UPDATE_VAR}=1 cargo test -p queuectl --test cli api_reference -->\n"
    );
    if let Some(d) = document["info"]["description"].as_str() {
        let _ = writeln!(out, "{}\n", d.trim());
    }
    let _ = writeln!(
        out,
        "Errors use the body `{{\"error\":{{\"code\",\"message\"}}}}` ([error-policy.md](../error-policy.md)). \
         `Authentication: service_token` means a service JWT from an issuer and with a scope the route \
         accepts ([service-tokens.md](../service-tokens.md)).\n"
    );
    let empty = Map::new();
    let paths = document["paths"].as_object().unwrap_or(&empty);
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                operations.push((path.as_str(), method, op));
            }
        }
    }
    out.push_str("## Endpoints\n\n| method | path | summary |\n|---|---|---|\n");
    for (path, method, op) in &operations {
        let _ = writeln!(out, "| {} | `{path}` | {} |", method.to_uppercase(), cell(&summary(op)));
    }
    out.push('\n');
    for (path, method, op) in &operations {
        render_operation(&mut out, path, method, op);
    }
    let schemas = document["components"]["schemas"].as_object().unwrap_or(&empty);
    if !schemas.is_empty() {
        out.push_str("## Schemas\n\n");
        for (name, schema) in schemas {
            render_schema(&mut out, name, schema);
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

fn summary(op: &Value) -> String {
    op["summary"].as_str().or_else(|| op["description"].as_str()).unwrap_or("").to_string()
}

fn render_operation(out: &mut String, path: &str, method: &str, op: &Value) {
    let _ = writeln!(out, "## `{} {path}`\n", method.to_uppercase());
    if let Some(s) = op["summary"].as_str() {
        let _ = writeln!(out, "{}\n", s.trim());
    }
    if let Some(d) = op["description"].as_str().filter(|d| Some(*d) != op["summary"].as_str() && !d.trim().is_empty()) {
        let _ = writeln!(out, "{}\n", d.trim());
    }
    if let Some(tags) = op["tags"].as_array().filter(|t| !t.is_empty()) {
        let tags: Vec<&str> = tags.iter().filter_map(Value::as_str).collect();
        let _ = writeln!(out, "Tags: {}\n", tags.join(", "));
    }
    if let Some(security) = op["security"].as_array().filter(|s| !s.is_empty()) {
        let schemes: Vec<String> = security
            .iter()
            .filter_map(Value::as_object)
            .map(|o| if o.is_empty() { "none".to_string() } else { o.keys().map(|k| format!("`{k}`")).collect() })
            .collect();
        let _ = writeln!(out, "Authentication: {}\n", schemes.join(" or "));
    }
    if let Some(params) = op["parameters"].as_array().filter(|p| !p.is_empty()) {
        out.push_str("| parameter | in | required | type | rules | description |\n|---|---|---|---|---|---|\n");
        for p in params {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} |",
                p["name"].as_str().unwrap_or("?"),
                p["in"].as_str().unwrap_or("?"),
                if p["required"].as_bool() == Some(true) { "yes" } else { "no" },
                cell(&type_of(&p["schema"])),
                cell(&rules(&p["schema"])),
                cell(p["description"].as_str().or(p["schema"]["description"].as_str()).unwrap_or(""))
            );
        }
        out.push('\n');
    }
    if let Some(body) = op.get("requestBody") {
        for (content_type, media) in body["content"].as_object().into_iter().flatten() {
            let required = if body["required"].as_bool() == Some(true) { ", required" } else { "" };
            let _ = writeln!(out, "Request body (`{content_type}`{required}): {}\n", type_of(&media["schema"]));
        }
    }
    if let Some(responses) = op["responses"].as_object().filter(|r| !r.is_empty()) {
        out.push_str("| status | description | body |\n|---|---|---|\n");
        for (status, response) in responses {
            let bodies: Vec<String> = response["content"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(ct, media)| match media.get("schema") {
                    Some(s) if ct == "application/json" => type_of(s),
                    Some(s) => format!("{} (`{ct}`)", type_of(s)),
                    None => format!("`{ct}`"),
                })
                .collect();
            let description = response["description"].as_str().unwrap_or("");
            let body = if bodies.is_empty() { "—".to_string() } else { bodies.join(", ") };
            let _ = writeln!(out, "| {status} | {} | {} |", cell(description), cell(&body));
        }
        out.push('\n');
    }
}

fn render_schema(out: &mut String, name: &str, schema: &Value) {
    let _ = writeln!(out, "### `{name}`\n");
    if let Some(d) = schema["description"].as_str() {
        let _ = writeln!(out, "{}\n", d.trim());
    }
    if schema["additionalProperties"] == Value::Bool(false) {
        out.push_str("Unknown fields are refused.\n\n");
    }
    match schema["properties"].as_object() {
        Some(_) => render_schema_fields(out, schema),
        None => {
            let _ = writeln!(out, "Type: {}\n", type_of(schema));
            // Inline parts of a composition (e.g. a flattened struct plus its own fields, or the
            // variants of a tagged enum).
            for combinator in ["allOf", "oneOf", "anyOf"] {
                for part in schema[combinator].as_array().into_iter().flatten().filter(|p| p["properties"].is_object())
                {
                    if let Some(title) = part["title"].as_str() {
                        let _ = writeln!(out, "`{title}`:\n");
                    }
                    render_schema_fields(out, part);
                }
            }
            render_example(out, schema);
        }
    }
}

fn render_schema_fields(out: &mut String, schema: &Value) {
    let required: Vec<&str> = schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    out.push_str("| field | type | required | rules | description |\n|---|---|---|---|---|\n");
    for (field, s) in schema["properties"].as_object().into_iter().flatten() {
        let _ = writeln!(
            out,
            "| `{field}` | {} | {} | {} | {} |",
            cell(&type_of(s)),
            if required.contains(&field.as_str()) { "yes" } else { "no" },
            cell(&rules(s)),
            cell(s["description"].as_str().unwrap_or(""))
        );
    }
    out.push('\n');
    render_example(out, schema);
}

/// A schema's example as a JSON block: what a request or answer looks like.
fn render_example(out: &mut String, schema: &Value) {
    let example = schema.get("example").or_else(|| schema["examples"].as_array().and_then(|e| e.first()));
    if let Some(example) = example {
        let pretty = serde_json::to_string_pretty(example).unwrap_or_default();
        let _ = writeln!(out, "Example:\n\n```json\n{pretty}\n```\n");
    }
}

/// The constraints a schema states, in a few words (`—` when none).
fn rules(schema: &Value) -> String {
    let mut parts = Vec::new();
    let range = |min: &str, max: &str, unit: &str| match (schema[min].as_u64(), schema[max].as_u64()) {
        (Some(a), Some(b)) if a == b => Some(format!("exactly {a} {unit}")),
        (Some(a), Some(b)) => Some(format!("{a}–{b} {unit}")),
        (Some(a), None) => Some(format!("at least {a} {unit}")),
        (None, Some(b)) => Some(format!("at most {b} {unit}")),
        (None, None) => None,
    };
    parts.extend(range("minLength", "maxLength", "chars"));
    parts.extend(range("minItems", "maxItems", "items"));
    match (schema["minimum"].as_i64(), schema["maximum"].as_i64()) {
        (Some(a), Some(b)) => parts.push(format!("{a} to {b}")),
        (Some(a), None) => parts.push(format!("≥ {a}")),
        (None, Some(b)) => parts.push(format!("≤ {b}")),
        (None, None) => {}
    }
    if let Some(p) = schema["pattern"].as_str() {
        parts.push(format!("pattern `{p}`"));
    }
    if let Some(d) = schema.get("default") {
        parts.push(format!("default `{d}`"));
    }
    if parts.is_empty() { "—".to_string() } else { parts.join("; ") }
}

/// A schema in a few words: a linked name for a reference, else its type.
fn type_of(schema: &Value) -> String {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("[`{name}`](#{})", name.to_ascii_lowercase());
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        if let Some(parts) = schema[combinator].as_array() {
            let sep = if combinator == "allOf" { " & " } else { " | " };
            return parts.iter().map(type_of).collect::<Vec<_>>().join(sep);
        }
    }
    if let Some(values) = schema["enum"].as_array() {
        return values.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(" | ");
    }
    let types: Vec<String> = match &schema["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    };
    if types.is_empty() {
        return if schema.as_object().is_some_and(|o| o.is_empty()) { "any".to_string() } else { "object".to_string() };
    }
    types
        .iter()
        .map(|t| match t.as_str() {
            "array" => format!("{}[]", type_of(&schema["items"])),
            "object" if schema["additionalProperties"].is_object() => {
                format!("map of {}", type_of(&schema["additionalProperties"]))
            }
            other => match schema["format"].as_str() {
                Some(f) if other != "null" => format!("{other} ({f})"),
                _ => other.to_string(),
            },
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Text safe inside a table cell: one line, pipes escaped.
fn cell(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|")
}
