//! EDUs both ways: what local users do that other servers must hear of (presence, device lists,
//! cross-signing keys, to-device messages; typing and receipts are queued by `rooms::ephemeral`
//! in the write that records them), queued through the durable outbox, and what other servers
//! tell us about their users.
//!
//! Only what local users do leaves: an EDU received from another server is recorded here and
//! never sent on, and an EDU is accepted only about users of the server that sent it.

use ruma::events::room::member::MembershipState;
use std::collections::{BTreeMap, BTreeSet};

use hearth_storage::{
    Batch,
    records::{OutboxItem, StreamEntry},
    schema::{DeviceKeys, DeviceListStreamIds, RemoteToDeviceIds, Rooms as RoomsTable},
};
use ruma::{
    DeviceId, OwnedDeviceId, OwnedRoomId, OwnedServerName, OwnedTransactionId, OwnedUserId, ServerName, UInt,
    UserId,
    api::federation::transactions::edu::{
        DeviceListUpdateContent, DirectDeviceContent, DirectDeviceMessages, Edu, PresenceContent,
        PresenceUpdate, SigningKeyUpdateContent,
    },
    events::ToDeviceEventType,
    to_device::DeviceIdOrAllDevices,
};
use serde_json::Value;

use crate::{
    Error, ErrorCode, Homeserver, Result,
    json::raw,
    presence::{PresenceState, RemotePresence},
    users::blocking,
};

/// Presence updates taken from one EDU; the rest are dropped, so one EDU costs a bounded
/// amount of work.
const MAX_PRESENCE_PER_EDU: usize = 100;

fn from_origin(origin: &ServerName, user: &UserId) -> Result<()> {
    if user.server_name() == origin {
        Ok(())
    } else {
        Err(Error::new(ErrorCode::Forbidden, "EDU about another server's user"))
    }
}

/// The `message_id` of the to-device messages of one client request: the same on a retry of the
/// request, so the receiving server delivers them once.
pub(crate) fn to_device_message_id(sender: &UserId, device: &DeviceId, txn_id: &str) -> OwnedTransactionId {
    let digest = crate::util::sha256(format!("{sender}\0{device}\0{txn_id}").as_bytes());
    hex::encode(&digest[..16]).into()
}

impl Homeserver {
    /// Rooms `user`, of this server or another, is joined to, as far as this server knows.
    fn rooms_of_member(&self, user: &UserId) -> Result<Vec<OwnedRoomId>> {
        if self.users.is_local(user) {
            return self.rooms.joined_rooms(user);
        }
        // Only local users have an index by user; other users are found room by room.
        let mut out = Vec::new();
        for entry in self.db.scan_prefix_all::<RoomsTable>()? {
            let (room_id, _) = entry?;
            if self.rooms.membership(&room_id, user)? == Some(MembershipState::Join) {
                out.push(room_id);
            }
        }
        Ok(out)
    }

    /// Local users who share a room with `user`: who must hear of changes to them.
    pub fn local_users_sharing_rooms(&self, user: &UserId) -> Result<Vec<OwnedUserId>> {
        let mut out = BTreeSet::new();
        for room in self.rooms_of_member(user)? {
            out.extend(self.rooms.members(&room)?.local.iter().cloned());
        }
        Ok(out.into_iter().collect())
    }

    /// Other servers with a member in a room the local `user` is joined to.
    pub fn servers_sharing_rooms(&self, user: &UserId) -> Result<BTreeSet<OwnedServerName>> {
        let mut out = BTreeSet::new();
        for room in self.rooms.joined_rooms(user)? {
            out.extend(self.servers_in_room(&room)?);
        }
        Ok(out)
    }

    async fn send_edu(&self, destinations: BTreeSet<OwnedServerName>, edu: Edu) -> Result<()> {
        if !self.federation.enabled() || destinations.is_empty() {
            return Ok(());
        }
        let edu = serde_json::to_value(&edu).map_err(Error::internal)?;
        self.enqueue(destinations, vec![OutboxItem::Edu { edu }]).await
    }

    /// Tells servers sharing a room with a local user of a change in their presence.
    pub(crate) async fn send_presence_edu(&self, user: &UserId) -> Result<()> {
        if !self.federation.enabled() || !self.users.is_local(user) {
            return Ok(());
        }
        let servers = self.servers_sharing_rooms(user)?;
        if servers.is_empty() {
            return Ok(());
        }
        let view = self.presence(user);
        let state = match view.state {
            PresenceState::Online => ruma::presence::PresenceState::Online,
            PresenceState::Unavailable => ruma::presence::PresenceState::Unavailable,
            PresenceState::Offline => ruma::presence::PresenceState::Offline,
        };
        let ago = UInt::new_saturating(view.last_active_ago_ms.unwrap_or(0));
        let mut update = PresenceUpdate::new(user.to_owned(), state, ago);
        update.status_msg = view.status_msg;
        update.currently_active = view.currently_active;
        self.send_edu(servers, Edu::Presence(PresenceContent::new(vec![update]))).await
    }

    /// A local user's device changed (keys uploaded, renamed, deleted) at stream position
    /// `stream_id`: other servers sharing a room get an `m.device_list_update`.
    pub(crate) async fn send_device_list_update(
        &self,
        user: &UserId,
        device: &DeviceId,
        deleted: bool,
        stream_id: u64,
    ) -> Result<()> {
        if !self.federation.enabled() {
            return Ok(());
        }
        // Two concurrent changes may name the same prev_id; a receiver that sees a gap or a fork
        // in the chain refetches the whole list, so that costs a request, not correctness.
        let prev = self.db.get::<DeviceListStreamIds>(&user.to_owned())?;
        let db = self.db.clone();
        let owner = user.to_owned();
        blocking(move || Ok(db.put::<DeviceListStreamIds>(&owner, &stream_id)?)).await?;
        let servers = self.servers_sharing_rooms(user)?;
        if servers.is_empty() {
            return Ok(());
        }
        let mut content = if deleted {
            let mut content = DeviceListUpdateContent::new(
                user.to_owned(),
                device.to_owned(),
                UInt::new_saturating(stream_id),
            );
            content.deleted = Some(true);
            content
        } else {
            let name = self.users.device(user, device)?.and_then(|d| d.display_name);
            self.device_list_content(user, device, name, stream_id)?
        };
        content.prev_id = prev.into_iter().map(UInt::new_saturating).collect();
        self.send_edu(servers, Edu::DeviceListUpdate(content)).await
    }

    /// An `m.device_list_update` describing a device as it is: its name and its keys.
    fn device_list_content(
        &self,
        user: &UserId,
        device: &DeviceId,
        display_name: Option<String>,
        stream_id: u64,
    ) -> Result<DeviceListUpdateContent> {
        let mut content =
            DeviceListUpdateContent::new(user.to_owned(), device.to_owned(), UInt::new_saturating(stream_id));
        content.device_display_name = display_name;
        if let Some(keys) = self.db.get::<DeviceKeys>(&(user.to_owned(), device.to_owned()))? {
            content.keys = Some(raw(&keys)?);
        }
        Ok(content)
    }

    /// A local user joined a room that brings in `servers` they shared no room with before:
    /// each gets an `m.device_list_update` per device (as Synapse sends), so that it learns of
    /// the user's devices at once instead of at the first encrypted message. The updates carry
    /// the user's current stream position and no `prev_id`: a receiver that did not track the
    /// user fetches the whole list.
    pub(crate) async fn announce_devices_to(
        &self,
        user: &UserId,
        servers: BTreeSet<OwnedServerName>,
    ) -> Result<()> {
        if !self.federation.enabled() || servers.is_empty() {
            return Ok(());
        }
        let stream_id = self.db.get::<DeviceListStreamIds>(&user.to_owned())?.unwrap_or(0);
        for device in self.users.devices(user)? {
            let content =
                self.device_list_content(user, &device.device_id, device.display_name, stream_id)?;
            self.send_edu(servers.clone(), Edu::DeviceListUpdate(content)).await?;
        }
        Ok(())
    }

    /// A local user's cross-signing keys changed: other servers sharing a room get an
    /// `m.signing_key_update` with the public master and self-signing keys.
    pub(crate) async fn send_signing_key_update(&self, user: &UserId) -> Result<()> {
        if !self.federation.enabled() {
            return Ok(());
        }
        let servers = self.servers_sharing_rooms(user)?;
        if servers.is_empty() {
            return Ok(());
        }
        let mut content = SigningKeyUpdateContent::new(user.to_owned());
        content.master_key = self.cross_signing_key(user, "master")?.as_ref().map(raw).transpose()?;
        content.self_signing_key =
            self.cross_signing_key(user, "self_signing")?.as_ref().map(raw).transpose()?;
        self.send_edu(servers, Edu::SigningKeyUpdate(content)).await
    }

    /// Queues a local user's to-device messages for users of other servers, one
    /// `m.direct_to_device` per destination.
    pub(crate) async fn send_to_device_remote(
        &self,
        sender: &UserId,
        (event_type, message_id): (&str, OwnedTransactionId),
        messages: BTreeMap<OwnedUserId, BTreeMap<String, Value>>,
    ) -> Result<()> {
        // Without federation no remote device can be reached; the local recipients of the same
        // request still get theirs.
        if messages.is_empty() || !self.federation.enabled() {
            return Ok(());
        }
        let mut by_server: BTreeMap<OwnedServerName, DirectDeviceMessages> = BTreeMap::new();
        for (user, devices) in messages {
            let server = user.server_name().to_owned();
            let mut targets = BTreeMap::new();
            for (device, content) in devices {
                let target = if device == "*" {
                    DeviceIdOrAllDevices::AllDevices
                } else {
                    DeviceIdOrAllDevices::DeviceId(OwnedDeviceId::from(device.as_str()))
                };
                targets.insert(target, raw(&content)?);
            }
            by_server.entry(server).or_default().insert(user, targets);
        }
        for (server, messages) in by_server {
            let mut content = DirectDeviceContent::new(
                sender.to_owned(),
                ToDeviceEventType::from(event_type),
                message_id.clone(),
            );
            content.messages = messages;
            self.send_edu(BTreeSet::from([server]), Edu::DirectToDevice(content)).await?;
        }
        Ok(())
    }

    /// `m.presence` from another server.
    pub(super) async fn receive_presence(&self, origin: &ServerName, content: PresenceContent) -> Result<()> {
        for update in content.push.into_iter().take(MAX_PRESENCE_PER_EDU) {
            if from_origin(origin, &update.user_id).is_err() {
                continue;
            }
            let state = match update.presence {
                ruma::presence::PresenceState::Online => PresenceState::Online,
                ruma::presence::PresenceState::Unavailable => PresenceState::Unavailable,
                _ => PresenceState::Offline,
            };
            let presence = RemotePresence {
                state,
                status_msg: update.status_msg,
                last_active_ago_ms: update.last_active_ago.into(),
                currently_active: update.currently_active,
            };
            self.set_remote_presence(&update.user_id, presence).await?;
        }
        Ok(())
    }

    /// `m.device_list_update` or `m.signing_key_update` from another server. Remote keys are not
    /// cached here (every `/keys/query` asks their server), so nothing is invalidated: local
    /// users who share a room are told, through `device_lists.changed`, to ask again.
    pub(super) async fn receive_keys_changed(&self, origin: &ServerName, user: &UserId) -> Result<()> {
        from_origin(origin, user)?;
        let wake = self.local_users_sharing_rooms(user)?;
        if wake.is_empty() {
            return Ok(());
        }
        let entry = StreamEntry::DeviceKeys { user_id: user.to_owned() };
        self.streams.write(&self.db, wake, move |_, _| Ok(entry)).await?;
        Ok(())
    }

    /// `m.direct_to_device` from another server: delivered to the local recipients' inboxes
    /// once per `message_id`.
    pub(super) async fn receive_to_device(
        &self,
        origin: &ServerName,
        content: DirectDeviceContent,
    ) -> Result<()> {
        from_origin(origin, &content.sender)?;
        let seen = (content.sender.clone(), content.message_id.to_string());
        if self.db.contains::<RemoteToDeviceIds>(&seen)? {
            return Ok(());
        }
        let mut messages = BTreeMap::new();
        for (user, devices) in content.messages {
            if !self.users.is_local(&user) {
                continue;
            }
            let mut by_device = BTreeMap::new();
            for (device, message) in devices {
                let device = match device {
                    DeviceIdOrAllDevices::AllDevices => "*".to_owned(),
                    DeviceIdOrAllDevices::DeviceId(id) => id.to_string(),
                };
                let message: Value = serde_json::from_str(message.json().get())
                    .map_err(|e| Error::bad_json(format!("to-device content: {e}")))?;
                by_device.insert(device, message);
            }
            messages.insert(user, by_device);
        }
        let mark = move |batch: &mut Batch| -> Result<()> { Ok(batch.put::<RemoteToDeviceIds>(&seen, &())?) };
        self.deliver_to_device(&content.sender, &content.ev_type.to_string(), messages, mark).await
    }
}
