//! [`Homeserver`]: the handle every request and task gets. Services are built here, bottom-up,
//! in one place; nothing is global.

use std::{ops::Deref, sync::Arc};

use hearth_storage::Db;

use crate::{
    Result, account_data::AccountData, auth::uiaa::Uiaa, config::HomeserverConfig, ephemeral::EphemeralStore,
    keys::signing_key::SigningKey, sync::notifier::Notifier, users::Users,
};

#[derive(Clone)]
pub struct Homeserver {
    inner: Arc<Services>,
}

/// Every service, reachable from a [`Homeserver`] by field.
pub struct Services {
    pub config: HomeserverConfig,
    pub db: Db,
    pub ephemeral: Arc<dyn EphemeralStore>,
    pub notifier: Arc<Notifier>,
    pub signing_key: SigningKey,
    pub users: Users,
    pub uiaa: Uiaa,
    pub account_data: AccountData,
}

impl std::fmt::Debug for Homeserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Homeserver").field("server_name", &self.config.server_name).finish_non_exhaustive()
    }
}

impl Deref for Homeserver {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.inner
    }
}

impl Homeserver {
    pub fn new(config: HomeserverConfig, db: Db, ephemeral: Arc<dyn EphemeralStore>) -> Result<Self> {
        let signing_key = SigningKey::load_or_generate(&db)?;
        let notifier = Arc::new(Notifier::new(0));
        let users = Users::new(db.clone(), config.server_name.clone(), ephemeral.clone());
        let uiaa = Uiaa::new(ephemeral.clone(), users.clone(), config.registration.token.clone());
        let account_data = AccountData::new(db.clone(), notifier.clone());
        let services = Services { config, db, ephemeral, notifier, signing_key, users, uiaa, account_data };
        Ok(Self { inner: Arc::new(services) })
    }

    /// A homeserver on an in-memory database, for tests.
    pub fn for_tests(config: HomeserverConfig) -> Self {
        Self::new(config, Db::in_memory(), Arc::new(crate::ephemeral::LocalEphemeral::new()))
            .expect("an in-memory homeserver starts")
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.config.server_name
    }
}
