//! Events as PDUs: building and signing them, checking them against the auth rules, resolving
//! state, and the format clients see. The only place that uses ruma's state-res and signing.

pub mod auth;
#[cfg(test)]
mod auth_tests;
pub mod client;
#[cfg(test)]
mod fuzz_tests;
pub mod pdu;
pub mod state_res;
#[cfg(test)]
pub(crate) mod test_graph;

pub use pdu::{NewEvent, Pdu};
