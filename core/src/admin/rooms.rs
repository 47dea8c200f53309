//! Rooms as admins see and handle them: listing with search and order, one room's details,
//! blocking, and deleting (every local member made to leave, aliases moved or removed, an
//! optional replacement room, and purging the room's data from storage).

use ruma::events::room::member::MembershipState;
use std::cmp::Ordering;

use hearth_storage::records::OutboxItem;
pub use hearth_storage::records::{ReportRecord, RoomDeletionRecord};
use hearth_storage::{
    Batch,
    schema::{
        Aliases, BlockedRooms, CurrentState, FederationOutbox, NetworkRooms, Pdus, PublicRooms, Receipts,
        Reports, RoomAccountData, RoomAliases, RoomBackfill, RoomDeletions, RoomMembers, RoomTimeline,
        Rooms as RoomsTable, ThreadActivity, ThreadRoots, UserRooms,
    },
};
use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::json;

use super::Page;
use crate::{
    Error, Homeserver, Result,
    events::NewEvent,
    rooms::{CreateRoom, Preset, PublicRoom},
};

/// One room with what the admin API shows of it.
#[derive(Debug, Clone)]
pub struct AdminRoom {
    pub summary: PublicRoom,
    pub joined_local_members: u64,
    /// Devices of the local members, which each get the room's encrypted messages.
    pub joined_local_devices: u64,
    pub version: String,
    pub creator: Option<OwnedUserId>,
    pub encryption: Option<String>,
    pub federatable: bool,
    pub public: bool,
    pub guest_access: Option<String>,
    pub history_visibility: Option<String>,
    pub state_events: u64,
    pub tombstone: Option<String>,
}

/// What `GET /_synapse/admin/v1/rooms` may sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoomOrder {
    #[default]
    Name,
    CanonicalAlias,
    JoinedMembers,
    JoinedLocalMembers,
    Version,
    Creator,
    Encryption,
    Federatable,
    Public,
    JoinRules,
    GuestAccess,
    HistoryVisibility,
    StateEvents,
}

impl RoomOrder {
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "name" | "alphabetical" => Self::Name,
            "canonical_alias" => Self::CanonicalAlias,
            "joined_members" | "size" => Self::JoinedMembers,
            "joined_local_members" => Self::JoinedLocalMembers,
            "version" => Self::Version,
            "creator" => Self::Creator,
            "encryption" => Self::Encryption,
            "federatable" => Self::Federatable,
            "public" => Self::Public,
            "join_rules" => Self::JoinRules,
            "guest_access" => Self::GuestAccess,
            "history_visibility" => Self::HistoryVisibility,
            "state_events" => Self::StateEvents,
            _ => return None,
        })
    }

    /// Counts sort largest first unless reversed, as Synapse sorts them.
    fn descending(self) -> bool {
        matches!(self, Self::JoinedMembers | Self::JoinedLocalMembers | Self::Version | Self::StateEvents)
    }

    fn compare(self, a: &AdminRoom, b: &AdminRoom) -> Ordering {
        match self {
            Self::Name => a.summary.name.cmp(&b.summary.name),
            Self::CanonicalAlias => a.summary.canonical_alias.cmp(&b.summary.canonical_alias),
            Self::JoinedMembers => a.summary.joined_members.cmp(&b.summary.joined_members),
            Self::JoinedLocalMembers => a.joined_local_members.cmp(&b.joined_local_members),
            Self::Version => a.version.cmp(&b.version),
            Self::Creator => a.creator.cmp(&b.creator),
            Self::Encryption => a.encryption.cmp(&b.encryption),
            Self::Federatable => a.federatable.cmp(&b.federatable),
            Self::Public => a.public.cmp(&b.public),
            Self::JoinRules => a.summary.join_rule.cmp(&b.summary.join_rule),
            Self::GuestAccess => a.guest_access.cmp(&b.guest_access),
            Self::HistoryVisibility => a.history_visibility.cmp(&b.history_visibility),
            Self::StateEvents => a.state_events.cmp(&b.state_events),
        }
    }
}

/// The filters of the room list.
#[derive(Debug, Clone, Default)]
pub struct RoomFilter {
    /// A substring of the name or canonical alias (case-insensitive), or the exact room ID.
    pub search_term: Option<String>,
    pub public_rooms: Option<bool>,
    pub empty_rooms: Option<bool>,
    pub order: RoomOrder,
    pub backwards: bool,
}

impl RoomFilter {
    fn keeps(&self, room: &AdminRoom) -> bool {
        let matches = self.search_term.as_ref().is_none_or(|term| {
            let term = term.to_lowercase();
            let contains = |v: &Option<String>| v.as_ref().is_some_and(|v| v.to_lowercase().contains(&term));
            contains(&room.summary.name)
                || contains(&room.summary.canonical_alias)
                || room.summary.room_id.as_str() == term
        });
        matches
            && self.public_rooms.is_none_or(|p| room.public == p)
            && self.empty_rooms.is_none_or(|e| (room.summary.joined_members == 0) == e)
    }
}

/// What deleting a room should do besides making local members leave.
#[derive(Debug, Clone)]
pub struct RoomDeletion {
    /// When set, this local user creates a room the members are moved to, with `message`.
    pub new_room_user_id: Option<OwnedUserId>,
    pub room_name: String,
    pub message: String,
    pub block: bool,
    pub purge: bool,
    /// Purge even when some local member could not be made to leave.
    pub force_purge: bool,
}

impl Default for RoomDeletion {
    fn default() -> Self {
        Self {
            new_room_user_id: None,
            room_name: "Content Violation Notification".to_owned(),
            message: "Sharing illegal content on this server is not permitted and rooms in violation will be blocked."
                .to_owned(),
            block: false,
            purge: true,
            force_purge: false,
        }
    }
}

/// What a deletion did (Synapse's `shutdown_room` object).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ShutdownResult {
    pub kicked_users: Vec<OwnedUserId>,
    pub failed_to_kick_users: Vec<OwnedUserId>,
    pub local_aliases: Vec<OwnedRoomAliasId>,
    pub new_room_id: Option<OwnedRoomId>,
}

impl Homeserver {
    /// A room this server has, with its statistics.
    pub fn admin_room(&self, room_id: &RoomId) -> Result<Option<AdminRoom>> {
        let Some(record) = self.rooms.room(room_id)? else { return Ok(None) };
        let state = self.rooms.current_state(room_id)?;
        let field = |kind: &str, name: &str| {
            state
                .iter()
                .find(|p| p.kind.to_string() == kind && p.state_key.as_deref() == Some(""))
                .and_then(|p| p.content_str(name))
        };
        let create = state.iter().find(|p| p.kind.to_string() == "m.room.create");
        let mut joined_local_devices = 0;
        for member in self.rooms.members(room_id)?.local.iter() {
            joined_local_devices += self.users.devices(member)?.len() as u64;
        }
        Ok(Some(AdminRoom {
            joined_local_devices,
            summary: self.rooms.summary(room_id)?,
            joined_local_members: record.joined_count,
            version: record.version,
            creator: create.map(|c| c.sender.clone()),
            encryption: self.rooms.encryption(room_id)?.map(|a| a.to_string()),
            federatable: create.is_none_or(|c| c.content_json()["m.federate"].as_bool() != Some(false)),
            public: self.rooms.is_published(room_id)?,
            guest_access: field("m.room.guest_access", "guest_access"),
            history_visibility: field("m.room.history_visibility", "history_visibility"),
            state_events: u64::try_from(state.len()).unwrap_or(u64::MAX),
            tombstone: field("m.room.tombstone", "replacement_room"),
        }))
    }

    /// A page of rooms, and how many pass the filter.
    pub fn admin_rooms(&self, filter: &RoomFilter, page: Page) -> Result<(Vec<AdminRoom>, usize)> {
        let mut rooms = Vec::new();
        for entry in self.db.scan_prefix_all::<RoomsTable>()? {
            let (room_id, _) = entry?;
            match self.admin_room(&room_id) {
                Ok(Some(room)) if filter.keeps(&room) => rooms.push(room),
                Ok(_) => {}
                // One room whose state cannot be read must not hide the others from an admin.
                Err(error) => tracing::warn!(%error, %room_id, "a room could not be listed"),
            }
        }
        let reverse = filter.order.descending() != filter.backwards;
        rooms.sort_by(|a, b| {
            let order = filter.order.compare(a, b).then_with(|| a.summary.room_id.cmp(&b.summary.room_id));
            if reverse { order.reverse() } else { order }
        });
        let total = rooms.len();
        Ok((page.apply(rooms), total))
    }

    /// Who blocked a room, if it is blocked.
    pub fn room_blocked_by(&self, room_id: &RoomId) -> Result<Option<OwnedUserId>> {
        Ok(self.db.get::<BlockedRooms>(&room_id.to_owned())?)
    }

    /// Blocks or unblocks a room; it need not be known here.
    pub fn set_room_blocked(&self, room_id: &RoomId, by: Option<&UserId>) -> Result<()> {
        match by {
            Some(admin) => self.db.put::<BlockedRooms>(&room_id.to_owned(), &admin.to_owned())?,
            None => self.db.delete::<BlockedRooms>(&room_id.to_owned())?,
        }
        Ok(())
    }

    /// Refuses local joins and invites into a blocked room.
    pub fn check_room_not_blocked(&self, room_id: &RoomId) -> Result<()> {
        if self.room_blocked_by(room_id)?.is_some() {
            return Err(Error::forbidden("This room has been blocked on this server"));
        }
        Ok(())
    }

    /// Deletes a room: blocks it if asked, moves its local members to a new room if asked,
    /// makes every local member leave and forget it, removes its local aliases and directory
    /// entries, and purges its data unless told not to.
    pub async fn admin_delete_room(
        &self,
        room_id: &RoomId,
        opts: &RoomDeletion,
        acting: &UserId,
    ) -> Result<ShutdownResult> {
        if let Some(owner) = &opts.new_room_user_id
            && owner.server_name() != self.server_name()
        {
            return Err(Error::bad_request(format!("User must be our own: {owner}")));
        }
        if opts.block {
            self.set_room_blocked(room_id, Some(acting))?;
        }
        let mut result = ShutdownResult::default();
        let local: Vec<(OwnedUserId, MembershipState)> = self
            .db
            .scan_prefix::<RoomMembers, _>(&room_id.to_owned())?
            .filter_map(|entry| match entry {
                Ok(((_, user), membership)) => (user.server_name() == self.server_name()
                    && matches!(
                        membership,
                        MembershipState::Join | MembershipState::Invite | MembershipState::Knock
                    ))
                .then_some(Ok((user, membership))),
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<_, _>>()?;

        if let Some(owner) = &opts.new_room_user_id {
            let profile = self.users.member_content(owner).await?;
            let mut create = CreateRoom::new();
            create.preset = Some(Preset::PublicChat);
            create.name = Some(opts.room_name.clone());
            create.power_level_override = Some(crate::rooms::muted_members_override());
            let new_room = self.rooms.create_room(owner, profile, create).await?;
            let text = json!({"msgtype": "m.text", "body": opts.message});
            self.rooms
                .append(&new_room, owner, NewEvent::message("m.room.message".into(), text), None)
                .await?;
            result.new_room_id = Some(new_room);
        }

        for (user, membership) in local {
            if let Some(new_room) = &result.new_room_id
                && membership == MembershipState::Join
            {
                let profile = self.users.member_content(&user).await?;
                if let Err(error) = self.rooms.join(new_room, &user, profile, None).await {
                    tracing::warn!(%error, %user, "could not move a member into the replacement room");
                }
            }
            let left = match self.leave_room(room_id, &user, None).await {
                Ok(()) => self.rooms.forget(room_id, &user).await,
                Err(e) => Err(e),
            };
            match left {
                Ok(()) => result.kicked_users.push(user),
                Err(error) => {
                    tracing::warn!(%error, %user, %room_id, "could not remove a member from a deleted room");
                    result.failed_to_kick_users.push(user);
                }
            }
        }

        for alias in self.rooms.local_aliases(room_id)? {
            self.rooms.delete_alias(&alias, acting, true).await?;
            if let Some(new_room) = &result.new_room_id
                && let Some(owner) = &opts.new_room_user_id
            {
                self.rooms.create_alias(&alias, new_room, owner).await?;
            }
            result.local_aliases.push(alias);
        }
        self.rooms.set_published(room_id, false).await?;

        if opts.purge {
            if !result.failed_to_kick_users.is_empty() && !opts.force_purge {
                return Err(Error::bad_request("Users are still joined to this room"));
            }
            self.purge_room(room_id).await?;
        }
        tracing::info!(%room_id, admin = %acting, kicked = result.kicked_users.len(), purge = opts.purge, "room deleted");
        Ok(result)
    }

    /// Starts deleting a room in the background; the delete ID to follow it by. One deletion
    /// of a room at a time.
    pub fn start_room_deletion(
        &self,
        room_id: &RoomId,
        opts: RoomDeletion,
        acting: &UserId,
    ) -> Result<String> {
        if let Some(owner) = &opts.new_room_user_id
            && owner.server_name() != self.server_name()
        {
            return Err(Error::bad_request(format!("User must be our own: {owner}")));
        }
        let running = self
            .room_deletions(room_id)?
            .iter()
            .any(|(_, r)| matches!(r.status.as_str(), "scheduled" | "active"));
        if running {
            return Err(Error::bad_request(format!("Purge already in progress for {room_id}")));
        }
        let delete_id = crate::util::random_string(16);
        let owned_room = room_id.to_owned();
        let record =
            move |status: &str, result: Option<&ShutdownResult>, error: Option<String>| RoomDeletionRecord {
                room_id: owned_room.clone(),
                status: status.to_owned(),
                result: result.and_then(|r| serde_json::to_value(r).ok()),
                error,
                ts: crate::util::now_ms(),
            };
        self.db.put::<RoomDeletions>(&delete_id, &record("active", None, None))?;
        let (hs, id, room, acting) = (self.clone(), delete_id.clone(), room_id.to_owned(), acting.to_owned());
        tokio::spawn(async move {
            let done = match hs.admin_delete_room(&room, &opts, &acting).await {
                Ok(result) => record("complete", Some(&result), None),
                Err(error) => {
                    tracing::warn!(%error, %room, "a room deletion failed");
                    record("failed", None, Some(error.to_string()))
                }
            };
            if let Err(error) = hs.db.put::<RoomDeletions>(&id, &done) {
                tracing::error!(%error, "could not record the outcome of a room deletion");
            }
        });
        Ok(delete_id)
    }

    /// Marks deletions a stopped process left running as failed (at start-up): nothing runs
    /// them any more, and a new deletion of their room must not be refused.
    pub fn fail_interrupted_deletions(&self) -> Result<()> {
        for entry in self.db.scan_prefix_all::<RoomDeletions>()? {
            let (id, mut record) = entry?;
            if matches!(record.status.as_str(), "scheduled" | "active") {
                record.status = "failed".to_owned();
                record.error = Some("interrupted by a restart".to_owned());
                self.db.put::<RoomDeletions>(&id, &record)?;
            }
        }
        Ok(())
    }

    /// The deletions of a room, oldest first.
    pub fn room_deletions(&self, room_id: &RoomId) -> Result<Vec<(String, RoomDeletionRecord)>> {
        let mut out = Vec::new();
        for entry in self.db.scan_prefix_all::<RoomDeletions>()? {
            let (id, record) = entry?;
            if record.room_id == room_id {
                out.push((id, record));
            }
        }
        out.sort_by_key(|(_, r)| r.ts);
        Ok(out)
    }

    pub fn room_deletion(&self, delete_id: &str) -> Result<Option<RoomDeletionRecord>> {
        Ok(self.db.get::<RoomDeletions>(&delete_id.to_owned())?)
    }

    /// Rooms with a joined member on `server`.
    pub fn rooms_shared_with(&self, server: &ruma::ServerName) -> Result<Vec<OwnedRoomId>> {
        let mut out = Vec::new();
        for entry in self.db.scan_prefix_all::<RoomsTable>()? {
            let (room_id, _) = entry?;
            if self.rooms.members(&room_id)?.servers.contains(server) {
                out.push(room_id);
            }
        }
        Ok(out)
    }

    /// The media a room's events point at (`url` and `info.thumbnail_url` of their content),
    /// as `mxc://` URIs.
    pub fn media_in_room(&self, room_id: &RoomId) -> Result<Vec<String>> {
        let mut out = std::collections::BTreeSet::new();
        for entry in self.db.scan_prefix::<RoomTimeline, _>(&room_id.to_owned())? {
            let (_, event_id) = entry?;
            let Some(pdu) = self.rooms.pdu(&event_id)? else { continue };
            let content = pdu.content_json();
            for url in [&content["url"], &content["info"]["thumbnail_url"]] {
                if let Some(url) = url.as_str().filter(|u| u.starts_with("mxc://")) {
                    out.insert(url.to_owned());
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Reports of events, oldest first.
    pub fn event_reports(&self) -> Result<Vec<(u64, ReportRecord)>> {
        let mut out = Vec::new();
        for entry in self.db.scan_prefix_all::<Reports>()? {
            let (id, report) = entry?;
            if report.event_id.is_some() {
                out.push((id, report));
            }
        }
        Ok(out)
    }

    pub fn event_report(&self, id: u64) -> Result<Option<ReportRecord>> {
        Ok(self.db.get::<Reports>(&id)?.filter(|r| r.event_id.is_some()))
    }

    /// Deletes a report of an event; false when there is none.
    pub fn delete_event_report(&self, id: u64) -> Result<bool> {
        if self.event_report(id)?.is_none() {
            return Ok(false);
        }
        self.db.delete::<Reports>(&id)?;
        Ok(true)
    }

    /// Removes a room's events, state, memberships, receipts and listings from storage. What
    /// stays: the global stream's entries (readers skip events that are gone), state groups,
    /// which are shared by ID and cost little, and events still queued for other servers (the
    /// members' leaves, which the outbox reads when it sends them).
    async fn purge_room(&self, room_id: &RoomId) -> Result<()> {
        let db = self.db.clone();
        let room = room_id.to_owned();
        crate::users::blocking(move || {
            let mut batch = Batch::new();
            let mut events = Vec::new();
            for entry in db.scan_prefix::<RoomTimeline, _>(&room)? {
                let (key, event_id) = entry?;
                batch.delete::<RoomTimeline>(&key);
                events.push(event_id);
            }
            for entry in db.scan_prefix::<RoomBackfill, _>(&room)? {
                let (key, event_id) = entry?;
                batch.delete::<RoomBackfill>(&key);
                events.push(event_id);
            }
            for entry in db.scan_prefix::<CurrentState, _>(&room)? {
                let (key, event_id) = entry?;
                batch.delete::<CurrentState>(&key);
                events.push(event_id);
            }
            let mut queued = std::collections::BTreeSet::new();
            for entry in db.scan_prefix_all::<FederationOutbox>()? {
                if let (_, OutboxItem::Pdu { event_id }) = entry? {
                    queued.insert(event_id);
                }
            }
            for event_id in events.into_iter().filter(|e| !queued.contains(e)) {
                batch.delete::<Pdus>(&event_id);
            }
            for entry in db.scan_prefix::<RoomMembers, _>(&room)? {
                let ((_, user), _) = entry?;
                batch.delete::<RoomMembers>(&(room.clone(), user.clone()));
                batch.delete::<UserRooms>(&(user.clone(), room.clone()));
                for data in db.scan_prefix::<RoomAccountData, _>(&(user.clone(), room.clone()))? {
                    let (key, _) = data?;
                    batch.delete::<RoomAccountData>(&key);
                }
            }
            for entry in db.scan_prefix::<Receipts, _>(&room)? {
                let (key, _) = entry?;
                batch.delete::<Receipts>(&key);
            }
            for entry in db.scan_prefix::<ThreadRoots, _>(&room)? {
                let (key, _) = entry?;
                batch.delete::<ThreadRoots>(&key);
            }
            for entry in db.scan_prefix::<ThreadActivity, _>(&room)? {
                let (key, _) = entry?;
                batch.delete::<ThreadActivity>(&key);
            }
            for entry in db.scan_prefix::<RoomAliases, _>(&room)? {
                let ((_, alias), _) = entry?;
                batch.delete::<RoomAliases>(&(room.clone(), alias.clone()));
                batch.delete::<Aliases>(&alias);
            }
            for entry in db.scan_prefix_all::<NetworkRooms>()? {
                let (key, ()) = entry?;
                if key.1 == room {
                    batch.delete::<NetworkRooms>(&key);
                }
            }
            batch.delete::<PublicRooms>(&room);
            batch.delete::<RoomsTable>(&room);
            db.write(batch)?;
            Ok(())
        })
        .await?;
        self.rooms.forget_cached(room_id);
        tracing::info!(%room_id, "room purged");
        Ok(())
    }
}
