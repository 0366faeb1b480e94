//! queue-audit against a real PostgreSQL, through real sockets.

mod audit;
mod kms;
mod platform;
mod proofs;
mod replay;
mod shadow;
mod support;
mod writers;
