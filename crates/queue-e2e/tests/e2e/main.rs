//! The whole system as processes: the service binaries on one PostgreSQL behind the proxy, with
//! the legacy echo stand-in or the real Raptor on the legacy side (support.rs says where the
//! binaries come from).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod browser;
mod contract;
mod cutover;
mod cutover_browser;
mod flood;
mod headless;
mod legacy_carry;
mod legacy_import;
mod legacy_writeback;
mod legacy_writeback_grants;
mod raptor;
mod raptor_queue;
mod replicas;
mod support;
mod tenant_claim;
mod traces;
mod verify_link;
