//! queue-auth against a real PostgreSQL, through real sockets.

mod platform;
