//! The rules of the audit log, without HTTP.

pub mod append;
pub mod bundle;
pub mod chain;
pub mod checkpoint;
pub mod error;
pub mod keyring;
pub mod keys;
pub mod merkle;
pub mod note;
pub mod read;
pub mod verify;
pub mod writers;
