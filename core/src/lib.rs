//! hearth-core: the homeserver's logic, independent of HTTP and of the storage engine.
//!
//! Entry point: [`Homeserver`], built once at start-up and passed to every handler.
//! Invariant: this crate never imports axum, rocksdb, redis or reqwest; it reaches storage only
//! through `hearth-storage`'s typed tables and the network only through traits the binary wires.

pub mod account_data;
pub mod admin;
pub mod appservice;
pub mod auth;
pub mod cache;
mod cluster;
pub mod config;
pub mod delayed;
pub mod directory_search;
pub mod ephemeral;
mod error;
pub mod events;
pub mod federation;
mod homeserver;
pub mod json;
pub mod keys;
pub mod media;
pub mod metrics;
pub mod presence;
pub mod push;
pub mod ratelimit;
pub mod rooms;
pub mod search;
pub mod server_name;
pub mod sync;
#[cfg(test)]
mod test_support;
pub mod tickets;
pub mod users;
pub mod util;

pub use error::{Error, ErrorCode, Result};
pub use homeserver::{Backends, Homeserver, Services, WeakHomeserver};
