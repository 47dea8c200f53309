//! Black-box test support: start a real Hearth (in-process on port 0, or the built binary) on a
//! temporary data directory, and talk to it over HTTP only.

pub mod binary;
pub mod client;
pub mod fake_remote;
pub mod idp;
pub mod push_gateway;
pub mod redis;
pub mod server;
pub mod smtp_sink;

pub use client::Client;
pub use server::TestServer;

/// The shared secret test servers are configured with.
pub const SHARED_SECRET: &str = "conformance-shared-secret";

/// An HTTPS client for the test servers' federation listeners, whose certificates are
/// self-signed.
pub fn insecure_https() -> reqwest::Client {
    reqwest::Client::builder().danger_accept_invalid_certs(true).build().expect("an HTTPS client")
}
