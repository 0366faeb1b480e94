pub mod chain;
pub mod events;
pub mod proofs;
