//! Sync: the notifier, the global stream, and `/sync` itself.

mod account_data;
pub mod compute;
pub mod notifier;
mod rooms;
mod sharing;
pub mod sliding;
pub mod stream;

pub use compute::SyncRequest;

#[cfg(test)]
mod tests;
