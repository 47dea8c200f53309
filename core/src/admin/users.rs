//! Accounts as admins see and change them: listing with filters and order, one account's
//! details, create-or-modify, the admin, locked and shadow-ban flags, deactivation (with
//! erasure) that leaves every room, and logging in as a user.

use ruma::events::room::member::MembershipState;
use std::cmp::Ordering;

use hearth_storage::{records::AccountRecord, schema::Accounts};
use ruma::{OwnedUserId, UserId};

use super::Page;
use crate::{Error, Homeserver, Result, users::NewAccount};

/// One account with what the admin API shows of it.
#[derive(Debug, Clone)]
pub struct AdminUser {
    pub user_id: OwnedUserId,
    pub account: AccountRecord,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    /// The latest activity of any of its devices.
    pub last_seen_ts: Option<u64>,
}

/// What `GET /_synapse/admin/v2/users` may sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserOrder {
    #[default]
    Name,
    Displayname,
    IsGuest,
    Admin,
    Deactivated,
    UserType,
    AvatarUrl,
    ShadowBanned,
    CreationTs,
    LastSeenTs,
    Locked,
}

impl UserOrder {
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "name" => Self::Name,
            "displayname" => Self::Displayname,
            "is_guest" => Self::IsGuest,
            "admin" => Self::Admin,
            "deactivated" => Self::Deactivated,
            "user_type" => Self::UserType,
            "avatar_url" => Self::AvatarUrl,
            "shadow_banned" => Self::ShadowBanned,
            "creation_ts" => Self::CreationTs,
            "last_seen_ts" => Self::LastSeenTs,
            "locked" => Self::Locked,
            _ => return None,
        })
    }

    fn compare(self, a: &AdminUser, b: &AdminUser) -> Ordering {
        let (x, y) = (&a.account, &b.account);
        match self {
            Self::Name => Ordering::Equal,
            Self::Displayname => a.displayname.cmp(&b.displayname),
            Self::IsGuest => x.is_guest.cmp(&y.is_guest),
            Self::Admin => x.is_admin.cmp(&y.is_admin),
            Self::Deactivated => x.deactivated.cmp(&y.deactivated),
            Self::UserType => x.user_type.cmp(&y.user_type),
            Self::AvatarUrl => a.avatar_url.cmp(&b.avatar_url),
            Self::ShadowBanned => x.shadow_banned.cmp(&y.shadow_banned),
            Self::CreationTs => x.created_ts.cmp(&y.created_ts),
            Self::LastSeenTs => a.last_seen_ts.cmp(&b.last_seen_ts),
            Self::Locked => x.locked.cmp(&y.locked),
        }
    }
}

/// The filters of the user list, with Synapse's defaults.
#[derive(Debug, Clone)]
pub struct UserFilter {
    /// A substring of the localpart or (case-insensitively) of the display name.
    pub name: Option<String>,
    /// A substring of the whole user ID; ignored when `name` is given.
    pub user_id: Option<String>,
    pub guests: bool,
    /// Only admins (`Some(true)`) or only non-admins (`Some(false)`).
    pub admins: Option<bool>,
    /// Only deactivated (`Some(true)`), only active (`Some(false)`), or both.
    pub deactivated: Option<bool>,
    /// Whether locked accounts are listed.
    pub locked: bool,
    pub order: UserOrder,
    pub backwards: bool,
}

impl Default for UserFilter {
    fn default() -> Self {
        Self {
            name: None,
            user_id: None,
            guests: true,
            admins: None,
            deactivated: Some(false),
            locked: false,
            order: UserOrder::Name,
            backwards: false,
        }
    }
}

impl UserFilter {
    fn keeps(&self, user: &AdminUser) -> bool {
        let account = &user.account;
        let name_matches = match (&self.name, &self.user_id) {
            (Some(name), _) => {
                let name = name.to_lowercase();
                user.user_id.localpart().contains(&name)
                    || user.displayname.as_ref().is_some_and(|d| d.to_lowercase().contains(&name))
            }
            (None, Some(id)) => user.user_id.as_str().contains(&id.to_lowercase()),
            (None, None) => true,
        };
        name_matches
            && (self.guests || !account.is_guest)
            && self.admins.is_none_or(|a| account.is_admin == a)
            && self.deactivated.is_none_or(|d| account.deactivated == d)
            && (self.locked || !account.locked)
    }
}

/// Changes of `PUT /_synapse/admin/v2/users/{userId}`; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    pub password: Option<String>,
    pub logout_devices: bool,
    /// `Some(None)` clears it.
    pub displayname: Option<Option<String>>,
    pub avatar_url: Option<Option<String>>,
    pub admin: Option<bool>,
    pub deactivated: Option<bool>,
    pub locked: Option<bool>,
    pub user_type: Option<Option<String>>,
}

impl Homeserver {
    /// Refuses sessions of users who are not server admins.
    pub fn require_admin(&self, session: &crate::users::Session) -> Result<()> {
        match self.users.account(&session.user_id)? {
            Some(account) if account.is_admin => Ok(()),
            _ => Err(Error::forbidden("You are not a server admin")),
        }
    }

    /// A local user ID, or why an admin endpoint cannot act on it (`message`: Synapse's words
    /// for the endpoint, which admin tools show).
    pub fn admin_local_user(&self, user: &UserId, message: &'static str) -> Result<()> {
        if user.server_name() != self.server_name() {
            return Err(Error::bad_request(message));
        }
        Ok(())
    }

    fn admin_view(&self, user_id: OwnedUserId, account: AccountRecord) -> Result<AdminUser> {
        let profile = self.users.profile(&user_id)?.unwrap_or_default();
        let text = |field: &str| profile.get(field).and_then(|v| v.as_str()).map(ToOwned::to_owned);
        let last_seen_ts = self.users.devices(&user_id)?.iter().filter_map(|d| d.last_seen_ts).max();
        Ok(AdminUser {
            displayname: text("displayname"),
            avatar_url: text("avatar_url"),
            user_id,
            account,
            last_seen_ts,
        })
    }

    /// One local account.
    pub fn admin_user(&self, user: &UserId) -> Result<Option<AdminUser>> {
        self.users.account(user)?.map(|account| self.admin_view(user.to_owned(), account)).transpose()
    }

    /// A page of accounts, and how many pass the filter.
    pub fn admin_users(&self, filter: &UserFilter, page: Page) -> Result<(Vec<AdminUser>, usize)> {
        let mut users = Vec::new();
        for entry in self.db.scan_prefix_all::<Accounts>()? {
            let (user_id, account) = entry?;
            let user = self.admin_view(user_id, account)?;
            if filter.keeps(&user) {
                users.push(user);
            }
        }
        users.sort_by(|a, b| {
            let primary = filter.order.compare(a, b);
            let primary = if filter.backwards { primary.reverse() } else { primary };
            let by_name = a.user_id.cmp(&b.user_id);
            let by_name =
                if filter.backwards && filter.order == UserOrder::Name { by_name.reverse() } else { by_name };
            primary.then(by_name)
        });
        let total = users.len();
        Ok((page.apply(users), total))
    }

    /// Creates or changes a local account; true when it was created.
    pub async fn admin_put_user(&self, user: &UserId, changes: UserChanges, acting: &UserId) -> Result<bool> {
        self.admin_local_user(user, "This endpoint can only be used with local users")?;
        if changes.deactivated == Some(true) && changes.locked == Some(true) {
            return Err(Error::bad_request("An account cannot be deactivated and locked at once"));
        }
        if changes.admin == Some(false) && user == acting {
            return Err(Error::bad_request("You may not demote yourself."));
        }
        if let Some(Some(kind)) = &changes.user_type
            && !matches!(kind.as_str(), "bot" | "support")
        {
            return Err(Error::bad_request("Invalid user type"));
        }
        let created = match self.users.account(user)? {
            Some(account) => {
                if let Some(password) = &changes.password {
                    self.users.set_password(user, password, changes.logout_devices, None).await?;
                }
                match changes.deactivated {
                    Some(true) if !account.deactivated => self.deactivate_account(user, false).await?,
                    Some(false) if account.deactivated => {
                        self.update_account(user, |a| {
                            a.deactivated = false;
                            a.erased = false;
                        })
                        .await?;
                    }
                    _ => {}
                }
                false
            }
            None => {
                // The ID rules of registration apply, reserved namespaces of application
                // services included (M_EXCLUSIVE, as on Synapse).
                self.users
                    .register(NewAccount {
                        localpart: Some(user.localpart().to_owned()),
                        password: changes.password.clone(),
                        is_admin: changes.admin.unwrap_or(false),
                        inhibit_login: true,
                        displayname: changes.displayname.clone().flatten(),
                        ..NewAccount::default()
                    })
                    .await?;
                true
            }
        };
        let (admin, locked, user_type) = (changes.admin, changes.locked, changes.user_type.clone());
        self.update_account(user, move |a| {
            if let Some(admin) = admin {
                a.is_admin = admin;
            }
            // Creation ignores `locked`, as Synapse's does.
            if let Some(locked) = locked.filter(|_| !created) {
                a.locked = locked;
            }
            if let Some(kind) = user_type {
                a.user_type = kind;
            }
        })
        .await?;
        for (field, value) in [("displayname", changes.displayname), ("avatar_url", changes.avatar_url)] {
            if let Some(value) = value {
                let value = value.filter(|v| !v.is_empty()).map(serde_json::Value::String);
                self.users.set_profile_field(user, field, value.clone()).await?;
                self.rooms.propagate_profile_field(user, field, value.as_ref()).await?;
            }
        }
        Ok(created)
    }

    /// For a shadow-banned sender, the event ID to answer with instead of sending: the
    /// request looks accepted, and nothing reaches the room (as on Synapse).
    pub fn shadow_ban_answer(&self, session: &crate::users::Session) -> Result<Option<ruma::OwnedEventId>> {
        if !self.users.account(&session.user_id)?.is_some_and(|a| a.shadow_banned) {
            return Ok(None);
        }
        let id = format!("${}", crate::util::random_string(43));
        Ok(Some(ruma::OwnedEventId::try_from(id).map_err(Error::internal)?))
    }

    /// Changes an account's record in one read-modify-write.
    pub async fn update_account(
        &self,
        user: &UserId,
        change: impl FnOnce(&mut AccountRecord) + Send + 'static,
    ) -> Result<()> {
        let db = self.db.clone();
        let user = user.to_owned();
        crate::users::blocking(move || {
            let mut account = db.get::<Accounts>(&user)?.ok_or_else(|| Error::not_found("User not found"))?;
            change(&mut account);
            db.put::<Accounts>(&user, &account)?;
            Ok(())
        })
        .await
    }

    /// Deactivates an account for good (sessions, password, pushers and scheduled events go)
    /// and makes it leave every room it is in or invited to. With `erase` its profile goes too,
    /// and the account is marked erased.
    pub async fn deactivate_account(&self, user: &UserId, erase: bool) -> Result<()> {
        self.users.deactivate(user).await?;
        if erase {
            self.update_account(user, |a| a.erased = true).await?;
        }
        let rooms = self.rooms.rooms_with_membership(
            user,
            &[MembershipState::Join, MembershipState::Invite, MembershipState::Knock],
        )?;
        for room in rooms {
            if let Err(error) = self.leave_room(&room, user, None).await {
                // The account is gone either way; a room that cannot be left now (its servers
                // unreachable) keeps a stale membership, as on Synapse.
                tracing::warn!(%error, %room, "a deactivated user could not leave a room");
            }
        }
        Ok(())
    }

    /// A new session of `user` for an admin to act as them: a device of its own (named so the
    /// user can see and end it), without a refresh token.
    pub async fn admin_login_as(&self, user: &UserId, acting: &UserId) -> Result<String> {
        self.admin_local_user(user, "Only local users can be logged in as")?;
        if user == acting {
            return Err(Error::bad_request("Cannot use admin API to login as self"));
        }
        let account = self.users.account(user)?.ok_or_else(|| Error::not_found("User not found"))?;
        let session = self
            .users
            .create_session(user, None, Some("Admin login".to_owned()), account.is_guest, false)
            .await?;
        tracing::info!(%user, admin = %acting, "an admin logged in as a user");
        Ok(session.access_token)
    }
}
