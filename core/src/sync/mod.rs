//! Sync: the notifier, the global stream, and `/sync` itself.

pub mod compute;
pub mod notifier;
pub mod sliding;
pub mod stream;

pub use compute::SyncRequest;

#[cfg(test)]
mod tests;
