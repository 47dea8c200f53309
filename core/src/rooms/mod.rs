//! Rooms: the event graph of each room, its state, and the local writes into it.
//!
//! Every local write goes through [`Rooms::append`] under the room's lock, so local state never
//! forks by a race: build the PDU on the current extremities, check it against the auth rules
//! of the room version and the current state, then persist event, timeline position, state
//! delta and stream entry in one atomic batch, and only then wake readers.

mod aliases;
pub mod append;
mod backfill;
mod create;
mod directory;
mod ephemeral;
mod hierarchy;
mod members;
mod membership;
mod notify;
mod outside;
mod power;
pub mod relations;
pub mod remote;
pub mod state;
mod timeline;
pub(crate) use timeline::servable;
pub mod view;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use hearth_storage::{
    Db, Direction,
    records::{PduRecord, RoomRecord},
    schema::{CurrentState, Pdus, RoomMembers, Rooms as RoomsTable, StateGroups, UserRooms},
};
use ruma::{
    EventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomVersionId, UserId,
    events::room::member::MembershipState, room::RoomType,
};

pub use self::{
    create::{CreateRoom, Preset},
    directory::{PublicRoom, RoomSummaryView},
    ephemeral::ReportSubject,
    hierarchy::{SpaceChild, valid_via},
    members::Members,
    membership::MembershipAction,
    power::muted_members_override,
    timeline::{Around, Page, PageDirection, TimelineKey, timeline_key},
    view::{Viewer, Window, event_passes, history_token, parse_history_token},
};
use crate::{
    Error, Result, events::Pdu, federation::Federation, keys::signing_key::SigningKey, sync::stream::Streams,
};

#[derive(Clone)]
pub struct Rooms {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    server_name: OwnedServerName,
    key: Arc<SigningKey>,
    streams: Arc<Streams>,
    default_version: RoomVersionId,
    locks: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    /// Held while a create event claims its room ID: since v12 the ID is the event's hash, and
    /// two identical requests in one millisecond would otherwise claim the same room.
    create_lock: Mutex<()>,
    next_state_group: AtomicU64,
    typing: ephemeral::Typing,
    federation: Arc<Federation>,
    state_lookups: state::LookupCache,
    members: members::MembersCache,
    events_persisted: std::sync::atomic::AtomicU64,
    /// Push rules for evaluation, and the push sender to wake after a write that queued
    /// notifications.
    push: crate::push::PushShared,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rooms").finish_non_exhaustive()
    }
}

/// Held while writing to a room; the shared lock is released before the local one.
pub(crate) struct RoomGuard {
    _shared: Option<Box<dyn hearth_storage::engine::LockGuard>>,
    _local: tokio::sync::OwnedMutexGuard<()>,
}

/// The record of an event outside the live timeline (an outlier with no state, a soft-failed
/// or backfilled event with the state group after it).
fn event_record(room_id: &RoomId, json: String, state_group: u64) -> PduRecord {
    PduRecord {
        room_id: room_id.to_owned(),
        json,
        stream_pos: None,
        state_group,
        redacted_by: None,
        txn: None,
        replaces_state: None,
        backfill: None,
        gap_before: false,
    }
}

/// An event kept outside any timeline: an auth or state event of a room being joined, or a
/// local user's membership in a room this server is not in.
fn outlier_record(room_id: &RoomId, json: String) -> PduRecord {
    event_record(room_id, json, 0)
}

/// A new timeline event's record: at `pos`, with the state group after it.
fn timeline_record(room_id: &RoomId, json: String, pos: u64, state_group: u64) -> PduRecord {
    PduRecord { stream_pos: Some(pos), ..event_record(room_id, json, state_group) }
}

/// Storage reads for ruma's callbacks (auth checks, state resolution), which can only answer
/// "not found": the first storage error is kept and handed back after the call, so a disk
/// error never passes for a missing event, which would reject a valid one for good.
#[derive(Default)]
pub(crate) struct Reads {
    failure: std::cell::RefCell<Option<Error>>,
}

impl Reads {
    /// The value of a read, or `None` (remembering the error) when it failed.
    pub(crate) fn keep<T>(&self, read: Result<Option<T>>) -> Option<T> {
        read.unwrap_or_else(|error| {
            self.failure.borrow_mut().get_or_insert(error);
            None
        })
    }

    /// `result`, unless a read failed meanwhile: then that failure.
    pub(crate) fn finish<T>(self, result: T) -> Result<T> {
        match self.failure.into_inner() {
            Some(error) => Err(error),
            None => Ok(result),
        }
    }
}

/// Adds an event to `batch` at its timeline position: record, timeline slot, stream entry.
fn put_timeline_event(
    db: &Db,
    batch: &mut hearth_storage::Batch,
    pdu: &Pdu,
    record: &PduRecord,
) -> Result<()> {
    let pos = record.stream_pos.ok_or_else(|| Error::internal("a timeline event needs a position"))?;
    let (room_id, event_id) = (record.room_id.clone(), pdu.event_id.clone());
    batch.put::<Pdus>(&event_id, record)?;
    relations::index(db, batch, pdu, record)?;
    batch.put::<hearth_storage::schema::RoomTimeline>(&(room_id.clone(), pos), &event_id)?;
    batch.stream_entry(pos, &hearth_storage::records::StreamEntry::RoomEvent { room_id, event_id })?;
    Ok(())
}

/// Room versions this server creates rooms in and joins: every stable one.
pub const CREATABLE_VERSIONS: &[RoomVersionId] = &[
    RoomVersionId::V1,
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

impl Rooms {
    pub fn new(
        db: Db,
        server_name: OwnedServerName,
        key: Arc<SigningKey>,
        streams: Arc<Streams>,
        default_version: RoomVersionId,
        federation: Arc<Federation>,
        push: crate::push::PushShared,
    ) -> Result<Self> {
        let last_group = db
            .range::<StateGroups>(
                std::ops::Bound::Unbounded,
                std::ops::Bound::Unbounded,
                Direction::Backward,
            )?
            .next()
            .transpose()?
            .map_or(0, |(id, _)| id);
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                server_name,
                key,
                streams,
                default_version,
                locks: Mutex::default(),
                create_lock: Mutex::default(),
                next_state_group: AtomicU64::new(last_group),
                typing: ephemeral::Typing::default(),
                federation,
                state_lookups: state::LookupCache::default(),
                members: members::MembersCache::default(),
                events_persisted: std::sync::atomic::AtomicU64::new(0),
                push,
            }),
        })
    }

    fn db(&self) -> &Db {
        &self.inner.db
    }

    /// One entry of a state group's state, through the lookup cache.
    pub(crate) fn state_lookup(
        &self,
        group: u64,
        kind: &str,
        key: &str,
    ) -> Result<Option<ruma::OwnedEventId>> {
        self.inner.state_lookups.lookup(self.db(), group, kind, key)
    }

    pub fn default_version(&self) -> &RoomVersionId {
        &self.inner.default_version
    }

    fn new_state_group_id(&self) -> Result<u64> {
        if let Some(store) = self.db().shared() {
            // Several processes make groups: the store counts them, from the highest one this
            // process found at start.
            let floor = self.inner.next_state_group.load(Ordering::Relaxed);
            return Ok(store.increment("state_group", floor)?);
        }
        Ok(self.inner.next_state_group.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Serializes local writes to one room: in this process, and on a shared store against
    /// every other process too (the room's state must not fork between them).
    async fn lock(&self, room_id: &RoomId) -> Result<RoomGuard> {
        let lock = {
            let mut locks = self.inner.locks.lock().unwrap_or_else(PoisonError::into_inner);
            locks.entry(room_id.to_owned()).or_default().clone()
        };
        let local = lock.lock_owned().await;
        let shared =
            crate::users::shared_lock(self.db(), hearth_storage::engine::LockKind::Room, room_id.to_string())
                .await?;
        Ok(RoomGuard { _shared: shared, _local: local })
    }

    pub fn room(&self, room_id: &RoomId) -> Result<Option<RoomRecord>> {
        Ok(self.db().get::<RoomsTable>(&room_id.to_owned())?)
    }

    pub fn exists(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self.db().contains::<RoomsTable>(&room_id.to_owned())?)
    }

    pub fn version(
        &self,
        room: &RoomRecord,
    ) -> Result<(RoomVersionId, ruma::room_version_rules::RoomVersionRules)> {
        let version = RoomVersionId::try_from(room.version.as_str()).map_err(Error::internal)?;
        let rules =
            version.rules().ok_or_else(|| Error::internal(format!("no rules for room version {version}")))?;
        Ok((version, rules))
    }

    pub fn pdu_record(&self, event_id: &EventId) -> Result<Option<PduRecord>> {
        Ok(self.db().get::<Pdus>(&event_id.to_owned())?)
    }

    pub fn pdu(&self, event_id: &EventId) -> Result<Option<Pdu>> {
        self.pdu_record(event_id)?.map(|r| Pdu::from_json(event_id.to_owned(), &r.json)).transpose()
    }

    /// The current state event for `(kind, key)`.
    pub fn current_state_event(&self, room_id: &RoomId, kind: &str, key: &str) -> Result<Option<Pdu>> {
        let id = self.db().get::<CurrentState>(&(room_id.to_owned(), kind.to_owned(), key.to_owned()))?;
        id.map(|id| self.pdu(&id)).transpose().map(Option::flatten)
    }

    /// The room's type (`m.space`, ...), from its create event: that field alone, so that what
    /// ruma's full type would refuse elsewhere in the content (a malformed predecessor) does
    /// not turn a space into a room.
    pub fn room_type(&self, room_id: &RoomId) -> Result<Option<RoomType>> {
        #[derive(serde::Deserialize)]
        struct TypeOnly {
            #[serde(rename = "type")]
            room_type: Option<RoomType>,
        }
        let Some(create) = self.current_state_event(room_id, "m.room.create", "")? else { return Ok(None) };
        Ok(create.content_as::<TypeOnly>().and_then(|c| c.room_type))
    }

    /// Every current state event of a room.
    pub fn current_state(&self, room_id: &RoomId) -> Result<Vec<Pdu>> {
        let mut out = Vec::new();
        for entry in self.db().scan_prefix::<CurrentState, _>(&room_id.to_owned())? {
            let (_, event_id) = entry?;
            if let Some(pdu) = self.pdu(&event_id)? {
                out.push(pdu);
            }
        }
        Ok(out)
    }

    /// A user's current membership in a room (`join`, `invite`, `leave`, `ban`, `knock`).
    pub fn membership(&self, room_id: &RoomId, user_id: &UserId) -> Result<Option<MembershipState>> {
        Ok(self.db().get::<RoomMembers>(&(room_id.to_owned(), user_id.to_owned()))?)
    }

    /// Members with the given membership (see [`Rooms::members`] for joined and invited ones
    /// without a copy).
    pub fn members_with(&self, room_id: &RoomId, membership: &MembershipState) -> Result<Vec<OwnedUserId>> {
        match membership {
            MembershipState::Join => return Ok(self.members(room_id)?.joined.clone()),
            MembershipState::Invite => return Ok(self.members(room_id)?.invited.clone()),
            _ => {}
        }
        let mut out = Vec::new();
        for entry in self.db().scan_prefix::<RoomMembers, _>(&room_id.to_owned())? {
            let ((_, user), m) = entry?;
            if m == *membership {
                out.push(user);
            }
        }
        Ok(out)
    }

    /// Rooms where a local user's latest membership is one of `memberships`.
    pub fn rooms_with_membership(
        &self,
        user_id: &UserId,
        memberships: &[MembershipState],
    ) -> Result<Vec<OwnedRoomId>> {
        let mut out = Vec::new();
        for entry in self.db().scan_prefix::<UserRooms, _>(&user_id.to_owned())? {
            let ((_, room), record) = entry?;
            if memberships.contains(&record.membership) {
                out.push(room);
            }
        }
        Ok(out)
    }

    /// Rooms a local user is joined to.
    pub fn joined_rooms(&self, user_id: &UserId) -> Result<Vec<OwnedRoomId>> {
        let mut out = Vec::new();
        for entry in self.db().scan_prefix::<UserRooms, _>(&user_id.to_owned())? {
            let ((_, room), record) = entry?;
            if record.membership == MembershipState::Join {
                out.push(room);
            }
        }
        Ok(out)
    }

    /// Rooms a local user is joined to that `other` is joined to as well.
    pub fn mutual_rooms(&self, user_id: &UserId, other: &UserId) -> Result<Vec<OwnedRoomId>> {
        let mut out = Vec::new();
        for room in self.joined_rooms(user_id)? {
            if self.members(&room)?.joined.binary_search_by(|m| m.as_str().cmp(other.as_str())).is_ok() {
                out.push(room);
            }
        }
        Ok(out)
    }

    /// The state group after an event.
    pub fn state_group_of(&self, event_id: &EventId) -> Result<Option<u64>> {
        Ok(self.pdu_record(event_id)?.map(|r| r.state_group))
    }

    /// The full state after an event, as PDUs.
    pub fn state_at(&self, event_id: &EventId) -> Result<Vec<Pdu>> {
        let group = self.state_group_of(event_id)?.ok_or_else(|| Error::not_found("Event not found"))?;
        let map = state::load(self.db(), group)?;
        map.values().filter_map(|id| self.pdu(id).transpose()).collect()
    }
}

#[cfg(test)]
mod remote_tests;
#[cfg(test)]
mod tests;
