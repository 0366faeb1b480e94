//! queue-auth against a real PostgreSQL, through real sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod account_security;
mod audit_relay;
mod backup_codes;
mod client_ip;
mod email;
mod import;
mod import_passkeys;
mod import_status;
mod limits;
mod pages;
mod passkeys;
mod platform;
mod sessions;
mod support;
mod users;
mod validation;
mod writeback;
