//! [`Homeserver`]: the handle every request and task gets. Services are built here, bottom-up,
//! in one place; nothing is global.

use std::{
    ops::{Bound, Deref},
    sync::{Arc, Weak},
};

use hearth_storage::{Db, Direction, schema::StreamLog};

use crate::{
    Error, Result,
    account_data::AccountData,
    auth::{http::HttpClient, jwt::JwtLogin, sso::Sso, uiaa::Uiaa},
    config::HomeserverConfig,
    ephemeral::EphemeralStore,
    keys::signing_key::SigningKey,
    media::{Media, MediaBackends},
    rooms::Rooms,
    sync::notifier::Notifier,
    sync::stream::Streams,
    users::Users,
};

/// The plug-ins through which the homeserver reaches other machines, and its on-disk parts
/// besides the database. The binary supplies real ones; the defaults reach nothing (no
/// federation, remote media not found, no previews, no identity providers) and keep the search
/// index in memory.
pub struct Backends {
    pub media: MediaBackends,
    /// `None`: federation is off.
    pub federation: Option<Arc<dyn crate::federation::Transport>>,
    /// Outbound HTTP for identity providers and push gateways.
    pub http: Arc<dyn HttpClient>,
    /// `None`: notification e-mails are off.
    pub mailer: Option<Arc<dyn crate::push::mail::Mailer>>,
    /// The search index; `None`: one in memory, refilled from the database at each start.
    pub search: Option<Arc<hearth_storage::search::SearchIndex>>,
    /// On a store several processes share: how this one tells the others about its writes.
    /// `None`: the others learn of them only by asking the store, about once a second.
    pub stream_bus: Option<Arc<dyn crate::sync::stream::StreamBus>>,
}

impl Default for Backends {
    fn default() -> Self {
        Self {
            media: MediaBackends::default(),
            federation: None,
            http: crate::auth::http::no_http(),
            mailer: None,
            search: None,
            stream_bus: None,
        }
    }
}

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
    pub signing_key: Arc<SigningKey>,
    pub streams: Arc<Streams>,
    pub users: Users,
    pub rooms: Rooms,
    pub uiaa: Uiaa,
    pub sso: Sso,
    /// `None` when JWT login is off.
    pub jwt: Option<JwtLogin>,
    pub account_data: AccountData,
    /// Woken when a pusher may have work: a new pusher, a restart of delivery.
    pub(crate) pusher_wake: Arc<tokio::sync::Notify>,
    pub(crate) claim_lock: crate::keys::e2ee::ClaimLock,
    pub(crate) presence_store: crate::presence::PresenceStore,
    pub(crate) ticket_keys: crate::tickets::TicketKeys,
    pub federation: Arc<crate::federation::Federation>,
    pub media: Media,
    /// Outbound HTTP (identity providers, push gateways, SMS gateways).
    pub http: Arc<dyn HttpClient>,
    pub(crate) mailer: Option<Arc<dyn crate::push::mail::Mailer>>,
    pub search: crate::search::Search,
    pub(crate) delayed: crate::delayed::Delayed,
    pub appservices: Arc<crate::appservice::Appservices>,
    pub rate_limits: crate::ratelimit::RateLimits,
    pub activity: crate::metrics::Activity,
    pub registration_tokens: crate::auth::registration_tokens::RegistrationTokens,
    /// What each sliding sync connection was sent.
    pub(crate) sliding: crate::sync::sliding::conn::Connections,
}

/// A handle that does not keep the homeserver alive: for plug-ins the homeserver holds that
/// need to call back into it (a strong handle there would be a cycle, and storage would never
/// close).
#[derive(Clone, Default)]
pub struct WeakHomeserver(Weak<Services>);

impl WeakHomeserver {
    /// The homeserver, while it is running.
    pub fn upgrade(&self) -> Option<Homeserver> {
        self.0.upgrade().map(|inner| Homeserver { inner })
    }
}

impl std::fmt::Debug for WeakHomeserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeakHomeserver").finish_non_exhaustive()
    }
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
    /// Wakes the delivery queues to look for work, which another process sharing the store
    /// may have queued; `outbox` also reads which federation destinations have any.
    pub async fn poke_queues(&self, outbox: bool) {
        self.pusher_wake.notify_one();
        self.delayed.wake.notify_one();
        if outbox && self.federation.enabled() {
            let hs = self.clone();
            match crate::users::blocking(move || hs.outbox_destinations()).await {
                Ok(queued) => self.federation.poke(queued.iter().map(AsRef::as_ref)),
                Err(error) => tracing::warn!(%error, "cannot read the federation outbox"),
            }
        }
    }

    /// A homeserver without network plug-ins (no federation, no outbound HTTP).
    pub fn new(config: HomeserverConfig, db: Db, ephemeral: Arc<dyn EphemeralStore>) -> Result<Self> {
        Self::with_backends(config, db, ephemeral, Backends::default())
    }

    /// A homeserver that reaches the outside world through `backends`.
    pub fn with_backends(
        config: HomeserverConfig,
        db: Db,
        ephemeral: Arc<dyn EphemeralStore>,
        backends: Backends,
    ) -> Result<Self> {
        let http = backends.http;
        let federation = Arc::new(crate::federation::Federation::new(backends.federation, &db)?);
        let signing_key = Arc::new(SigningKey::load_or_generate(&db)?);
        let ticket_keys = crate::tickets::TicketKeys::new(&signing_key);
        // The stream resumes after the last position that reached storage.
        let last = db
            .range::<StreamLog>(Bound::Unbounded, Bound::Unbounded, Direction::Backward)?
            .next()
            .transpose()?
            .map_or(0, |(pos, _)| pos);
        let (notifier, streams) = if let Some(store) = db.shared() {
            // Readers start at the watermark: below `last`, another process may still write.
            let published = store.watermark()?.unwrap_or(last);
            let notifier = Arc::new(Notifier::new(published));
            let bus = backends.stream_bus.clone();
            (notifier.clone(), Streams::shared(db.clone(), last, published, notifier, bus))
        } else {
            let notifier = Arc::new(Notifier::new(last));
            (notifier.clone(), Streams::new(last, notifier))
        };
        let appservices =
            crate::appservice::registration::load(&config.appservice.registration_files, &config.server_name)
                .map_err(|e| Error::internal(format!("invalid configuration: {e}")))?;
        let appservices = Arc::new(crate::appservice::Appservices::new(appservices));
        let users = Users::new(
            db.clone(),
            config.server_name.clone(),
            ephemeral.clone(),
            std::time::Duration::from_secs(config.session.refreshable_access_token_lifetime_secs),
            crate::users::password::Passwords::new(&config.passwords)?,
            appservices.clone(),
        );
        let rate_limits = crate::ratelimit::RateLimits::new(
            config.rate_limits.clone(),
            ephemeral.clone(),
            db.clone(),
            appservices.clone(),
        )
        .map_err(|e| Error::internal(format!("invalid configuration: {e}")))?;
        let registration_tokens = crate::auth::registration_tokens::RegistrationTokens::new(db.clone());
        let uiaa = Uiaa::new(
            ephemeral.clone(),
            users.clone(),
            config.registration.token.clone(),
            registration_tokens.clone(),
        );
        let sso = Sso::new(
            &config.sso,
            config.public_baseurl.clone(),
            http.clone(),
            ephemeral.clone(),
            users.clone(),
            uiaa.clone(),
        )
        .map_err(|e| Error::internal(format!("invalid configuration: {e}")))?;
        let jwt = JwtLogin::from_config(&config.jwt)
            .map_err(|e| Error::internal(format!("invalid configuration: {e}")))?;
        let push = crate::push::PushShared::default();
        let account_data = AccountData::new(db.clone(), streams.clone(), push.rules.clone());
        let rooms = Rooms::new(
            db.clone(),
            config.server_name.clone(),
            signing_key.clone(),
            streams.clone(),
            config.rooms.default_version.clone(),
            federation.clone(),
            push.clone(),
        )?;
        let media = Media::new(
            db.clone(),
            config.server_name.clone(),
            config.media.clone(),
            ephemeral.clone(),
            backends.media,
        )?;
        let search_index =
            match config.search.enabled {
                true => {
                    let language = hearth_storage::search::stemming_language(&config.search.language)
                        .ok_or_else(|| Error::internal("invalid configuration: unknown search.language"))?;
                    Some(backends.search.unwrap_or_else(|| {
                        Arc::new(hearth_storage::search::SearchIndex::in_memory(language))
                    }))
                }
                false => None,
            };
        let services = Services {
            appservices,
            rate_limits,
            activity: crate::metrics::Activity::default(),
            registration_tokens,
            config,
            db,
            ephemeral,
            notifier,
            signing_key,
            streams,
            users,
            rooms,
            uiaa,
            sso,
            jwt,
            account_data,
            pusher_wake: push.wake,
            claim_lock: crate::keys::e2ee::ClaimLock::default(),
            presence_store: crate::presence::PresenceStore::default(),
            ticket_keys,
            federation,
            media,
            http,
            mailer: backends.mailer,
            search: crate::search::Search::new(search_index),
            delayed: crate::delayed::Delayed::default(),
            sliding: crate::sync::sliding::conn::Connections::new(),
        };
        let hs = Self { inner: Arc::new(services) };
        hs.fail_interrupted_deletions()?;
        Ok(hs)
    }

    /// A homeserver on an in-memory database, for tests.
    pub fn for_tests(config: HomeserverConfig) -> Self {
        Self::new(config, Db::in_memory(), Arc::new(crate::ephemeral::LocalEphemeral::new()))
            .expect("an in-memory homeserver starts")
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.config.server_name
    }

    pub fn downgrade(&self) -> WeakHomeserver {
        WeakHomeserver(Arc::downgrade(&self.inner))
    }
}
