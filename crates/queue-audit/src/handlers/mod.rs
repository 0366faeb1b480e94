pub mod chain;
pub mod events;
