//! Black-box test support: start a real Hearth (in-process on port 0, or the built binary) on a
//! temporary data directory, and talk to it over HTTP only.

pub mod appservice;
pub mod backend;
pub mod binary;
pub mod checks;
pub mod client;
pub mod fake_remote;
pub mod idp;
pub mod nginx;
pub mod push_gateway;
pub mod redis;
pub mod server;
pub mod smtp_sink;
pub mod synapse;
pub mod ws;

pub use client::Client;
pub use server::TestServer;

/// The shared secret test servers are configured with.
pub const SHARED_SECRET: &str = "conformance-shared-secret";

/// A TLS server configuration with a fresh self-signed certificate for `name`, and that
/// certificate as PEM (for a client that must trust it).
pub fn self_signed_tls(name: &str) -> (std::sync::Arc<rustls::ServerConfig>, String) {
    let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).expect("a certificate");
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
        )
        .expect("the certificate");
    (std::sync::Arc::new(config), cert.cert.pem())
}

/// An HTTPS client for the test servers' federation listeners, whose certificates are
/// self-signed.
pub fn insecure_https() -> reqwest::Client {
    reqwest::Client::builder().danger_accept_invalid_certs(true).build().expect("an HTTPS client")
}
