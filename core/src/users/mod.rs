//! Local accounts, their devices and access tokens, and their profiles.

mod accounts;
pub(crate) mod admin_register;
mod devices;
mod links;
pub(crate) mod login_tokens;
pub(crate) mod openid;
pub mod password;
mod profile;
mod tokens;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use hearth_storage::Db;
use ruma::{OwnedDeviceId, OwnedServerName, OwnedUserId};

pub use self::{
    accounts::{NewAccount, Registered},
    admin_register::SharedSecretRegistration,
    devices::{Device, NewSession},
    links::{SsoAccount, sanitize_localpart},
    login_tokens::LOGIN_TOKEN_TTL,
    openid::OPENID_TOKEN_TTL,
};
use crate::ephemeral::EphemeralStore;

/// Who made an authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user_id: OwnedUserId,
    /// Absent only for an application service acting without naming a device.
    pub device_id: Option<OwnedDeviceId>,
    pub is_guest: bool,
    /// The application service acting, when the token was its `as_token`.
    pub appservice: Option<String>,
}

impl Session {
    /// What transaction IDs are scoped to: the device, or for an application service acting
    /// without one, its user as a whole (an empty device ID no real device has).
    pub fn txn_device(&self) -> OwnedDeviceId {
        self.device_id.clone().unwrap_or_else(|| OwnedDeviceId::from(""))
    }

    /// The session's device, for requests that only make sense on one (key uploads, logout).
    pub fn device(&self) -> crate::Result<&ruma::DeviceId> {
        self.device_id.as_deref().ok_or_else(|| {
            crate::Error::bad_request("This request needs a device: name one with the device_id parameter")
        })
    }
}

#[derive(Clone)]
pub struct Users {
    db: Db,
    server_name: OwnedServerName,
    ephemeral: Arc<dyn EphemeralStore>,
    /// Serializes "is this user ID free? then create it", so two registrations of one name
    /// cannot both succeed.
    create_lock: Arc<Mutex<()>>,
    /// Serializes refreshes, so a refresh token is redeemed once.
    refresh_lock: Arc<Mutex<()>>,
    /// Lifetime of access tokens that come with a refresh token.
    refreshable_lifetime: Duration,
    /// Profiles, shared through Redis when it is configured.
    cache: crate::cache::SharedCache,
    /// Password hashing, a bounded number at a time.
    passwords: password::Passwords,
    /// Application services, whose exclusive user IDs no other way of making accounts
    /// (registration, single sign-on, JWT, shared secret) may take.
    appservices: Arc<crate::appservice::Appservices>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl Users {
    pub fn new(
        db: Db,
        server_name: OwnedServerName,
        ephemeral: Arc<dyn EphemeralStore>,
        refreshable_lifetime: Duration,
        passwords: password::Passwords,
        appservices: Arc<crate::appservice::Appservices>,
    ) -> Self {
        Self {
            appservices,
            db,
            server_name,
            cache: crate::cache::SharedCache::new(&ephemeral),
            ephemeral,
            create_lock: Arc::default(),
            refresh_lock: Arc::default(),
            refreshable_lifetime,
            passwords,
        }
    }

    pub fn server_name(&self) -> &OwnedServerName {
        &self.server_name
    }
}

/// Runs blocking storage work off the async worker threads. RocksDB groups concurrent synced
/// writes into one fsync, so letting many writers wait in parallel here is what keeps
/// throughput up with `sync_writes` on.
/// [`hearth_storage::Db::shared_lock`] from async code: on a shared store the wait happens on a
/// blocking thread; alone on its store, `None` at once.
pub(crate) async fn shared_lock(
    db: &hearth_storage::Db,
    kind: hearth_storage::engine::LockKind,
    key: String,
) -> crate::Result<Option<Box<dyn hearth_storage::engine::LockGuard>>> {
    if db.shared().is_none() {
        return Ok(None);
    }
    let db = db.clone();
    blocking(move || Ok(db.shared_lock(kind, &key)?)).await
}

pub(crate) async fn blocking<T, F>(f: F) -> crate::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> crate::Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(crate::Error::internal)?
}

#[cfg(test)]
pub(crate) fn test_users() -> Users {
    Users::new(
        Db::in_memory(),
        ruma::owned_server_name!("example.org"),
        Arc::new(crate::ephemeral::LocalEphemeral::new()),
        Duration::from_secs(300),
        password::Passwords::default(),
        Arc::default(),
    )
}
