//! The rbac service's client, for the services (and tools) that ask it whether a principal
//! holds a permission: [`RbacClient::check`] for one question, [`RbacClient::check_batch`] for
//! many answered at one revision. Each call carries a service token minted for it (audience
//! `rbac`, scope `rbac:check`); the caller must be one of rbac's `callers.checkers`.
//!
//! The wire types ([`CheckRequest`], [`Resource`], [`CheckResponse`], …) are the JSON of
//! `POST /api/v1/rbac/check` and `/check/batch`, and know nothing of the server.
//!
//! [`rules`] holds the shape of ids and permission names (and the schemas stating it): the server
//! checks with it and its OpenAPI document is built from it, so the two cannot drift apart.

mod client;
pub mod rules;
mod wire;

pub use client::{RbacClient, RbacClientError};
pub use wire::{BatchCheckRequest, BatchCheckResponse, CheckRequest, CheckResponse, Decision, Resource};
