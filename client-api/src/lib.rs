//! hearth-client-api: the Matrix Client-Server API over axum.
//!
//! [`router`] builds the routes; every route comes from a ruma endpoint's metadata, and every
//! handler is named after its ruma endpoint module and lives in the file of its spec area.
//! Invariant: this crate talks to the homeserver only through `hearth_core::Homeserver` and never
//! imports `hearth-federation`.

mod account;
mod admin;
mod appservice;
mod backup;
mod config;
mod cors;
mod delayed;
mod device;
mod directory;
mod discovery;
mod extract;
mod filter;
#[cfg(test)]
mod fuzz_tests;
mod keys;
mod media;
mod membership;
mod message;
mod misc;
mod presence;
mod profile;
mod push;
mod receipt;
mod relations;
mod response;
mod room;
mod routes;
mod search;
mod session;
mod space;
mod sso;
mod state;
mod sync;
#[cfg(test)]
mod tests;
mod ws;

pub use cors::cors;
pub use extract::{ClientApiConfig, Ruma};
pub use response::ApiError;
pub use routes::router;
