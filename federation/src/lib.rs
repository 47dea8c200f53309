//! hearth-federation: the Matrix Server-Server API.
//!
//! - [`transport`]: how requests reach other servers (resolution, overrides, TLS, the guard
//!   against private addresses); implements `hearth_core::federation::Transport`.
//! - [`server`]: the endpoints other servers call, behind X-Matrix verification.
//! - `legacy`: `send_join` and `send_leave` v1, which ruma no longer defines.
//! - [`devices`]: other servers' questions about local users' devices and keys.
//! - [`sender`]: drains the durable outbox, one transaction in flight per destination.
//!
//! It depends on `hearth-core` only; core reaches the network solely through the transport
//! trait, and `hearth-client-api` never imports this crate.

pub mod config;
pub mod devices;
#[cfg(test)]
mod fuzz_tests;
pub mod history;
mod legacy;
pub mod media;
mod members;
pub mod notary;
pub mod query;
pub mod sender;
pub mod server;
pub mod transport;

pub use config::FederationConfig;
