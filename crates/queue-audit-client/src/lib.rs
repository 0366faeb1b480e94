//! The audit service's client, shared by the services that write security events.
//!
//! * [`AuditClient::append`]: one event, synchronously (`{seq, mac}` back). The rbac service's
//!   pre-write audit calls this with a timeout.
//! * [`OutboxRelay`]: delivers the events a service wrote into its own outbox table (in the same
//!   transaction as the change it records) to the audit service, oldest first, with retries and
//!   backoff. The outbox id is the audit event id, so a retry after a lost response is recognised
//!   by the audit service and nothing is written twice. While the audit service is down the
//!   events wait in the outbox.
//!
//! The outbox table a relay reads must have the columns of [`OUTBOX_DDL`].

mod client;
mod relay;

pub use client::{Appended, AuditClient, AuditClientError, AuditEvent, Party};
pub use relay::{OUTBOX_DDL, OutboxRelay, RelaySettings};
