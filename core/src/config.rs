//! The parts of the configuration the homeserver logic reads. `src/config.rs` in the binary
//! composes them with the sections other crates own.

use serde::{Deserialize, Serialize};

/// `[registration]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Whether anyone may register through `POST /register`.
    pub enabled: bool,
    /// When set, registration needs this token (the `m.login.registration_token` stage).
    pub token: Option<String>,
    pub allow_guests: bool,
    /// When set, `/_synapse/admin/v1/register` creates users (admins too) with an HMAC of it.
    pub shared_secret: Option<String>,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        // Open by default because the default listener is loopback only; the binary warns when
        // open registration meets a public listener.
        Self { enabled: true, token: None, allow_guests: false, shared_secret: None }
    }
}

/// `[rooms]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    /// Room version of new rooms when the client does not ask for one.
    pub default_version: ruma::RoomVersionId,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self { default_version: ruma::RoomVersionId::V12 }
    }
}

/// `[voip]`: TURN servers handed to clients for calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoipConfig {
    /// `turn:` / `turns:` URIs; empty means no TURN server is offered.
    pub turn_uris: Vec<String>,
    /// Shared secret of the TURN server's REST API (coturn's `static-auth-secret`).
    pub turn_shared_secret: Option<String>,
    /// Fixed credentials, used when there is no shared secret.
    pub turn_username: Option<String>,
    pub turn_password: Option<String>,
    /// How long generated credentials stay valid, in seconds.
    pub turn_user_lifetime_secs: u64,
}

impl Default for VoipConfig {
    fn default() -> Self {
        Self {
            turn_uris: Vec::new(),
            turn_shared_secret: None,
            turn_username: None,
            turn_password: None,
            turn_user_lifetime_secs: 86_400,
        }
    }
}

/// `[presence]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    pub enabled: bool,
    /// Seconds without activity after which an online user shows as unavailable.
    pub idle_timeout_secs: u64,
    /// Seconds after a user's last sync or connection ends before they show as offline.
    pub offline_grace_secs: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { enabled: true, idle_timeout_secs: 300, offline_grace_secs: 30 }
    }
}

/// What [`crate::Homeserver`] needs to start.
#[derive(Debug, Clone)]
pub struct HomeserverConfig {
    pub server_name: ruma::OwnedServerName,
    /// The URL clients reach the client API at, with a trailing slash.
    pub public_baseurl: String,
    pub registration: RegistrationConfig,
    pub rooms: RoomsConfig,
    pub voip: VoipConfig,
    pub presence: PresenceConfig,
}

impl HomeserverConfig {
    pub fn for_tests() -> Self {
        Self {
            server_name: ruma::owned_server_name!("localhost"),
            public_baseurl: "http://localhost:8008/".to_owned(),
            registration: RegistrationConfig::default(),
            rooms: RoomsConfig::default(),
            voip: VoipConfig::default(),
            presence: PresenceConfig::default(),
        }
    }
}
