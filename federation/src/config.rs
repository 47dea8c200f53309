//! `[federation]`: how this server reaches others and whom it trusts.

use std::{collections::BTreeMap, path::PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationConfig {
    /// Check other servers' TLS certificates. Only tests and private setups turn this off.
    pub verify_tls: bool,
    /// Extra CA certificates (PEM) to trust, for private federations.
    pub ca_file: Option<PathBuf>,
    /// Certificate chain and key (PEM) of the federation listener; without them a self-signed
    /// pair is generated under the data directory on first start.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Allow connections to loopback and private addresses (tests, private networks). Off by
    /// default so that a server name cannot aim this server at its own network.
    pub allow_private_addresses: bool,
    /// Server name -> `host:port`, consulted before any discovery.
    pub resolve_overrides: BTreeMap<String, String>,
    /// Notaries asked for a server's keys when it cannot be reached itself; their answers must
    /// carry their signature by one of the keys given here.
    pub trusted_key_servers: Vec<hearth_core::config::TrustedKeyServer>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            verify_tls: true,
            ca_file: None,
            tls_cert: None,
            tls_key: None,
            allow_private_addresses: false,
            resolve_overrides: BTreeMap::new(),
            trusted_key_servers: Vec::new(),
        }
    }
}
