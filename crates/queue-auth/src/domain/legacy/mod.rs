//! Raptor's identity data brought into auth (issue 19, item 1): users, sessions and backup
//! codes, each by its Raptor row id (`legacy_id`), so that sending a record again finds it
//! (`unchanged`, or `updated` with what changed at Raptor). `batch` runs a batch in one
//! transaction, each record in a savepoint of its own; `werkzeug` verifies Raptor's backup-code
//! hashes, at redeem too. `status` counts what auth holds from Raptor.

pub mod backup_codes;
pub mod batch;
pub mod common;
pub mod sessions;
pub mod status;
pub mod users;
pub mod werkzeug;
