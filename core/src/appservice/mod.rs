//! Application services (bridges and bots): registration files, the services' own
//! authentication and user namespaces, the transactions that push them events
//! ([`sender`]), and the questions Hearth asks them ([`query`]).
//!
//! A service authenticates with its `as_token` as its own user or, with `?user_id=`, as any
//! user of its namespace that exists, optionally on one of that user's devices
//! (`?device_id=`). Exclusive namespaces are the service's alone: no other way of making an
//! account (registration, single sign-on, JWT, shared secret) takes such a user ID, and no one
//! else, other services included, creates or removes such an alias.

mod query;
pub mod registration;
mod sender;

use std::sync::Arc;

use ruma::{DeviceId, RoomAliasId, UserId};

pub use self::{query::PingError, registration::Registration};
use crate::{Error, ErrorCode, Homeserver, Result, users::Session, util};

/// Every registered application service.
#[derive(Default)]
pub struct Appservices {
    list: Vec<Arc<Registration>>,
    /// Per service (same order): cuts a failed delivery's backoff short (a successful ping).
    retry: Vec<tokio::sync::Notify>,
}

impl std::fmt::Debug for Appservices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens.
        f.debug_list().entries(self.list.iter().map(|r| &r.id)).finish()
    }
}

impl Appservices {
    pub fn new(list: Vec<Registration>) -> Self {
        let retry = list.iter().map(|_| tokio::sync::Notify::new()).collect();
        Self { list: list.into_iter().map(Arc::new).collect(), retry }
    }

    pub fn all(&self) -> &[Arc<Registration>] {
        &self.list
    }

    pub fn by_id(&self, id: &str) -> Option<&Arc<Registration>> {
        self.list.iter().find(|r| r.id == id)
    }

    /// The service a token belongs to.
    pub fn by_token(&self, token: &str) -> Option<&Arc<Registration>> {
        let hash = util::sha256(token.as_bytes());
        self.list.iter().find(|r| util::constant_time_eq(&r.as_token_hash, &hash))
    }

    /// Refuses a user ID in another service's exclusive namespace: only that service may
    /// register it. `acting` is the service making the request, if any.
    pub fn check_user_free(&self, user: &UserId, acting: Option<&str>) -> Result<()> {
        match self.list.iter().find(|r| r.exclusive_user(user)) {
            Some(owner) if acting != Some(owner.id.as_str()) => {
                Err(Error::new(ErrorCode::Exclusive, "This user ID is reserved by an application service."))
            }
            _ => Ok(()),
        }
    }

    /// Refuses an alias in another service's exclusive namespace.
    pub fn check_alias_free(&self, alias: &RoomAliasId, acting: Option<&str>) -> Result<()> {
        match self.list.iter().find(|r| r.exclusive_alias(alias)) {
            Some(owner) if acting != Some(owner.id.as_str()) => {
                Err(Error::new(ErrorCode::Exclusive, "This alias is reserved by an application service."))
            }
            _ => Ok(()),
        }
    }

    /// Asks a service's sender to retry now instead of waiting out its backoff.
    fn retry(&self, id: &str) {
        if let Some(i) = self.list.iter().position(|r| r.id == id) {
            self.retry[i].notify_one();
        }
    }

    /// Completes when [`Self::retry`] is called for the service.
    async fn retry_now(&self, id: &str) {
        match self.list.iter().position(|r| r.id == id) {
            Some(i) => self.retry[i].notified().await,
            None => std::future::pending().await,
        }
    }
}

impl Homeserver {
    /// The session an access token stands for: an application service's (as its own user or
    /// the one `?user_id=` names, on the device `?device_id=` names), or a user's.
    pub fn authenticate(&self, token: &str, query: Option<&str>) -> Result<Session> {
        let Some(service) = self.appservices.by_token(token) else {
            return self.users.authenticate(token);
        };
        let param = |name: &str| {
            query.and_then(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.into_owned())
            })
        };
        let user_id = match param("user_id") {
            None => service.sender.clone(),
            Some(text) => {
                let user = UserId::parse(text.as_str())
                    .map_err(|e| Error::invalid_param(format!("Invalid user_id: {e}")))?;
                if user != service.sender {
                    if !self.users.is_local(&user) || !service.owns_user(&user) {
                        return Err(Error::forbidden(format!(
                            "Application service cannot masquerade as this user ({user})."
                        )));
                    }
                    if !self.users.exists(&user)? {
                        return Err(Error::forbidden(format!(
                            "Application service has not registered this user ({user})"
                        )));
                    }
                }
                user
            }
        };
        // MSC3202's name first, then the stable one.
        let device_id = match param("org.matrix.msc3202.device_id").or_else(|| param("device_id")) {
            None => None,
            Some(device) => {
                let device: &DeviceId = device.as_str().into();
                if self.users.device(&user_id, device)?.is_none() {
                    return Err(Error::new(
                        ErrorCode::UnknownDevice,
                        format!(
                            "Application service trying to use a device that doesn't exist ('{device}' for {user_id})"
                        ),
                    ));
                }
                Some(device.to_owned())
            }
        };
        Ok(Session { user_id, device_id, is_guest: false, appservice: Some(service.id.clone()) })
    }

    /// On `/register` and `/login`: the service an `as_token` belongs to, acting as its own
    /// user (the body names the user concerned). `None` for any other token.
    pub fn appservice_session(&self, token: &str) -> Option<Session> {
        let service = self.appservices.by_token(token)?;
        Some(Session {
            user_id: service.sender.clone(),
            device_id: None,
            is_guest: false,
            appservice: Some(service.id.clone()),
        })
    }

    /// The service acting on `/register` or `/login` with `m.login.application_service`, or
    /// the error for a request without one (`unknown_token`: a token was sent, not a service's).
    pub fn acting_appservice(
        &self,
        session: Option<&Session>,
        unknown_token: bool,
    ) -> Result<Arc<Registration>> {
        let id = session.and_then(|s| s.appservice.as_deref());
        match id.and_then(|id| self.appservices.by_id(id)) {
            Some(service) => Ok(service.clone()),
            None if unknown_token => Err(Error::unknown_token("Unrecognised application service token")),
            None => Err(Error::missing_token("This login type needs an application service's token")),
        }
    }

    /// Registers a user of the service's namespace (`m.login.application_service`). No
    /// other check applies: the service answers for its users.
    pub async fn register_appservice_user(
        &self,
        service: &Registration,
        mut new: crate::users::NewAccount,
    ) -> Result<crate::users::Registered> {
        let localpart = new.localpart.clone().ok_or_else(|| Error::missing_param("username is required"))?;
        let user_id = self.users.appservice_user_id(&localpart)?;
        if !service.owns_user(&user_id) {
            return Err(Error::new(
                ErrorCode::Exclusive,
                "Invalid user localpart for this application service",
            ));
        }
        self.appservices.check_user_free(&user_id, Some(&service.id))?;
        if service.msc4190 && !new.inhibit_login {
            return Err(Error::new(
                ErrorCode::AppserviceLoginUnsupported,
                "This application service manages its own devices: register with inhibit_login",
            ));
        }
        new.appservice = true;
        new.password = None;
        self.users.register(new).await
    }

    /// The user a service logs in as (`m.login.application_service`): one of its namespace
    /// that exists.
    pub fn appservice_login_user(&self, service: &Registration, named: &str) -> Result<ruma::OwnedUserId> {
        if service.msc4190 {
            return Err(Error::new(
                ErrorCode::AppserviceLoginUnsupported,
                "This application service manages its own devices and cannot log in",
            ));
        }
        let full = if named.starts_with('@') {
            named.to_owned()
        } else {
            format!("@{named}:{}", self.server_name())
        };
        let user_id = UserId::parse(full).map_err(|_| Error::forbidden("Invalid login"))?;
        // The namespace first: a name outside it is refused whether or not it exists.
        if !service.owns_user(&user_id) {
            return Err(Error::new(
                ErrorCode::Exclusive,
                "This user is not in the application service's namespace",
            ));
        }
        if !self.users.exists(&user_id)? {
            return Err(Error::forbidden("Invalid login"));
        }
        Ok(user_id)
    }

    /// Whether the session is the application service whose namespace holds `alias` (which
    /// may then manage it as its own). A service's alias outside its namespace, or anyone's in
    /// another service's exclusive namespace, is refused.
    pub fn appservice_alias_owner(&self, session: &Session, alias: &RoomAliasId) -> Result<bool> {
        match session.appservice.as_deref().and_then(|id| self.appservices.by_id(id)) {
            Some(service) if service.owns_alias(alias) => {
                self.appservices.check_alias_free(alias, Some(&service.id))?;
                Ok(true)
            }
            Some(_) => Err(Error::new(
                ErrorCode::Exclusive,
                "This alias is not in the application service's namespace",
            )),
            None => self.appservices.check_alias_free(alias, None).map(|()| false),
        }
    }

    /// Creates each service's own user if it does not exist yet, so that it can act from the
    /// first request.
    pub async fn ensure_appservice_senders(&self) -> Result<()> {
        for service in self.appservices.all() {
            if self.users.exists(&service.sender)? {
                continue;
            }
            let new = crate::users::NewAccount {
                localpart: Some(service.sender.localpart().to_owned()),
                inhibit_login: true,
                appservice: true,
                ..Default::default()
            };
            match self.users.register(new).await {
                Ok(_) => {
                    tracing::info!(appservice = %service.id, user = %service.sender, "created the application service's user");
                }
                Err(Error::Matrix { code: ErrorCode::UserInUse, .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
