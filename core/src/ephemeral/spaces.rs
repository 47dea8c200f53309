//! The catalog of the ephemeral store's key spaces, as `hearth_storage::schema` is the catalog of
//! tables: each space names its key prefix, what an entry holds and how long it lives. Every
//! read and write goes through [`EphemeralStore`]'s typed methods (`put_in`, `get_in`,
//! `take_in`, `delete_in`), so a key is never spelled twice and a value never decoded two ways.
//! An entry that cannot be decoded is logged and read as absent: the store is safe to lose.

use std::{fmt::Display, time::Duration};

use ruma::OwnedUserId;
use serde::{Serialize, de::DeserializeOwned};

use super::EphemeralStore;
use crate::{Error, Result};

/// What an entry of a space holds, as bytes.
pub trait EntryValue: Sized {
    fn encode(&self) -> Result<Vec<u8>>;
    fn decode(bytes: &[u8]) -> std::result::Result<Self, String>;
}

/// An entry whose presence is the whole point (single-use nonces and ticket IDs).
impl EntryValue for () {
    fn encode(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }
    fn decode(_bytes: &[u8]) -> std::result::Result<Self, String> {
        Ok(())
    }
}

impl EntryValue for OwnedUserId {
    fn encode(&self) -> Result<Vec<u8>> {
        Ok(self.as_bytes().to_vec())
    }
    fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        OwnedUserId::try_from(text).map_err(|e| e.to_string())
    }
}

/// A value kept as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Json<T>(pub T);

impl<T: Serialize + DeserializeOwned> EntryValue for Json<T> {
    fn encode(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(&self.0).map_err(Error::internal)
    }
    fn decode(bytes: &[u8]) -> std::result::Result<Self, String> {
        serde_json::from_slice(bytes).map(Json).map_err(|e| e.to_string())
    }
}

/// One key space: keys are `<PREFIX>:<id>`.
pub trait Space {
    const PREFIX: &'static str;
    /// How long an entry lives, unless the writer says (caches name their own).
    const TTL: Duration;
    type Value: EntryValue;

    fn key(id: impl Display) -> String {
        format!("{}:{id}", Self::PREFIX)
    }
}

macro_rules! spaces {
    ($($(#[$doc:meta])* $name:ident $prefix:literal for $ttl:expr => $value:ty;)*) => {
        $(
            $(#[$doc])*
            pub(crate) struct $name;
            impl Space for $name {
                const PREFIX: &'static str = $prefix;
                const TTL: Duration = $ttl;
                type Value = $value;
            }
        )*
        /// Every space's prefix (distinct: checked by a test).
        pub const ALL_PREFIXES: &[&str] = &[$($prefix),*];
    };
}

spaces! {
    /// A user-interactive auth session, by session ID.
    UiaSessions "uiaa" for crate::auth::uiaa::SESSION_TTL => Json<crate::auth::uiaa::SessionState>;
    /// A single sign-on attempt between redirect and callback, by its `state`.
    SsoAttempts "sso_state" for crate::auth::sso::ATTEMPT_TTL => Json<crate::auth::sso::Attempt>;
    /// A nonce of the shared-secret registration, single use.
    RegisterNonces "register_nonce" for crate::users::admin_register::NONCE_TTL => ();
    /// A login token (`m.login.token`) by the hex of its hash, for its user; single use.
    LoginTokens "login_token" for crate::users::login_tokens::LOGIN_TOKEN_TTL => OwnedUserId;
    /// An OpenID token by the hex of its hash, for its user, until it expires.
    OpenIdTokens "openid_token" for crate::users::openid::OPENID_TOKEN_TTL => OwnedUserId;
    /// A WebSocket ticket's ID, single use.
    WsTickets "ws_ticket" for crate::tickets::TICKET_TTL => ();
    /// A local user's presence, shared by the processes on one store.
    Presence "presence" for crate::presence::SHARED_TTL => Json<crate::presence::Shared>;
    /// What a sliding sync connection was sent, by `conn::shared_key`: only when processes
    /// share a store, so that a connection goes on through any of them.
    SlidingSnapshots "sliding" for crate::sync::sliding::conn::IDLE => Json<crate::sync::sliding::conn::SharedSnapshot>;
    /// A URL preview by the hex of the URL's hash.
    UrlPreviews "media_preview" for crate::media::PREVIEW_CACHE_TTL => Json<serde_json::Value>;
    /// A value of the cross-process cache (`cache::SharedCache`), by cache entry name; each
    /// cache writes with its own lifetime.
    SharedCacheEntries "cache" for Duration::from_secs(60) => Json<serde_json::Value>;
    /// A rate-limit bucket, by action and requester: only its key is used, by `take_token`,
    /// which keeps the bucket's one number and expiry itself.
    RateLimitBuckets "ratelimit" for Duration::ZERO => ();
}

impl dyn EphemeralStore {
    /// Writes an entry of space `S` for the space's lifetime.
    pub async fn put_in<S: Space>(&self, id: impl Display, value: &S::Value) -> Result<()> {
        self.put(S::key(id), value.encode()?, S::TTL).await
    }

    /// Writes an entry of space `S` for `ttl`.
    pub async fn put_in_for<S: Space>(
        &self,
        id: impl Display,
        value: &S::Value,
        ttl: Duration,
    ) -> Result<()> {
        self.put(S::key(id), value.encode()?, ttl).await
    }

    pub async fn get_in<S: Space>(&self, id: impl Display) -> Result<Option<S::Value>> {
        let bytes = self.get(&S::key(id)).await?;
        Ok(bytes.and_then(|b| decoded::<S>(&b)))
    }

    /// Reads and removes an entry in one step (see [`EphemeralStore::take`]).
    pub async fn take_in<S: Space>(&self, id: impl Display) -> Result<Option<S::Value>> {
        let bytes = self.take(&S::key(id)).await?;
        Ok(bytes.and_then(|b| decoded::<S>(&b)))
    }

    pub async fn delete_in<S: Space>(&self, id: impl Display) -> Result<()> {
        self.delete(&S::key(id)).await
    }
}

fn decoded<S: Space>(bytes: &[u8]) -> Option<S::Value> {
    match S::Value::decode(bytes) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(space = S::PREFIX, %error, "undecodable ephemeral entry read as absent");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_distinct() {
        let set: std::collections::HashSet<_> = ALL_PREFIXES.iter().collect();
        assert_eq!(set.len(), ALL_PREFIXES.len());
    }

    #[tokio::test]
    async fn typed_round_trip_and_undecodable_entries_read_as_absent() {
        let store: std::sync::Arc<dyn EphemeralStore> =
            std::sync::Arc::new(super::super::LocalEphemeral::new());
        let user = OwnedUserId::try_from("@a:x").unwrap();
        store.put_in::<LoginTokens>("abc", &user).await.unwrap();
        assert_eq!(store.get_in::<LoginTokens>("abc").await.unwrap(), Some(user.clone()));
        assert_eq!(store.take_in::<LoginTokens>("abc").await.unwrap(), Some(user));
        assert_eq!(store.take_in::<LoginTokens>("abc").await.unwrap(), None, "single use");
        store.put(LoginTokens::key("bad"), b"not a user id".to_vec(), LoginTokens::TTL).await.unwrap();
        assert_eq!(store.get_in::<LoginTokens>("bad").await.unwrap(), None);
        store.put_in::<WsTickets>("t", &()).await.unwrap();
        store.delete_in::<WsTickets>("t").await.unwrap();
        assert_eq!(store.get_in::<WsTickets>("t").await.unwrap(), None);
    }
}
