//! The shapes stored as table values. They are JSON, so a field added later with
//! `#[serde(default)]` reads old records without a migration.

use ruma::{OwnedDeviceId, OwnedUserId};
use serde::{Deserialize, Serialize};

use crate::json_value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Argon2 PHC string; `None` for accounts that cannot log in with a password (guests, SSO).
    pub password_hash: Option<String>,
    pub created_ts: u64,
    #[serde(default)]
    pub is_guest: bool,
    #[serde(default)]
    pub is_admin: bool,
    #[serde(default)]
    pub deactivated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub display_name: Option<String>,
    pub created_ts: u64,
    pub last_seen_ts: Option<u64>,
    pub last_seen_ip: Option<String>,
    /// Hash of the device's current access token, so that deleting the device revokes it.
    pub token_hash: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenRecord {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub created_ts: u64,
    #[serde(default)]
    pub is_guest: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountDataRecord {
    pub content: serde_json::Value,
    /// Stream position of the last change, for incremental sync.
    pub stream_pos: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerKeyRecord {
    /// PKCS#8 DER of the ed25519 key pair, base64 (standard, unpadded).
    pub pkcs8_b64: String,
    pub created_ts: u64,
    /// When set, the key is retired and published as an old verify key until then.
    #[serde(default)]
    pub expired_ts: Option<u64>,
}

json_value!(AccountRecord, DeviceRecord, AccessTokenRecord, AccountDataRecord, ServerKeyRecord);
