//! queue-audit against a real PostgreSQL, through real sockets.

mod platform;
