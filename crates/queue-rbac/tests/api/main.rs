//! queue-rbac against a real PostgreSQL, through real sockets.

mod platform;
