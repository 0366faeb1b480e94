//! A stand-in for Raptor, the legacy app, for tests and `make run`: it answers a few legacy
//! paths by echoing what it received (method, path, query, headers, body) as JSON, so a
//! cutover can be watched on one machine. `?delay_ms=N` delays the answer (at most 60 s), to
//! play a slow upstream. It is not Raptor: it keeps no state and checks nothing.

use actix_web::dev::Server;
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The legacy paths it answers (prefixes); anything else is a JSON 404.
pub const LEGACY_PREFIXES: [&str; 6] =
    ["/api/v1/auth/", "/api/v1/users", "/api/v1/tickets", "/api/v1/tenants", "/login", "/logout"];

struct Name {
    name: String,
    every_path: bool,
}

/// Binds `listen` and returns the bound address and the server (await or spawn it).
/// `every_path` echoes any path (tests use it to play a Queue service too).
pub fn serve(
    listen: SocketAddr,
    name: &str,
    workers: usize,
    every_path: bool,
) -> std::io::Result<(SocketAddr, Server)> {
    let name = web::Data::new(Name { name: name.to_string(), every_path });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(name.clone())
            .app_data(web::PayloadConfig::new(16 * 1024 * 1024))
            .route("/healthz", web::get().to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "ok"})) }))
            .default_service(web::to(echo))
    })
    .workers(workers)
    .disable_signals()
    .bind(listen)?;
    let addr = server.addrs().first().copied().unwrap_or(listen);
    Ok((addr, server.run()))
}

async fn echo(req: HttpRequest, body: Bytes, name: web::Data<Name>) -> HttpResponse {
    let path = req.uri().path();
    if !name.every_path && !LEGACY_PREFIXES.iter().any(|p| path.starts_with(p)) {
        return HttpResponse::NotFound()
            .json(serde_json::json!({"error": {"code": "not_found", "message": "the legacy stand-in does not serve this path"}}));
    }
    let query = req.uri().query().unwrap_or("");
    let delay = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("delay_ms="))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|ms| ms.min(60_000));
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).to_string();
        headers
            .entry(k.as_str().to_string())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    HttpResponse::Ok().json(serde_json::json!({
        "server": name.name,
        "method": req.method().as_str(),
        "path": path,
        "query": query,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "body_bytes": body.len(),
    }))
}
