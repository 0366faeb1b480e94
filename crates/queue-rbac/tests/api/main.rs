//! queue-rbac against a real PostgreSQL and the real audit service, through real sockets.
#![allow(clippy::unwrap_used)]

mod client;
mod import;
mod import_status;
mod outbox;
mod platform;
mod rbac;
mod replay;
mod security;
mod support;
mod users;
mod writeback;
