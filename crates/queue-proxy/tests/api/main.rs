//! queue-proxy through real sockets: the proxy's real `start` with stand-ins for Raptor and the
//! Queue services, and the binary as a process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod canary;
mod carry;
mod forwarding;
mod phases;
mod process;
mod reload;
mod route_table;
mod security_admin;
mod security_edge;
mod shadow;
mod support;
mod tls_upstream;
