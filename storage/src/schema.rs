//! The catalog: every table (column family) Hearth stores, with the types of its keys and values.
//! The engine opens exactly these; nothing else in the workspace names a column family.

use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId};

use crate::{
    codec::{KeyCodec, ValueCodec},
    records::{AccessTokenRecord, AccountDataRecord, AccountRecord, DeviceRecord, ServerKeyRecord},
};

/// A typed column family.
pub trait Table: 'static {
    const CF: &'static str;
    type Key: KeyCodec;
    type Value: ValueCodec;
}

macro_rules! tables {
    ($( $(#[$doc:meta])* $name:ident $cf:literal : $key:ty => $value:ty; )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $name;
            impl Table for $name {
                const CF: &'static str = $cf;
                type Key = $key;
                type Value = $value;
            }
        )*
        /// Every column family in the catalog, in declaration order.
        pub const ALL_TABLES: &[&str] = &[$($cf),*];
    };
}

tables! {
    /// Named scalars: the schema version, id counters.
    Meta "meta": String => u64;
    /// The server's own signing keys by key id (`ed25519:...`).
    ServerSigningKeys "server_signing_keys": String => ServerKeyRecord;
    /// Local accounts.
    Accounts "accounts": OwnedUserId => AccountRecord;
    /// Devices of local accounts.
    Devices "devices": (OwnedUserId, OwnedDeviceId) => DeviceRecord;
    /// Access tokens, keyed by the SHA-256 of the token: the token itself is never stored.
    AccessTokens "access_tokens": Vec<u8> => AccessTokenRecord;
    /// Profile fields (`displayname`, `avatar_url`, and extended fields) per user.
    ProfileFields "profile_fields": (OwnedUserId, String) => serde_json::Value;
    /// Global account data per user and event type.
    GlobalAccountData "global_account_data": (OwnedUserId, String) => AccountDataRecord;
    /// Per-room account data per user, room and event type.
    RoomAccountData "room_account_data": (OwnedUserId, OwnedRoomId, String) => AccountDataRecord;
    /// Sync filters per user and filter id.
    Filters "filters": (OwnedUserId, u64) => serde_json::Value;
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::ALL_TABLES;

    #[test]
    fn column_family_names_are_unique() {
        let set: HashSet<_> = ALL_TABLES.iter().collect();
        assert_eq!(set.len(), ALL_TABLES.len());
    }
}
