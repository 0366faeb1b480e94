//! queue-audit against a real PostgreSQL, through real sockets.

mod audit;
mod platform;
mod support;
