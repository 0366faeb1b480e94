//! The route table of queue-rbac. The platform endpoints (/healthz, /readyz, /metrics,
//! /.well-known/jwks.json, /openapi.json, /internal/v1/caller) are added by queue-platform.

use actix_web::web;

pub fn configure(_cfg: &mut web::ServiceConfig) {}
