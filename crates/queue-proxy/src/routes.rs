//! The route table of queue-proxy. The platform endpoints are added by queue-platform; the
//! forwarding routes come with the route table (see the proxy issue).

use actix_web::web;

pub fn configure(_cfg: &mut web::ServiceConfig) {}
