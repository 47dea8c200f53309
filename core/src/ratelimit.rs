//! Per-action rate limits: one token bucket per action and actor (a user, a client address, a
//! remote server), kept in the ephemeral store so that processes sharing Redis enforce one
//! limit between them. These sit on top of the connection-level limits of the listeners.
//!
//! Who is exempt, as in Synapse: application services whose registration says
//! `rate_limited: false` (for everything they do as any of their users), and users an admin
//! gave an override of zero. An override otherwise replaces the configured limit of every
//! per-user action.

use crate::ephemeral::spaces::{RateLimitBuckets, Space};
use std::{sync::Arc, time::Duration};

pub use hearth_storage::records::RateLimitOverride;
use hearth_storage::{Db, schema::RateLimitOverrides};
use ruma::{RoomId, UserId};

use crate::{
    Error, Result,
    appservice::Appservices,
    config::{RateLimit, RateLimitConfig},
    ephemeral::{Bucket, EphemeralStore, LocalEphemeral},
    rooms::append::{Txn, TxnEndpoint},
    users::Session,
};

/// What is being limited; each has its own buckets and its own `[rate_limits.*]` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Message,
    Registration,
    LoginAddress,
    LoginAccount,
    LoginFailed,
    Join,
    Invite,
    MediaUpload,
    PasswordChange,
    Federation,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Registration => "registration",
            Self::LoginAddress => "login_address",
            Self::LoginAccount => "login_account",
            Self::LoginFailed => "login_failed",
            Self::Join => "join",
            Self::Invite => "invite",
            Self::MediaUpload => "media_upload",
            Self::PasswordChange => "password_change",
            Self::Federation => "federation",
        }
    }

    fn limit(self, config: &RateLimitConfig) -> RateLimit {
        match self {
            Self::Message => config.message,
            Self::Registration => config.registration,
            Self::LoginAddress => config.login_address,
            Self::LoginAccount => config.login_account,
            Self::LoginFailed => config.login_failed,
            Self::Join => config.join,
            Self::Invite => config.invite,
            Self::MediaUpload => config.media_upload,
            Self::PasswordChange => config.password_change,
            Self::Federation => config.federation,
        }
    }
}

/// The bucket a configured limit describes, or why it describes none.
fn bucket(limit: RateLimit) -> std::result::Result<Bucket, String> {
    if !(limit.per_second.is_finite() && limit.per_second > 0.0) {
        return Err(format!("per_second must be a positive number, not {}", limit.per_second));
    }
    if limit.burst_count == 0 {
        return Err("burst_count must be at least 1".to_owned());
    }
    // Float to integer casts saturate; a rate above 1000/s is one action per millisecond.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let interval_ms = (1000.0 / limit.per_second).round().max(1.0) as u64;
    Ok(Bucket { interval_ms, burst: limit.burst_count })
}

pub struct RateLimits {
    config: RateLimitConfig,
    store: Arc<dyn EphemeralStore>,
    /// Used while a shared store fails, so that an outage of Redis loosens limits to one
    /// bucket per process instead of lifting them or refusing every request.
    fallback: LocalEphemeral,
    db: Db,
    appservices: Arc<Appservices>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits").field("enabled", &self.config.enabled).finish_non_exhaustive()
    }
}

impl RateLimits {
    /// Fails when a configured limit is not a usable bucket, naming it.
    pub fn new(
        config: RateLimitConfig,
        store: Arc<dyn EphemeralStore>,
        db: Db,
        appservices: Arc<Appservices>,
    ) -> std::result::Result<Self, String> {
        let all = [
            Action::Message,
            Action::Registration,
            Action::LoginAddress,
            Action::LoginAccount,
            Action::LoginFailed,
            Action::Join,
            Action::Invite,
            Action::MediaUpload,
            Action::PasswordChange,
            Action::Federation,
        ];
        for action in all {
            bucket(action.limit(&config)).map_err(|e| format!("rate_limits.{}: {e}", action.name()))?;
        }
        Ok(Self { config, store, fallback: LocalEphemeral::new(), db, appservices })
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Counts one `action` by the actor named `who` (a client address, a server name, a
    /// lowercased user ID), or fails with 429 `M_LIMIT_EXCEEDED` and the wait.
    pub async fn check(&self, action: Action, who: &str) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        self.take(action, who, action.limit(&self.config), true).await
    }

    /// Fails as [`Self::check`] would, without counting: for limits on outcomes (failed logins)
    /// that are known only after the work is done.
    pub async fn peek(&self, action: Action, who: &str) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        self.take(action, who, action.limit(&self.config), false).await
    }

    /// Counts one `action` by the session's user, honouring application-service exemptions
    /// and the user's override.
    pub async fn check_user(&self, action: Action, session: &Session) -> Result<()> {
        self.user_bucket(action, session, true).await
    }

    /// Fails as [`Self::check_user`] would, without counting: for actions that take several
    /// requests (a UIA exchange) and count once done.
    pub async fn peek_user(&self, action: Action, session: &Session) -> Result<()> {
        self.user_bucket(action, session, false).await
    }

    async fn user_bucket(&self, action: Action, session: &Session, commit: bool) -> Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        if let Some(service) = session.appservice.as_deref().and_then(|id| self.appservices.by_id(id))
            && !service.rate_limited
        {
            return Ok(());
        }
        let limit = match self.override_of(&session.user_id)? {
            Some(RateLimitOverride { per_second, burst_count }) if per_second <= 0.0 || burst_count == 0 => {
                return Ok(());
            }
            Some(o) => RateLimit { per_second: o.per_second, burst_count: o.burst_count },
            None => action.limit(&self.config),
        };
        self.take(action, session.user_id.as_str(), limit, commit).await
    }

    async fn take(&self, action: Action, who: &str, limit: RateLimit, commit: bool) -> Result<()> {
        // Checked at start-up for the configured limits; an override is checked when set.
        let bucket = bucket(limit).map_err(Error::internal)?;
        let key = RateLimitBuckets::key(format_args!("{}:{who}", action.name()));
        let wait = match self.store.take_token(&key, bucket, commit).await {
            Ok(wait) => wait,
            // The store logs its own outage once; each request must not.
            Err(_) => self.fallback.take_token(&key, bucket, commit).await?,
        };
        match wait {
            None => Ok(()),
            Some(wait) => Err(Error::limit_exceeded("Too many requests", wait.max(Duration::from_millis(1)))),
        }
    }

    /// The override an admin set for `user`.
    pub fn override_of(&self, user: &UserId) -> Result<Option<RateLimitOverride>> {
        Ok(self.db.get::<RateLimitOverrides>(&user.to_owned())?)
    }

    /// Sets (or with `None` removes) `user`'s override. A zero in either field exempts them.
    pub fn set_override(&self, user: &UserId, value: Option<RateLimitOverride>) -> Result<()> {
        match value {
            Some(o) => {
                // A zero in either field lifts the user's limits (`user_bucket`).
                if !(o.per_second.is_finite() && o.per_second >= 0.0) {
                    return Err(Error::invalid_param("messages_per_second must be a non-negative number"));
                }
                self.db.put::<RateLimitOverrides>(&user.to_owned(), &o)?;
            }
            None => self.db.delete::<RateLimitOverrides>(&user.to_owned())?,
        }
        Ok(())
    }
}

impl crate::Homeserver {
    /// Counts an event a client sends against its message limit, unless its transaction
    /// already produced the event: a retry is answered with that event, never refused.
    pub async fn check_send_limit(
        &self,
        session: &Session,
        room_id: &RoomId,
        endpoint: TxnEndpoint<'_>,
        txn: Option<&Txn>,
    ) -> Result<()> {
        if !self.rate_limits.enabled() {
            return Ok(());
        }
        if let Some(txn) = txn
            && self.rooms.txn_event(room_id, &session.user_id, endpoint, txn)?.is_some()
        {
            return Ok(());
        }
        self.rate_limits.check_user(Action::Message, session).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, config::RateLimitConfig};

    fn limits(
        config: RateLimitConfig,
        services: Vec<crate::appservice::registration::Registration>,
    ) -> RateLimits {
        RateLimits::new(
            config,
            Arc::new(LocalEphemeral::new()),
            Db::in_memory(),
            Arc::new(Appservices::new(services)),
        )
        .unwrap()
    }

    fn session(user: &str, appservice: Option<&str>) -> Session {
        Session {
            user_id: user.try_into().unwrap(),
            device_id: None,
            is_guest: false,
            appservice: appservice.map(str::to_owned),
        }
    }

    fn strict() -> RateLimitConfig {
        RateLimitConfig {
            message: RateLimit { per_second: 0.001, burst_count: 2 },
            ..RateLimitConfig::default()
        }
    }

    #[tokio::test]
    async fn a_burst_passes_and_the_next_action_waits() {
        let limits = limits(strict(), vec![]);
        let alice = session("@alice:hs", None);
        limits.check_user(Action::Message, &alice).await.unwrap();
        limits.check_user(Action::Message, &alice).await.unwrap();
        let err = limits.check_user(Action::Message, &alice).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::LimitExceeded);
        let wait = err.retry_after().unwrap();
        assert!(wait > Duration::from_secs(990) && wait <= Duration::from_secs(1000), "{wait:?}");
        limits.check_user(Action::Message, &session("@bob:hs", None)).await.expect("per user");
        limits.check_user(Action::Join, &alice).await.expect("per action");
    }

    #[tokio::test]
    async fn disabled_limits_never_refuse() {
        let limits = limits(RateLimitConfig { enabled: false, ..strict() }, vec![]);
        for _ in 0..10 {
            limits.check_user(Action::Message, &session("@alice:hs", None)).await.unwrap();
            limits.check(Action::LoginAddress, "127.0.0.1").await.unwrap();
        }
    }

    #[tokio::test]
    async fn overrides_replace_or_lift_the_limit() {
        let limits = limits(strict(), vec![]);
        let alice = session("@alice:hs", None);
        let user = &alice.user_id;
        limits.set_override(user, Some(RateLimitOverride { per_second: 0.0, burst_count: 0 })).unwrap();
        for _ in 0..5 {
            limits.check_user(Action::Message, &alice).await.unwrap();
        }
        limits.set_override(user, Some(RateLimitOverride { per_second: 0.001, burst_count: 1 })).unwrap();
        limits.check_user(Action::Join, &alice).await.unwrap();
        assert!(limits.check_user(Action::Join, &alice).await.is_err(), "the override's burst of one");
        let bad = limits.set_override(user, Some(RateLimitOverride { per_second: -1.0, burst_count: 3 }));
        assert_eq!(bad.unwrap_err().code(), ErrorCode::InvalidParam);
        limits.set_override(user, None).unwrap();
        assert_eq!(limits.override_of(user).unwrap(), None);
    }

    #[tokio::test]
    async fn peeking_counts_nothing() {
        let limits = limits(
            RateLimitConfig { login_failed: RateLimit { per_second: 0.001, burst_count: 1 }, ..strict() },
            vec![],
        );
        for _ in 0..3 {
            limits.peek(Action::LoginFailed, "@alice:hs").await.unwrap();
        }
        limits.check(Action::LoginFailed, "@alice:hs").await.unwrap();
        assert!(limits.peek(Action::LoginFailed, "@alice:hs").await.is_err());
    }

    #[tokio::test]
    async fn application_services_are_exempt_when_registered_so() {
        let yaml = |id: &str, limited: bool| {
            format!(
                "id: {id}\nurl: null\nas_token: a_{id}\nhs_token: h_{id}\nsender_localpart: {id}\n\
                 rate_limited: {limited}\nnamespaces:\n  users: []\n"
            )
        };
        let parse = |text: String| {
            crate::appservice::registration::parse(
                &text,
                std::path::Path::new("test.yaml"),
                ruma::server_name!("hs"),
            )
            .unwrap()
        };
        let limits = limits(strict(), vec![parse(yaml("free", false)), parse(yaml("bound", true))]);
        for _ in 0..5 {
            limits.check_user(Action::Message, &session("@free:hs", Some("free"))).await.unwrap();
        }
        let bound = session("@bound:hs", Some("bound"));
        limits.check_user(Action::Message, &bound).await.unwrap();
        limits.check_user(Action::Message, &bound).await.unwrap();
        assert!(limits.check_user(Action::Message, &bound).await.is_err());
    }

    #[test]
    fn unusable_limits_are_named() {
        let config = RateLimitConfig {
            join: RateLimit { per_second: 0.0, burst_count: 3 },
            ..RateLimitConfig::default()
        };
        let err = RateLimits::new(config, Arc::new(LocalEphemeral::new()), Db::in_memory(), Arc::default())
            .unwrap_err();
        assert!(err.starts_with("rate_limits.join: per_second"), "{err}");
    }
}
