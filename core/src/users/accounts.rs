//! Creating, finding, re-passwording and deactivating local accounts.

use hearth_storage::{
    Batch,
    records::AccountRecord,
    schema::{Accounts, ProfileFields},
};
use ruma::{OwnedDeviceId, OwnedUserId, UserId};

use super::{NewSession, Users, blocking};
use crate::{Error, Result, util::now_ms};

/// What a registration asks for.
#[derive(Debug, Clone, Default)]
pub struct NewAccount {
    /// `None` picks a free numeric localpart, as for guests.
    pub localpart: Option<String>,
    pub password: Option<String>,
    pub is_guest: bool,
    pub is_admin: bool,
    /// Log in right away on this device (or a new one) unless `inhibit_login`.
    pub device_id: Option<OwnedDeviceId>,
    pub device_display_name: Option<String>,
    pub inhibit_login: bool,
    /// Whether the new session gets a refresh token (and an expiring access token).
    pub refresh_token: bool,
    pub displayname: Option<String>,
    /// Registered by an application service for its namespace: any valid user ID is
    /// allowed (bridges often start their users' localparts with `_`).
    pub appservice: bool,
}

#[derive(Debug, Clone)]
pub struct Registered {
    pub user_id: OwnedUserId,
    /// The new session, unless login was inhibited.
    pub login: Option<NewSession>,
}

/// Characters the spec allows in a new user's localpart.
fn is_localpart_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/' | '+')
}

const MAX_USER_ID_BYTES: usize = 255;

/// Adds a new account and its initial profile to `batch`.
pub(super) fn account_batch(
    batch: &mut Batch,
    user_id: &OwnedUserId,
    password_hash: Option<String>,
    is_guest: bool,
    is_admin: bool,
    displayname: Option<String>,
) -> Result<()> {
    let record = AccountRecord {
        password_hash,
        created_ts: now_ms(),
        is_guest,
        is_admin,
        deactivated: false,
        locked: false,
        shadow_banned: false,
        erased: false,
        user_type: None,
    };
    batch.put::<Accounts>(user_id, &record)?;
    // New users show their localpart until they choose a name, as on Synapse.
    let displayname = displayname.unwrap_or_else(|| user_id.localpart().to_owned());
    batch.put::<ProfileFields>(
        &(user_id.clone(), "displayname".to_owned()),
        &serde_json::Value::String(displayname),
    )?;
    Ok(())
}

impl Users {
    /// Checks a requested localpart against the grammar and the reserved forms, and returns the
    /// user ID it would give. Upper case is folded, as Synapse does.
    pub fn user_id_for_new_localpart(&self, requested: &str) -> Result<OwnedUserId> {
        let localpart = requested.to_lowercase();
        if localpart.is_empty() {
            return Err(Error::invalid_username("User ID cannot be empty"));
        }
        if !localpart.chars().all(is_localpart_char) {
            return Err(Error::invalid_username("User ID can only contain characters a-z, 0-9, or '=_-./+'"));
        }
        if localpart.starts_with('_') {
            return Err(Error::invalid_username("User ID may not begin with _"));
        }
        if localpart.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::invalid_username("Numeric user IDs are reserved for guest users"));
        }
        let user_id = format!("@{localpart}:{}", self.server_name);
        if user_id.len() > MAX_USER_ID_BYTES {
            return Err(Error::invalid_username(format!(
                "User ID may not be longer than {MAX_USER_ID_BYTES} characters"
            )));
        }
        UserId::parse(user_id).map_err(|e| Error::invalid_username(format!("Invalid user ID: {e}")))
    }

    /// The user ID an application service registers: taken as given (as Synapse does), but
    /// it must be a valid user ID of this server.
    pub fn appservice_user_id(&self, localpart: &str) -> Result<OwnedUserId> {
        let user_id = format!("@{localpart}:{}", self.server_name);
        if localpart.is_empty() || user_id.len() > MAX_USER_ID_BYTES {
            return Err(Error::invalid_username("Invalid user ID"));
        }
        UserId::parse(user_id).map_err(|e| Error::invalid_username(format!("Invalid user ID: {e}")))
    }

    pub fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.server_name
    }

    pub fn account(&self, user_id: &UserId) -> Result<Option<AccountRecord>> {
        Ok(self.db.get::<Accounts>(&user_id.to_owned())?)
    }

    /// Whether a user ID is taken; deactivated accounts keep their ID forever.
    pub fn exists(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.db.contains::<Accounts>(&user_id.to_owned())?)
    }

    /// Creates an account and, unless inhibited, its first session.
    pub async fn register(&self, new: NewAccount) -> Result<Registered> {
        let password_hash = match new.password.clone() {
            Some(pw) => Some(self.passwords.hash(pw).await?),
            None => None,
        };
        let requested = match &new.localpart {
            Some(lp) if new.appservice => Some(self.appservice_user_id(lp)?),
            Some(lp) => Some(self.user_id_for_new_localpart(lp)?),
            None => None,
        };
        let users = self.clone();
        let new2 = new.clone();
        let user_id = blocking(move || {
            let _guard = users.create_lock.lock().map_err(|_| Error::internal("create lock poisoned"))?;
            let _shared = users.db.shared_lock(hearth_storage::engine::LockKind::Create, "user")?;
            let user_id = match requested {
                Some(user_id) => {
                    // Only the service itself registers users of its exclusive namespace.
                    if !new2.appservice {
                        users.appservices.check_user_free(&user_id, None)?;
                    }
                    if users.exists(&user_id)? {
                        return Err(Error::user_in_use("User ID already taken."));
                    }
                    user_id
                }
                None => users.free_generated_user_id()?,
            };
            let mut batch = Batch::new();
            account_batch(
                &mut batch,
                &user_id,
                password_hash,
                new2.is_guest,
                new2.is_admin,
                new2.displayname,
            )?;
            users.db.write(batch)?;
            Ok(user_id)
        })
        .await?;
        tracing::info!(%user_id, is_guest = new.is_guest, "registered a new account");

        let login = if new.inhibit_login {
            None
        } else {
            Some(
                self.create_session(
                    &user_id,
                    new.device_id,
                    new.device_display_name,
                    new.is_guest,
                    new.refresh_token,
                )
                .await?,
            )
        };
        Ok(Registered { user_id, login })
    }

    /// A user ID that is free now for `wanted` (already a valid localpart): itself, or itself
    /// with the smallest number appended that makes it free. Call under `create_lock`.
    pub(super) fn free_user_id_like(&self, wanted: &str) -> Result<OwnedUserId> {
        // A name an application service reserves is as good as taken.
        let free = |user_id: &UserId| -> Result<bool> {
            Ok(!self.exists(user_id)? && self.appservices.check_user_free(user_id, None).is_ok())
        };
        let first = self.user_id_for_new_localpart(wanted)?;
        if free(&first)? {
            return Ok(first);
        }
        for n in 1..10_000u32 {
            let user_id = self.user_id_for_new_localpart(&format!("{wanted}{n}"))?;
            if free(&user_id)? {
                return Ok(user_id);
            }
        }
        Err(Error::user_in_use("No free user ID like this one"))
    }

    /// Guests and registrations without a username get the next free numeric localpart.
    fn free_generated_user_id(&self) -> Result<OwnedUserId> {
        loop {
            let n = self.db.next_id("generated_localpart")?;
            let user_id = UserId::parse(format!("@{n}:{}", self.server_name))
                .map_err(|e| Error::internal(format!("generated user ID: {e}")))?;
            if !self.exists(&user_id)? && self.appservices.check_user_free(&user_id, None).is_ok() {
                return Ok(user_id);
            }
        }
    }

    /// Finds the account a login names: a localpart or a full user ID, matched case-insensitively
    /// when there is no exact match.
    pub fn resolve_login_user(&self, user: &str) -> Result<Option<OwnedUserId>> {
        let full =
            if user.starts_with('@') { user.to_owned() } else { format!("@{user}:{}", self.server_name) };
        let Ok(user_id) = UserId::parse(&full) else { return Ok(None) };
        if !self.is_local(&user_id) {
            return Ok(None);
        }
        if self.exists(&user_id)? {
            return Ok(Some(user_id));
        }
        match UserId::parse(full.to_lowercase()) {
            Ok(lowered) if self.exists(&lowered)? => Ok(Some(lowered)),
            _ => Ok(None),
        }
    }

    /// Whether `password` is the account's password. Accounts without one never match.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<bool> {
        match self.account(user_id)? {
            Some(AccountRecord { password_hash: Some(hash), deactivated: false, .. }) => {
                self.passwords.verify(hash, password.to_owned()).await
            }
            _ => Ok(false),
        }
    }

    /// Sets a new password. With `logout_devices`, every session other than `keep` ends.
    /// Refuses a locked account's requests (401 `M_USER_LOCKED`, `soft_logout`).
    pub fn check_not_locked(&self, user_id: &UserId) -> Result<()> {
        if self.account(user_id)?.is_some_and(|a| a.locked) {
            return Err(Error::user_locked("User account has been locked"));
        }
        Ok(())
    }

    pub async fn set_password(
        &self,
        user_id: &UserId,
        new_password: &str,
        logout_devices: bool,
        keep: Option<&ruma::DeviceId>,
    ) -> Result<()> {
        let hash = self.passwords.hash(new_password.to_owned()).await?;
        let users = self.clone();
        let uid = user_id.to_owned();
        blocking(move || {
            let mut record = users.account(&uid)?.ok_or_else(|| Error::not_found("No such user"))?;
            record.password_hash = Some(hash);
            users.db.put::<Accounts>(&uid, &record)?;
            Ok(())
        })
        .await?;
        if logout_devices {
            let others: Vec<OwnedDeviceId> = self
                .devices(user_id)?
                .into_iter()
                .map(|d| d.device_id)
                .filter(|d| keep.is_none_or(|k| k.as_str() != d.as_str()))
                .collect();
            self.delete_devices(user_id, &others).await?;
        }
        Ok(())
    }

    /// Deactivates an account for good: sessions end, the password and profile are removed,
    /// pushers and scheduled (delayed) events go, and the user ID stays taken.
    pub async fn deactivate(&self, user_id: &UserId) -> Result<()> {
        let all: Vec<OwnedDeviceId> = self.devices(user_id)?.into_iter().map(|d| d.device_id).collect();
        self.delete_devices(user_id, &all).await?;
        let users = self.clone();
        let uid = user_id.to_owned();
        blocking(move || {
            let mut record = users.account(&uid)?.ok_or_else(|| Error::not_found("No such user"))?;
            record.deactivated = true;
            record.password_hash = None;
            let mut batch = Batch::new();
            batch.put::<Accounts>(&uid, &record)?;
            for entry in users.db.scan_prefix::<ProfileFields, _>(&uid)? {
                let (key, _) = entry?;
                batch.delete::<ProfileFields>(&key);
            }
            crate::push::pushers::delete_for_devices(&users.db, &mut batch, &uid, None)?;
            crate::delayed::cancel_all_of(&users.db, &mut batch, &uid)?;
            users.db.write(batch)?;
            Ok(())
        })
        .await?;
        tracing::info!(%user_id, "deactivated account");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::test_users;

    #[test]
    fn localpart_rules() {
        let users = test_users();
        assert_eq!(users.user_id_for_new_localpart("Alice").unwrap().as_str(), "@alice:example.org");
        for bad in ["", "al ice", "_bridge", "1234", "ali:ce", "é"] {
            let err = users.user_id_for_new_localpart(bad).unwrap_err();
            assert!(matches!(err, Error::Matrix { code: crate::ErrorCode::InvalidUsername, .. }), "{bad}");
        }
        assert!(users.user_id_for_new_localpart(&"a".repeat(300)).is_err());
    }

    #[tokio::test]
    async fn register_then_taken_then_login_user_resolution() {
        let users = test_users();
        let new =
            NewAccount { localpart: Some("bob".into()), password: Some("pw".into()), ..Default::default() };
        let reg = users.register(new.clone()).await.unwrap();
        assert_eq!(reg.user_id.as_str(), "@bob:example.org");
        assert!(reg.login.is_some());
        let err = users.register(new).await.unwrap_err();
        assert!(matches!(err, Error::Matrix { code: crate::ErrorCode::UserInUse, .. }));
        assert_eq!(users.resolve_login_user("BOB").unwrap(), Some(reg.user_id.clone()));
        assert_eq!(users.resolve_login_user("@bob:example.org").unwrap(), Some(reg.user_id.clone()));
        assert_eq!(users.resolve_login_user("@bob:elsewhere.org").unwrap(), None);
        assert!(users.check_password(&reg.user_id, "pw").await.unwrap());
        assert!(!users.check_password(&reg.user_id, "nope").await.unwrap());
    }

    #[tokio::test]
    async fn concurrent_registrations_of_one_name_yield_one_account() {
        let users = test_users();
        let attempts = (0..8).map(|_| {
            let users = users.clone();
            tokio::spawn(async move {
                users
                    .register(NewAccount {
                        localpart: Some("race".into()),
                        inhibit_login: true,
                        ..Default::default()
                    })
                    .await
            })
        });
        let mut ok = 0;
        for a in attempts {
            if a.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 1);
    }

    #[tokio::test]
    async fn guests_get_numeric_ids_and_deactivation_ends_everything() {
        let users = test_users();
        let guest = users.register(NewAccount { is_guest: true, ..Default::default() }).await.unwrap();
        assert!(guest.user_id.localpart().bytes().all(|b| b.is_ascii_digit()));
        let token = guest.login.unwrap().access_token;
        assert!(users.authenticate(&token).unwrap().is_guest);

        let reg = users
            .register(NewAccount {
                localpart: Some("carol".into()),
                password: Some("pw".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let token = reg.login.unwrap().access_token;
        users.deactivate(&reg.user_id).await.unwrap();
        assert!(users.authenticate(&token).is_err());
        assert!(!users.check_password(&reg.user_id, "pw").await.unwrap());
        assert!(users.exists(&reg.user_id).unwrap(), "the ID stays taken");
        assert_eq!(users.profile_field(&reg.user_id, "displayname").unwrap(), None);
    }
}
