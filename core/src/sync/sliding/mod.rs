//! Simplified sliding sync (MSC4186), the sync of Element X and matrix-rust-sdk.
//!
//! A request names lists (windows onto the user's rooms sorted by recency, with filters),
//! rooms it subscribes to, and extensions. The server answers with each list's count, the rooms
//! in the windows that are new to the connection or changed since its last response, and what
//! each extension has. What the connection was already sent is kept in [`conn::Connections`].
//!
//! The long-poll follows `/sync`: subscribe to the notifier, read the published position,
//! compute; when there is nothing to say, wait for a position above the one read.

pub mod conn;
mod extensions;
mod lists;
mod room;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use ruma::{
    DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, UserId,
    api::client::sync::sync_events::v5::{self, request::Extensions},
};
use serde::Deserialize;

use self::conn::Snapshot;
use crate::{
    Error, Homeserver, Result,
    ephemeral::spaces::{Json, SlidingSnapshots},
    error::ErrorCode,
    sync::compute::Changes,
};

/// A sliding sync request, its lists' filters read in full (ruma's leave some out).
#[derive(Debug, Clone, Default)]
pub struct SlidingRequest {
    pub pos: Option<String>,
    /// Empty when the client names none: its one connection.
    pub conn_id: String,
    pub timeout: Duration,
    pub set_presence: Option<crate::presence::PresenceState>,
    pub lists: BTreeMap<String, ListRequest>,
    pub subscriptions: BTreeMap<OwnedRoomId, RoomConfig>,
    pub extensions: Extensions,
}

#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// Inclusive index ranges into the sorted list.
    pub ranges: Vec<(u64, u64)>,
    pub room: RoomConfig,
    pub filters: ListFilters,
}

/// What to send of each room: the state entries wanted and the timeline's length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomConfig {
    /// `(type, state_key)`; `*` matches anything, `$ME` the user, `$LAZY` (members) the
    /// senders of the timeline sent.
    pub required_state: Vec<(String, String)>,
    pub timeline_limit: usize,
}

impl RoomConfig {
    /// A room in several lists or subscriptions gets all they ask for together.
    fn merge(&mut self, other: &RoomConfig) {
        for entry in &other.required_state {
            if !self.required_state.contains(entry) {
                self.required_state.push(entry.clone());
            }
        }
        self.timeline_limit = self.timeline_limit.max(other.timeline_limit);
    }
}

/// A list's filters. Every one given must hold.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ListFilters {
    pub is_dm: Option<bool>,
    /// Rooms that are children (`m.space.child`) of any of these spaces.
    pub spaces: Option<Vec<OwnedRoomId>>,
    pub is_encrypted: Option<bool>,
    pub is_invite: Option<bool>,
    /// Room types (`null` for rooms without one), any of which a room must have.
    pub room_types: Option<Vec<Option<String>>>,
    #[serde(default)]
    pub not_room_types: Vec<Option<String>>,
    /// Tags (`m.tag`), one of which a room must carry.
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub not_tags: Vec<String>,
}

/// Timelines longer than this are cut to it.
const MAX_TIMELINE_LIMIT: usize = 100;
/// The longest a long-poll may wait.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// Bounds on what one request may ask for, far above what clients send (Element X: two
/// lists of one range, about fifteen state entries), so that the work stays bounded.
const MAX_LISTS: usize = 100;
const MAX_RANGES: usize = 100;
const MAX_REQUIRED_STATE: usize = 200;
const MAX_SUBSCRIPTIONS: usize = 1000;

impl SlidingRequest {
    /// The request with its timeouts and timelines clamped, or `M_INVALID_PARAM` when it asks
    /// for more lists, ranges, state entries or subscriptions than any client needs.
    pub fn checked(mut self) -> Result<Self> {
        let too_many =
            |what: &str, max: usize| Error::invalid_param(format!("At most {max} {what} per request"));
        if self.lists.len() > MAX_LISTS {
            return Err(too_many("lists", MAX_LISTS));
        }
        if self.subscriptions.len() > MAX_SUBSCRIPTIONS {
            return Err(too_many("room subscriptions", MAX_SUBSCRIPTIONS));
        }
        self.timeout = self.timeout.min(MAX_TIMEOUT);
        let configs = self.lists.values_mut().map(|l| &mut l.room).chain(self.subscriptions.values_mut());
        for config in configs {
            if config.required_state.len() > MAX_REQUIRED_STATE {
                return Err(too_many("required_state entries", MAX_REQUIRED_STATE));
            }
            config.timeline_limit = config.timeline_limit.min(MAX_TIMELINE_LIMIT);
        }
        if self.lists.values().any(|l| l.ranges.len() > MAX_RANGES) {
            return Err(too_many("ranges in a list", MAX_RANGES));
        }
        Ok(self)
    }
}

impl Homeserver {
    /// Answers a sliding sync request, waiting up to its timeout for something to report.
    pub async fn sliding_sync(
        &self,
        user: &UserId,
        device: &DeviceId,
        req: SlidingRequest,
    ) -> Result<v5::Response> {
        let req = Arc::new(req.checked()?);
        if let Some(state) = req.set_presence
            && state != crate::presence::PresenceState::Offline
        {
            self.set_presence(user, state, None).await?;
        }
        let (user, device) = (user.to_owned(), device.to_owned());
        let previous = self.resume_sliding(&user, &device, &req).await?;
        let slot = match req.pos {
            Some(_) => (previous.slot + 1) % conn::SHARED_SLOTS,
            None => 0,
        };
        self.presence_connection(&user, true);
        let result = self.sliding_inner(&user, &device, &req, previous).await;
        self.presence_connection(&user, false);
        let (mut response, mut snapshot) = result?;
        snapshot.slot = slot;
        let shared = self.shares_sliding().then(|| snapshot.clone());
        response.pos = self.sliding.store(&user, &device, &req.conn_id, snapshot);
        if let Some(snapshot) = shared {
            // Before the answer, since the client's next request may go to another process.
            let key = conn::shared_key(&user, &device, &req.conn_id, slot);
            let value = Json(conn::SharedSnapshot { pos: response.pos.clone(), snapshot });
            if let Err(error) = self.ephemeral.put_in::<SlidingSnapshots>(key, &value).await {
                tracing::warn!(%error, "cannot share a sliding sync snapshot: another process answers M_UNKNOWN_POS");
            }
        }
        Ok(response)
    }

    /// Whether sliding sync connections are kept where every process sharing the store finds
    /// them.
    fn shares_sliding(&self) -> bool {
        self.streams.is_shared() && self.ephemeral.is_shared()
    }

    /// The snapshot the request's `pos` names: this process's, or, on a shared store, the one
    /// another process left.
    async fn resume_sliding(
        &self,
        user: &OwnedUserId,
        device: &OwnedDeviceId,
        req: &SlidingRequest,
    ) -> Result<Arc<Snapshot>> {
        let unknown = || Error::new(ErrorCode::UnknownPos, "Unknown position: start a new connection");
        let local = self.sliding.resume(user, device, &req.conn_id, req.pos.as_deref());
        let (Some(pos), true, Err(_)) = (req.pos.as_deref(), self.shares_sliding(), &local) else {
            return local.map_err(|_| unknown());
        };
        // Another process answered it: look through the connection's slots. A store that
        // cannot be read is its error (retryable), not an unknown position.
        for slot in 0..conn::SHARED_SLOTS {
            let key = conn::shared_key(user, device, &req.conn_id, slot);
            if let Some(Json(shared)) = self.ephemeral.get_in::<SlidingSnapshots>(key).await?
                && shared.pos == pos
            {
                return Ok(Arc::new(shared.snapshot));
            }
        }
        Err(unknown())
    }

    async fn sliding_inner(
        &self,
        user: &ruma::OwnedUserId,
        device: &ruma::OwnedDeviceId,
        req: &Arc<SlidingRequest>,
        previous: Arc<Snapshot>,
    ) -> Result<(v5::Response, Snapshot)> {
        let mut rx = self.notifier.subscribe(user);
        let deadline = tokio::time::Instant::now() + req.timeout;
        let compute = |now: u64| {
            let this = self.clone();
            let (user, device, req, previous) = (user.clone(), device.clone(), req.clone(), previous.clone());
            crate::users::blocking(move || this.sliding_at(&user, &device, &req, &previous, now))
        };
        // The first read catches up with the store (a shared one); wake-ups carry the rest.
        let mut now = self.streams.read_position().await;
        loop {
            let (response, snapshot, empty) = compute(now).await?;
            if !empty || req.pos.is_none() || tokio::time::Instant::now() >= deadline {
                return Ok((response, snapshot));
            }
            let closing = self.notifier.closed();
            let woke = tokio::select! {
                woke = tokio::time::timeout_at(deadline, rx.wait_for(|p| *p > now)) => woke.is_ok_and(|r| r.is_ok()),
                () = closing => false,
            };
            if !woke {
                let (response, snapshot, _) = compute(self.streams.published()).await?;
                return Ok((response, snapshot));
            }
            now = self.streams.published();
        }
    }

    /// The response for the connection's window `(previous.stream, now]`, the snapshot it
    /// leaves the client with, and whether it says nothing new.
    fn sliding_at(
        &self,
        user: &UserId,
        device: &DeviceId,
        req: &SlidingRequest,
        previous: &Snapshot,
        now: u64,
    ) -> Result<(v5::Response, Snapshot, bool)> {
        // A new connection has no window: everything is sent as new.
        let since = (req.pos.is_some() && previous.stream > 0).then(|| previous.stream.min(now));
        let changes = match since {
            Some(since) => self.changes(user, since, now)?,
            None => Changes::default(),
        };
        let w = Window { user, device, since, changes: &changes, now };
        let mut snapshot = Snapshot { stream: now, ..previous.clone() };
        let selection = self.select_rooms(&w, req, previous, &mut snapshot)?;
        let mut response = v5::Response::new(String::new());
        let mut lists_changed = false;
        for (name, count) in &selection.counts {
            lists_changed |= previous.list_counts.get(name) != Some(count);
            let mut list = v5::response::List::default();
            list.count = ruma::UInt::try_from(*count as u64).unwrap_or(ruma::UInt::MAX);
            response.lists.insert(name.clone(), list);
        }
        snapshot.list_counts = selection.counts.clone();
        let mut initial_rooms = BTreeSet::new();
        for (room_id, config) in &selection.rooms {
            let candidate = &selection.candidates[room_id];
            let sent = previous.rooms.get(room_id);
            let (room, sent) = match self.sliding_room(&w, room_id, candidate, config, sent) {
                Ok(built) => built,
                // One room the user may not read (its history given up in a race) costs that
                // room, not the response; storage errors still fail it.
                Err(error) if error.code() == ErrorCode::Forbidden => {
                    tracing::warn!(%room_id, %error, "sliding sync: leaving out a room");
                    continue;
                }
                Err(error) => return Err(error),
            };
            snapshot.rooms.insert(room_id.clone(), sent);
            if let Some(room) = room {
                if room.initial == Some(true) {
                    initial_rooms.insert(room_id.clone());
                }
                response.rooms.insert(room_id.clone(), room);
            }
        }
        // A room the user no longer has a place in starts afresh if it comes back.
        snapshot.rooms.retain(|room, _| selection.candidates.contains_key(room));
        response.extensions = self.sliding_extensions(&w, req, &selection, previous, &initial_rooms)?;
        let empty = response.rooms.is_empty() && !lists_changed && extensions::is_empty(&response.extensions);
        Ok((response, snapshot, empty))
    }
}

/// The stretch of the stream one response covers, for one user's device.
pub(super) struct Window<'a> {
    pub user: &'a UserId,
    pub device: &'a DeviceId,
    /// The previous response's position; `None` for a new connection.
    pub since: Option<u64>,
    pub changes: &'a Changes,
    pub now: u64,
}

#[cfg(test)]
mod tests;
