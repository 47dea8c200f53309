//! Server notices: messages from the server's admins to one user, sent by a system user into a
//! room of their own (tagged `m.server_notice`, so clients show it apart), created on first use
//! and reused while the user is in it.

use ruma::events::room::member::MembershipState;
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, UserId};
use serde_json::{Value, json};

use crate::{
    Error, Homeserver, Result,
    events::NewEvent,
    rooms::{CreateRoom, Preset, append::Txn},
    users::NewAccount,
};

impl Homeserver {
    /// The system user notices come from, created the first time; `None` when notices are off.
    async fn notice_sender(&self) -> Result<Option<OwnedUserId>> {
        let config = &self.config.server_notices;
        let Some(localpart) = &config.system_user_localpart else { return Ok(None) };
        let user = OwnedUserId::try_from(format!("@{localpart}:{}", self.server_name())).map_err(|e| {
            Error::internal(format!("invalid configuration: server_notices.system_user_localpart: {e}"))
        })?;
        if !self.users.exists(&user)? {
            // No password and no device: nobody can sign in as it.
            self.users
                .register(NewAccount {
                    localpart: Some(localpart.clone()),
                    inhibit_login: true,
                    displayname: config.system_user_displayname.clone(),
                    appservice: true,
                    ..NewAccount::default()
                })
                .await?;
        }
        Ok(Some(user))
    }

    /// A room the user is in or invited to where the system user is joined.
    fn notice_room(&self, user: &UserId, system: &UserId) -> Result<Option<OwnedRoomId>> {
        for room in
            self.rooms.rooms_with_membership(user, &[MembershipState::Join, MembershipState::Invite])?
        {
            let tagged = self.account_data.tags(user, &room)?.contains_key("m.server_notice");
            if tagged && self.rooms.membership(&room, system)? == Some(MembershipState::Join) {
                return Ok(Some(room));
            }
        }
        Ok(None)
    }

    /// Sends a notice (a message, or a state event with `state_key`) to a local user.
    pub async fn send_server_notice(
        &self,
        user: &UserId,
        kind: &str,
        state_key: Option<String>,
        content: Value,
        txn: Option<Txn>,
    ) -> Result<OwnedEventId> {
        let Some(system) = self.notice_sender().await? else {
            return Err(Error::bad_request("Server notices are not enabled on this server"));
        };
        if user.server_name() != self.server_name() {
            return Err(Error::bad_request("Server notices can only be sent to local users"));
        }
        if !self.users.exists(user)? {
            return Err(Error::not_found("User not found"));
        }
        let room = match self.notice_room(user, &system)? {
            Some(room) => room,
            None => {
                let mut create = CreateRoom::new();
                create.preset = Some(Preset::PrivateChat);
                create.name = Some(self.config.server_notices.room_name.clone());
                create.power_level_override = Some(crate::rooms::muted_members_override());
                create.invite = vec![user.to_owned()];
                create.invite_profiles.insert(user.to_owned(), self.users.member_content(user).await?);
                let profile = self.users.member_content(&system).await?;
                let room = self.rooms.create_room(&system, profile, create).await?;
                self.account_data.set_tag(user, &room, "m.server_notice", json!({})).await?;
                room
            }
        };
        let new = match state_key {
            Some(key) => NewEvent::state(kind.into(), key, content),
            None => NewEvent::message(kind.into(), content),
        };
        let event_id = self.rooms.append(&room, &system, new, txn).await?;
        tracing::info!(%user, %room, "server notice sent");
        Ok(event_id)
    }
}
