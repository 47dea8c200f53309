//! The joined and invited members of each room, read once and shared until a membership
//! changes.
//!
//! A send into a room wakes its local members and queues the event for its other servers, so
//! without a cache every send reads the room's whole member list: in a room of 10,000 that
//! read was most of a send's cost. The cache follows storage, never leads it: a room's entry is
//! dropped after every committed batch that writes one of its `RoomMembers` rows (all of them go
//! through [`Rooms::commit`]), and a reader only stores what it read if no such write landed
//! since it began reading (a per-room generation), so a slow reader cannot put back a list
//! that a write has already replaced.

use ruma::events::room::member::MembershipState;
use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex, PoisonError},
};

use hearth_storage::{Batch, schema::RoomMembers};
use ruma::{OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, ServerName, UserId};

use super::Rooms;
use crate::Result;

/// Cached members across all rooms before the cache starts over (about 60 bytes each).
const MAX_CACHED_MEMBERS: usize = 500_000;
/// Rooms with an entry (a list or only a generation) before the cache starts over.
const MAX_ROOMS: usize = 100_000;

/// A room's members, as of one committed state of storage.
#[derive(Debug, Default)]
pub struct Members {
    /// Every joined member, sorted.
    pub joined: Vec<OwnedUserId>,
    /// Every invited member, sorted.
    pub invited: Vec<OwnedUserId>,
    /// The joined members of this server, sorted: the ones whose readers an event wakes.
    pub local: Arc<[OwnedUserId]>,
    /// The other servers with a joined member, leaving out names no request could reach (a
    /// member whose server is outside the grammar would only fill a queue that never drains).
    pub servers: BTreeSet<OwnedServerName>,
    /// Display names of local members, read when first asked for (push rules match them).
    /// Filled only after this list was read, and the list is dropped by any membership write,
    /// so a name kept here is never older than the last member event.
    names: Mutex<HashMap<OwnedUserId, Option<Arc<str>>>>,
}

impl Members {
    fn new(mut joined: Vec<OwnedUserId>, mut invited: Vec<OwnedUserId>, own: &ServerName) -> Self {
        // Storage yields them in key order, which is this order; sorting sorted input is linear.
        joined.sort();
        invited.sort();
        let local: Arc<[OwnedUserId]> = joined.iter().filter(|u| u.server_name() == own).cloned().collect();
        let servers = joined
            .iter()
            .map(|u| u.server_name())
            .filter(|s| *s != own && crate::server_name::is_valid_server_name(s.as_str()))
            .map(ToOwned::to_owned)
            .collect();
        Self { joined, invited, local, servers, names: Mutex::default() }
    }

    fn size(&self) -> usize {
        self.joined.len() + self.invited.len()
    }
}

#[derive(Debug, Default)]
pub(super) struct MembersCache {
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    rooms: HashMap<OwnedRoomId, Slot>,
    /// Gives each change its own generation, so a slot dropped and made again never repeats
    /// one that a reader still holds.
    next_generation: u64,
    cached_members: usize,
}

#[derive(Debug)]
struct Slot {
    generation: u64,
    members: Option<Arc<Members>>,
}

impl CacheState {
    fn fresh_generation(&mut self) -> u64 {
        self.next_generation += 1;
        self.next_generation
    }

    fn clear(&mut self) {
        self.rooms.clear();
        self.cached_members = 0;
    }
}

impl MembersCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached list, or the generation a reader must hand back to store what it reads.
    fn get(&self, room_id: &RoomId) -> std::result::Result<Arc<Members>, u64> {
        let mut state = self.lock();
        if let Some(slot) = state.rooms.get(room_id) {
            return slot.members.clone().ok_or(slot.generation);
        }
        if state.rooms.len() >= MAX_ROOMS {
            state.clear();
        }
        let generation = state.fresh_generation();
        state.rooms.insert(room_id.to_owned(), Slot { generation, members: None });
        Err(generation)
    }

    fn store(&self, room_id: &RoomId, generation: u64, members: &Arc<Members>) {
        let mut state = self.lock();
        let CacheState { rooms, cached_members, .. } = &mut *state;
        let Some(slot) = rooms.get_mut(room_id) else { return };
        if slot.generation != generation || slot.members.is_some() {
            return;
        }
        *cached_members += members.size();
        slot.members = Some(members.clone());
        if *cached_members > MAX_CACHED_MEMBERS {
            state.clear();
        }
    }

    /// Forgets the rooms a committed batch changed the members of.
    fn forget(&self, rooms: impl IntoIterator<Item = OwnedRoomId>) {
        let mut state = self.lock();
        for room_id in rooms {
            let generation = state.fresh_generation();
            let CacheState { rooms, cached_members, .. } = &mut *state;
            // No reader holds a generation for a room without a slot.
            if let Some(slot) = rooms.get_mut(&room_id) {
                if let Some(old) = slot.members.take() {
                    *cached_members -= old.size();
                }
                slot.generation = generation;
            }
        }
    }
}

impl Rooms {
    /// Events written to storage since this process started (local and from other servers).
    pub fn events_persisted(&self) -> u64 {
        self.inner.events_persisted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drops what is cached of a room whose rows were removed (an admin's purge).
    pub(crate) fn forget_cached(&self, room_id: &RoomId) {
        self.inner.members.forget([room_id.to_owned()]);
    }

    /// The room's joined members (local and remote), their servers, and its invitees.
    pub fn members(&self, room_id: &RoomId) -> Result<Arc<Members>> {
        // Another process sharing the store may change the members at any time, and the
        // cache only hears of this process's writes: read them each time.
        if self.db().shared().is_some() {
            return self.load_members(room_id).map(Arc::new);
        }
        let cache = &self.inner.members;
        let generation = match cache.get(room_id) {
            Ok(members) => return Ok(members),
            Err(generation) => generation,
        };
        let members = Arc::new(self.load_members(room_id)?);
        cache.store(room_id, generation, &members);
        Ok(members)
    }

    fn load_members(&self, room_id: &RoomId) -> Result<Members> {
        let (mut joined, mut invited) = (Vec::new(), Vec::new());
        for entry in self.db().scan_prefix::<RoomMembers, _>(&room_id.to_owned())? {
            let ((_, user), membership) = entry?;
            match membership {
                MembershipState::Join => joined.push(user),
                MembershipState::Invite => invited.push(user),
                _ => {}
            }
        }
        Ok(Members::new(joined, invited, &self.inner.server_name))
    }

    /// A member's display name in a room, from their current member event (none when empty).
    pub fn member_display_name(&self, room_id: &RoomId, user: &UserId) -> Result<Option<String>> {
        let member = self.current_state_event(room_id, "m.room.member", user.as_str())?;
        Ok(member.and_then(|event| event.content_str("displayname")).filter(|name| !name.is_empty()))
    }

    /// A member's display name in the room, cached with the room's members.
    pub(crate) fn display_name(
        &self,
        members: &Members,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Option<Arc<str>>> {
        if let Some(name) = members.names.lock().unwrap_or_else(PoisonError::into_inner).get(user) {
            return Ok(name.clone());
        }
        let name = self.member_display_name(room_id, user)?.map(Arc::<str>::from);
        members.names.lock().unwrap_or_else(PoisonError::into_inner).insert(user.to_owned(), name.clone());
        Ok(name)
    }

    /// Whom an event wakes: the room's local members before it, and local users whose
    /// membership it changed. Shares the cached member list when that is all.
    pub(super) fn local_wake(
        &self,
        members: Arc<[OwnedUserId]>,
        targets: impl IntoIterator<Item = OwnedUserId>,
    ) -> Arc<[OwnedUserId]> {
        let own = &self.inner.server_name;
        let mut extra =
            targets.into_iter().filter(|u| u.server_name() == own && members.binary_search(u).is_err());
        match extra.next() {
            None => members,
            Some(first) => {
                let mut all: Vec<OwnedUserId> = members.iter().cloned().chain([first]).chain(extra).collect();
                all.sort();
                all.dedup();
                all.into()
            }
        }
    }

    /// Writes a batch of room data: every write that may touch `RoomMembers` goes through
    /// here, so the member cache follows it.
    pub(super) fn commit(&self, batch: Batch) -> Result<()> {
        let mut changed = BTreeSet::new();
        let mut undecodable = false;
        for key in batch.keys::<RoomMembers>() {
            match key {
                Ok((room_id, _)) => {
                    changed.insert(room_id);
                }
                Err(_) => undecodable = true,
            }
        }
        let queued_pushes = batch.keys::<hearth_storage::schema::PushQueue>().next().is_some();
        let events = batch.keys::<hearth_storage::schema::Pdus>().count();
        let written = self.db().write(batch);
        if written.is_ok() {
            self.inner.events_persisted.fetch_add(events as u64, std::sync::atomic::Ordering::Relaxed);
        }
        // Forgotten whether or not the write went through: a failed write may still have
        // landed in part of an engine, and forgetting costs one read.
        if undecodable {
            self.inner.members.lock().clear();
        } else {
            self.inner.members.forget(changed);
        }
        written?;
        if queued_pushes {
            self.inner.push.wake.notify_one();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ruma::{room_id, server_name, user_id};

    use super::*;

    fn joined(users: &[&str]) -> Arc<Members> {
        let joined = users.iter().map(|u| ruma::UserId::parse(*u).unwrap()).collect();
        Arc::new(Members::new(joined, Vec::new(), server_name!("here.example")))
    }

    #[test]
    fn splits_local_members_and_other_servers() {
        let j = joined(&["@a:here.example", "@b:there.example", "@c:there.example", "@d:here.example"]);
        assert_eq!(
            &*j.local,
            [user_id!("@a:here.example").to_owned(), user_id!("@d:here.example").to_owned()]
        );
        assert_eq!(j.servers.iter().map(|s| s.as_str()).collect::<Vec<_>>(), ["there.example"]);
    }

    #[test]
    fn a_reader_that_began_before_a_change_does_not_store_its_list() {
        let cache = MembersCache::default();
        let room = room_id!("!r:here.example");
        let generation = cache.get(room).unwrap_err();
        // A membership write commits while the reader is reading ...
        cache.forget([room.to_owned()]);
        // ... so what it read may be stale and is not kept.
        cache.store(room, generation, &joined(&["@a:here.example"]));
        let again = cache.get(room).unwrap_err();
        assert_ne!(again, generation);
        cache.store(room, again, &joined(&["@a:here.example", "@b:here.example"]));
        assert_eq!(cache.get(room).unwrap().joined.len(), 2);
        cache.forget([room.to_owned()]);
        assert!(cache.get(room).is_err(), "a change drops the list");
    }

    #[test]
    fn a_slot_dropped_by_a_reset_never_takes_a_stale_list() {
        let cache = MembersCache::default();
        let room = room_id!("!r:here.example");
        let generation = cache.get(room).unwrap_err();
        cache.lock().clear();
        cache.forget([room.to_owned()]);
        let newer = cache.get(room).unwrap_err();
        cache.store(room, generation, &joined(&["@a:here.example"]));
        assert!(cache.get(room).is_err(), "the old generation matches no slot");
        cache.store(room, newer, &joined(&["@a:here.example"]));
        assert!(cache.get(room).is_ok());
    }
}
