//! `/sync`: what changed for one user between two stream positions, in the response shape of
//! the Client-Server API, and the long-poll around it.
//!
//! Order matters: subscribe to the notifier, then read the published position, then compute;
//! if there is nothing, wait for a position above the one read and compute again. A write
//! published in between is never missed, because the wake-up waits in the channel.

use ruma::events::room::member::MembershipState;
use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Bound,
    time::Duration,
};

use hearth_storage::{
    Direction,
    records::{MembershipRecord, StreamEntry},
    schema::{GlobalAccountData, RoomAccountData, StreamLog, UserRooms},
};
use ruma::{
    DeviceId, OwnedRoomId, OwnedUserId, RoomId, UserId, api::client::filter::FilterDefinition,
    events::TimelineEventType,
};
use serde_json::{Map, Value, json};

use crate::{
    Homeserver, Result,
    events::Pdu,
    rooms::{
        PageDirection, Window, event_passes,
        view::type_matches,
        view::{position_token, sync_token},
    },
};

/// A /sync request after its filter has been resolved.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub since: Option<u64>,
    pub timeout: Duration,
    pub full_state: bool,
    pub use_state_after: bool,
    pub filter: FilterDefinition,
    /// `set_presence`: what this sync says about the user (`None`: leave it as it is).
    pub set_presence: Option<crate::presence::PresenceState>,
}

/// Timeline events per room when the filter does not say.
const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// Invite and knock state shown before a user is in a room.
pub(crate) const STRIPPED_STATE: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

fn events(list: Vec<Value>) -> Value {
    let mut object = Map::new();
    object.insert("events".to_owned(), Value::Array(list));
    Value::Object(object)
}

/// What changed in the stream between two positions, as seen by one user.
#[derive(Default)]
pub(super) struct Changes {
    pub rooms: BTreeSet<OwnedRoomId>,
    /// Rooms with new receipts or typing.
    pub ephemeral: BTreeSet<OwnedRoomId>,
    pub receipts: BTreeSet<OwnedRoomId>,
    /// Rooms where the user's own receipts moved (their unread counts with them).
    pub own_receipts: BTreeSet<OwnedRoomId>,
    pub typing: BTreeSet<OwnedRoomId>,
    pub global_account_data: bool,
    pub room_account_data: BTreeSet<OwnedRoomId>,
    pub keys_changed: BTreeSet<OwnedUserId>,
    pub presence: BTreeSet<OwnedUserId>,
}

impl Homeserver {
    /// Answers a /sync, waiting up to the timeout for something to report.
    pub async fn sync(&self, user: &UserId, device: &DeviceId, req: &SyncRequest) -> Result<Value> {
        if let Some(state) = req.set_presence
            && state != crate::presence::PresenceState::Offline
        {
            // "offline" on /sync means "this client is not active", not "mark me offline".
            self.set_presence(user, state, None).await?;
        }
        self.presence_connection(user, true);
        let result = self.sync_inner(user, device, req).await;
        self.presence_connection(user, false);
        result
    }

    async fn sync_inner(&self, user: &UserId, device: &DeviceId, req: &SyncRequest) -> Result<Value> {
        let mut rx = self.notifier.subscribe(user);
        let deadline = tokio::time::Instant::now() + req.timeout;
        loop {
            let now = self.streams.published();
            let (response, empty) = {
                let this = self.clone();
                let (user, device, req) = (user.to_owned(), device.to_owned(), req.clone());
                crate::users::blocking(move || this.sync_at(&user, &device, &req, now)).await?
            };
            let initial = req.since.is_none() || req.full_state;
            if !empty || initial || tokio::time::Instant::now() >= deadline {
                return Ok(response);
            }
            // Nothing yet: wait for a wake-up above what was just read, then compute again.
            let since = now;
            // Reduced to a bool at once: the channel's read guard must not live across an await.
            let closing = self.notifier.closed();
            let woke = tokio::select! {
                woke = tokio::time::timeout_at(deadline, rx.wait_for(|p| *p > since)) => woke.is_ok_and(|r| r.is_ok()),
                // Shutting down: answer now with what there is, as at the timeout.
                () = closing => false,
            };
            if !woke {
                let now = self.streams.published();
                let this = self.clone();
                let (user, device, req) = (user.to_owned(), device.to_owned(), req.clone());
                return Ok(crate::users::blocking(move || this.sync_at(&user, &device, &req, now)).await?.0);
            }
        }
    }

    /// The response for the window `(since, now]`, and whether it carries nothing.
    fn sync_at(
        &self,
        user: &UserId,
        device: &DeviceId,
        req: &SyncRequest,
        now: u64,
    ) -> Result<(Value, bool)> {
        // A token from a future the server does not know (a restored database) reads as now.
        let since = req.since.map(|s| s.min(now));
        // To-device messages beyond one response's share wait for the next, and the whole
        // response stops before the first one left: its token acknowledges only what it carried.
        let (to_device, now) = self.to_device_messages(user, device, since, now)?;
        let initial = since.is_none() || req.full_state;
        let changes = match since {
            Some(since) => self.changes(user, since, now)?,
            None => Changes::default(),
        };
        let filter = &req.filter;
        let memberships = self.user_memberships(user)?;
        // Invites from users this one ignores are never shown (the spec's "Ignoring Users").
        let ignored = self.account_data.ignored_users(user)?;
        let invited_by_ignored = |record: &MembershipRecord| -> Result<bool> {
            if ignored.is_empty() {
                return Ok(false);
            }
            let Some(own) = self.rooms.pdu_record(&record.event_id)? else { return Ok(false) };
            let pdu = Pdu::from_json(record.event_id.clone(), &own.json)?;
            Ok(ignored.contains(&pdu.sender))
        };
        // A full sync leaves out rooms the user left of their own accord unless the filter asks
        // for them, but always shows a ban or a kick (as Synapse does): a client starting afresh
        // must still learn it was put out.
        let left_of_own_accord = |record: &MembershipRecord| -> Result<bool> {
            if record.membership != MembershipState::Leave {
                return Ok(false);
            }
            let Some(own) = self.rooms.pdu_record(&record.event_id)? else { return Ok(true) };
            let pdu = Pdu::from_json(record.event_id.clone(), &own.json)?;
            Ok(pdu.sender.as_str() == user.as_str())
        };
        let (mut join, mut invite, mut leave, mut knock) = (Map::new(), Map::new(), Map::new(), Map::new());
        // Device-list bookkeeping for clients that encrypt: whose keys to (re)fetch, and whom
        // they no longer share a room with.
        let mut newly_sharing: BTreeSet<OwnedUserId> = BTreeSet::new();
        let mut maybe_left: BTreeSet<OwnedUserId> = BTreeSet::new();
        // Whether the user joined a room in this window: then their own devices are listed too,
        // as Synapse does, for their other devices to learn who now shares a room with them.
        let mut joined_now = false;
        for (room_id, record) in memberships {
            if record.stream_pos > now {
                continue;
            }
            if filter.room.not_rooms.contains(&room_id)
                || filter.room.rooms.as_ref().is_some_and(|r| !r.contains(&room_id))
            {
                continue;
            }
            let membership_changed = since.is_none_or(|s| record.stream_pos > s);
            // A forgotten room is gone from the user's view, except that a leave made since the
            // last sync is still reported, so the user's other devices learn of it.
            if record.forgotten && !(membership_changed && since.is_some()) {
                continue;
            }
            match record.membership {
                MembershipState::Join => {
                    let touched = initial
                        || membership_changed
                        || changes.rooms.contains(&room_id)
                        || changes.ephemeral.contains(&room_id)
                        || changes.room_account_data.contains(&room_id);
                    if touched {
                        // A room joined within the window is new to the client: send it whole.
                        let from = if membership_changed { None } else { since };
                        let full = initial || membership_changed;
                        let newly_joined = membership_changed && since.is_some();
                        let value =
                            self.joined_room(user, device, &room_id, from, now, full, newly_joined, req)?;
                        if since.is_some() {
                            if membership_changed {
                                newly_sharing
                                    .extend(self.rooms.members_with(&room_id, &MembershipState::Join)?);
                                joined_now = true;
                            }
                            for event in value["timeline"]["events"].as_array().into_iter().flatten() {
                                if event["type"] != "m.room.member" {
                                    continue;
                                }
                                let Some(target) =
                                    event["state_key"].as_str().and_then(|k| UserId::parse(k).ok())
                                else {
                                    continue;
                                };
                                let membership =
                                    event["content"]["membership"].as_str().map(MembershipState::from);
                                match membership {
                                    Some(MembershipState::Join) => {
                                        newly_sharing.insert(target);
                                    }
                                    Some(MembershipState::Leave | MembershipState::Ban) => {
                                        maybe_left.insert(target);
                                    }
                                    _ => {}
                                }
                            }
                        }
                        join.insert(room_id.to_string(), value);
                    }
                }
                MembershipState::Invite if membership_changed && !invited_by_ignored(&record)? => {
                    invite.insert(
                        room_id.to_string(),
                        json!({"invite_state": events(self.stripped_state(user, &room_id, &record)?)}),
                    );
                }
                MembershipState::Knock if membership_changed => {
                    knock.insert(
                        room_id.to_string(),
                        json!({"knock_state": events(self.stripped_state(user, &room_id, &record)?)}),
                    );
                }
                MembershipState::Leave | MembershipState::Ban
                    if membership_changed
                        && (since.is_some() || filter.room.include_leave)
                        && self.outside_event(&record)?.is_some() =>
                {
                    // A rejected invite or withdrawn knock in a room this server is not in: the
                    // leave itself is all there is to show.
                    let leave_event = self.outside_event(&record)?.unwrap_or(Value::Null);
                    leave.insert(
                        room_id.to_string(),
                        json!({
                            "timeline": {"events": [leave_event], "limited": false},
                            "state": events(Vec::new()),
                            "account_data": events(Vec::new()),
                        }),
                    );
                }
                MembershipState::Leave | MembershipState::Ban if record.forgotten => {
                    maybe_left.extend(self.rooms.members_with(&room_id, &MembershipState::Join)?);
                    // Its history is no longer readable: the leave itself is all there is.
                    let own = self.rooms.pdu_record(&record.event_id)?;
                    let leave_event = match own {
                        Some(own) => {
                            vec![self.rooms.client_event(&record.event_id, &own, user, Some(device))?]
                        }
                        None => Vec::new(),
                    };
                    leave.insert(
                        room_id.to_string(),
                        json!({
                            "timeline": {"events": leave_event, "limited": false},
                            "state": events(Vec::new()),
                            "account_data": events(Vec::new()),
                        }),
                    );
                }
                MembershipState::Leave | MembershipState::Ban if membership_changed && since.is_some() => {
                    maybe_left.extend(self.rooms.members_with(&room_id, &MembershipState::Join)?);
                    let value = self.left_room(user, device, &room_id, since, record.stream_pos, req)?;
                    leave.insert(room_id.to_string(), value);
                }
                MembershipState::Leave | MembershipState::Ban
                    if membership_changed && (filter.room.include_leave || !left_of_own_accord(&record)?) =>
                {
                    let value = self.left_room(user, device, &room_id, since, record.stream_pos, req)?;
                    leave.insert(room_id.to_string(), value);
                }
                _ => {}
            }
        }
        let account_data = if initial || changes.global_account_data {
            self.global_account_data(user, if initial { None } else { since })?
        } else {
            Vec::new()
        };
        // Whether someone shares a room with the user, asked of the user's rooms one member at
        // a time: in a big room, reading every member for each sync would cost more than the
        // rest of the sync together.
        let shares = Sharing::new(self, user);
        let presence = self.presence_events(
            since.is_none(),
            &changes.presence,
            &newly_sharing,
            &filter.presence,
            &shares,
        )?;
        let (changed, left): (Vec<OwnedUserId>, Vec<OwnedUserId>) =
            if changes.keys_changed.is_empty() && newly_sharing.is_empty() && maybe_left.is_empty() {
                (Vec::new(), Vec::new())
            } else {
                let mut changed = BTreeSet::new();
                for u in &changes.keys_changed {
                    if shares.with(u)? {
                        changed.insert(u.clone());
                    }
                }
                for u in newly_sharing {
                    if (u != user || joined_now) && shares.with(&u)? {
                        changed.insert(u);
                    }
                }
                let mut left = Vec::new();
                for u in maybe_left {
                    if u != user && !shares.with(&u)? {
                        left.push(u);
                    }
                }
                (changed.into_iter().collect(), left)
            };
        let empty = join.is_empty()
            && invite.is_empty()
            && leave.is_empty()
            && knock.is_empty()
            && account_data.is_empty()
            && to_device.is_empty()
            && changed.is_empty()
            && left.is_empty()
            && presence.is_empty();
        let response = json!({
            "next_batch": sync_token(now),
            "rooms": {"join": join, "invite": invite, "leave": leave, "knock": knock},
            "account_data": events(account_data),
            "presence": events(presence),
            "to_device": events(to_device),
            "device_lists": {"changed": changed, "left": left},
            "device_one_time_keys_count": self.one_time_key_counts(user, device)?,
            "device_unused_fallback_key_types": self.unused_fallback_key_types(user, device)?,
        });
        Ok((response, empty))
    }

    /// Presence of users sharing a room: all known ones initially; after that, the changed
    /// ones and the known ones the user has just come to share a room with (whose earlier
    /// changes the client was never sent).
    fn presence_events(
        &self,
        initial: bool,
        changed: &BTreeSet<OwnedUserId>,
        newly_sharing: &BTreeSet<OwnedUserId>,
        filter: &ruma::api::client::filter::Filter,
        shares: &Sharing<'_>,
    ) -> Result<Vec<Value>> {
        let wanted = |t: &str| {
            !filter.not_types.iter().any(|p| type_matches(p, t))
                && filter.types.as_ref().is_none_or(|types| types.iter().any(|p| type_matches(p, t)))
        };
        if !self.config.presence.enabled
            || !wanted("m.presence")
            || (!initial && changed.is_empty() && newly_sharing.is_empty())
        {
            return Ok(Vec::new());
        }
        let known = |u: &OwnedUserId| self.presence(u).last_active_ago_ms.is_some();
        let mut users: BTreeSet<OwnedUserId> = BTreeSet::new();
        if initial {
            users.extend(self.users_sharing_rooms(shares.user)?.into_iter().filter(|u| known(u)));
        } else {
            for u in changed {
                if shares.with(u)? {
                    users.insert(u.clone());
                }
            }
            for u in newly_sharing {
                if known(u) && shares.with(u)? {
                    users.insert(u.clone());
                }
            }
        }
        Ok(users.iter().map(|u| self.presence_event(u)).collect())
    }

    pub(super) fn user_memberships(&self, user: &UserId) -> Result<Vec<(OwnedRoomId, MembershipRecord)>> {
        self.db
            .scan_prefix::<UserRooms, _>(&user.to_owned())?
            .map(|e| e.map(|((_, room), record)| (room, record)).map_err(Into::into))
            .collect()
    }

    /// What the stream log says happened in `(since, now]` that concerns `user`.
    pub(super) fn changes(&self, user: &UserId, since: u64, now: u64) -> Result<Changes> {
        let mut changes = Changes::default();
        if now <= since {
            return Ok(changes);
        }
        for entry in
            self.db.range::<StreamLog>(Bound::Excluded(&since), Bound::Included(&now), Direction::Forward)?
        {
            let (_, entry) = entry?;
            match entry {
                StreamEntry::RoomEvent { room_id, .. } => {
                    changes.rooms.insert(room_id);
                }
                StreamEntry::Receipt { room_id, user_id } => {
                    if user_id == user {
                        changes.own_receipts.insert(room_id.clone());
                    }
                    changes.receipts.insert(room_id.clone());
                    changes.ephemeral.insert(room_id);
                }
                StreamEntry::Typing { room_id } => {
                    changes.typing.insert(room_id.clone());
                    changes.ephemeral.insert(room_id);
                }
                StreamEntry::AccountData { user_id, room_id, .. } if user_id == user => match room_id {
                    Some(room) => {
                        changes.room_account_data.insert(room);
                    }
                    None => changes.global_account_data = true,
                },
                StreamEntry::AccountData { .. } | StreamEntry::ToDevice { .. } => {}
                StreamEntry::DeviceKeys { user_id } => {
                    changes.keys_changed.insert(user_id);
                }
                StreamEntry::Presence { user_id } => {
                    changes.presence.insert(user_id);
                }
            }
        }
        Ok(changes)
    }

    #[allow(clippy::too_many_arguments)]
    fn joined_room(
        &self,
        user: &UserId,
        device: &DeviceId,
        room_id: &RoomId,
        since: Option<u64>,
        now: u64,
        full: bool,
        newly_joined: bool,
        req: &SyncRequest,
    ) -> Result<Value> {
        let (timeline, state_events, _) =
            self.room_timeline_and_state(user, device, room_id, since, now, full, newly_joined, req)?;
        let mut room = Map::new();
        let state_key = if req.use_state_after { "state_after" } else { "state" };
        room.insert("ephemeral".into(), events(self.ephemeral_events(user, room_id, since)?));
        room.insert("account_data".into(), events(self.room_account_data(user, room_id, since)?));
        // Recounted, as Synapse does, only when the membership may have moved: a full sync, or
        // member events in the timeline or state. Clients keep the last summary they were sent;
        // counting a big room's members for every sync would cost more than the sync.
        let is_member_event = |e: &Value| e["type"] == "m.room.member";
        let membership_moved = since.is_none()
            || full
            || timeline["events"].as_array().is_some_and(|events| events.iter().any(is_member_event))
            || state_events.iter().any(is_member_event);
        let summary = if membership_moved { self.room_summary(user, room_id)? } else { json!({}) };
        room.insert("summary".into(), summary);
        room.insert("timeline".into(), timeline);
        room.insert(state_key.into(), events(state_events));
        let unread = crate::push::unread_counts(&self.db, user, room_id, now)?;
        let counts = |c: crate::push::Counts| json!({"highlight_count": c.highlights, "notification_count": c.notifications});
        if req.filter.room.timeline.unread_thread_notifications {
            room.insert("unread_notifications".into(), counts(unread.main));
            let threads: Map<String, Value> =
                unread.threads.iter().map(|(root, c)| (root.to_string(), counts(*c))).collect();
            if !threads.is_empty() {
                room.insert("unread_thread_notifications".into(), Value::Object(threads));
            }
        } else {
            room.insert("unread_notifications".into(), counts(unread.total()));
        }
        Ok(Value::Object(room))
    }

    fn left_room(
        &self,
        user: &UserId,
        device: &DeviceId,
        room_id: &RoomId,
        since: Option<u64>,
        left_at: u64,
        req: &SyncRequest,
    ) -> Result<Value> {
        let (timeline, state_events, _) =
            self.room_timeline_and_state(user, device, room_id, since, left_at, since.is_none(), false, req)?;
        let state_key = if req.use_state_after { "state_after" } else { "state" };
        Ok(json!({"timeline": timeline, state_key: events(state_events), "account_data": events(Vec::new())}))
    }

    /// The timeline of `(since, until]` (the last `limit` events of it, `limited` when more
    /// exist) and the state to send with it.
    #[allow(clippy::too_many_arguments)]
    fn room_timeline_and_state(
        &self,
        user: &UserId,
        device: &DeviceId,
        room_id: &RoomId,
        since: Option<u64>,
        until: u64,
        full: bool,
        new_to_client: bool,
        req: &SyncRequest,
    ) -> Result<(Value, Vec<Value>, usize)> {
        let filter = &req.filter.room;
        let limit = filter
            .timeline
            .limit
            .map_or(DEFAULT_TIMELINE_LIMIT, |l| {
                usize::try_from(u64::from(l)).unwrap_or(DEFAULT_TIMELINE_LIMIT)
            })
            .min(1000);
        let keep = |pdu: &Pdu| -> Result<bool> { Ok(event_passes(&filter.timeline, pdu)) };
        // A limit of 0 asks for no events, but `limited` still says whether there were any.
        let page = self.rooms.page(
            room_id,
            user,
            Some(until),
            since,
            PageDirection::Backward,
            limit.max(1),
            &keep,
        )?;
        let (mut page_events, more) = if limit == 0 {
            (Vec::new(), !page.events.is_empty())
        } else {
            (page.events, page.next.is_some())
        };
        page_events.reverse();
        // History this server never received sits before a gap event: what precedes it is not
        // continuous with what follows, so the timeline starts at the latest gap, and is limited.
        let gap = match page_events.iter().rposition(|(_, _, record)| record.gap_before) {
            Some(cut) => {
                page_events.drain(..cut);
                true
            }
            None => false,
        };
        // A room new to the client in an incremental sync has history before this timeline
        // that the client never saw unless the timeline goes back to the room's creation: mark
        // the gap, as Synapse does, so clients paginate instead of assuming they have it all.
        let limited = more
            || gap
            || (new_to_client
                && page_events.first().is_none_or(|(_, pdu, _)| pdu.kind != TimelineEventType::RoomCreate));
        let first_pos = page_events.first().map(|(pos, ..)| *pos);
        // A full sync whose timeline holds all the history the user may see points its
        // `prev_batch` at the sync's own position, as Synapse does: `/members?at=` it gives the
        // members the timeline ends with rather than the nobody before the room's creation.
        let prev_batch = match first_pos {
            Some(_) if since.is_none() && !limited => until,
            Some(pos) => pos.saturating_sub(1),
            None => until,
        };
        let mut timeline_events = Vec::with_capacity(page_events.len());
        let mut window = Window::for_filter(&filter.state);
        let mut timeline_ids = BTreeSet::new();
        for (_, pdu, record) in &page_events {
            window.add(&pdu.sender);
            timeline_ids.insert(pdu.event_id.clone());
            timeline_events.push(self.rooms.client_event(&pdu.event_id, record, user, Some(device))?);
        }
        // The client learns its own membership whatever the timeline holds.
        window.add(user);

        // State: at the start of the timeline (or, with use_state_after, at its end), in full for a
        // room new to the client, else only what changed since the last sync. Event IDs are
        // compared first; only events that go out are read.
        let state_pos = if req.use_state_after { until } else { first_pos.map_or(until, |p| p - 1) };
        let mut state_events = Vec::new();
        let group = match self.rooms.state_group_at_position(room_id, state_pos)? {
            Some(group) => Some(group),
            // Nothing of the room is positioned here before its first timeline event (a room
            // joined over federation starts at the join): the state after that event stands in,
            // less what the timeline itself carries.
            None => page_events.first().map(|(_, _, record)| record.state_group),
        };
        if let Some(group) = group {
            let known = match (full, since) {
                (false, Some(since)) => self.rooms.state_group_at_position(room_id, since)?,
                _ => None,
            };
            let mut chosen = self.rooms.window_state(group, &window, known)?;
            // State changed after the last event the timeline shows (by events the filter left
            // out, or by a merge of forks) would otherwise never reach the client: send the
            // state at the end of the window for what differs from the state after that event.
            if !req.use_state_after
                && let Some((_, _, last)) = page_events.last()
                && let Some(end_group) = self.rooms.state_group_at_position(room_id, until)?
            {
                chosen.extend(self.rooms.window_state_changes(last.state_group, end_group, &window)?);
            }
            chosen.retain(|_, event_id| req.use_state_after || !timeline_ids.contains(event_id));
            for (event_id, record, pdu) in self.rooms.servable_state(chosen)? {
                if event_passes(&filter.state, &pdu) {
                    state_events.push(self.rooms.client_event(&event_id, &record, user, Some(device))?);
                }
            }
        }
        let timeline = json!({
            "events": timeline_events,
            "limited": limited,
            "prev_batch": position_token(prev_batch),
        });
        let count = page_events.len();
        Ok((timeline, state_events, count))
    }

    /// A membership event kept outside any timeline (this server is not in the room), in the
    /// client format.
    pub(super) fn outside_event(&self, record: &MembershipRecord) -> Result<Option<Value>> {
        let Some(own) = self.rooms.pdu_record(&record.event_id)? else { return Ok(None) };
        if own.stream_pos.is_some() {
            return Ok(None);
        }
        let pdu = Pdu::from_json(record.event_id.clone(), &own.json)?;
        let target = UserId::parse(pdu.state_key.unwrap_or_default()).map_err(crate::Error::internal)?;
        Ok(Some(self.rooms.client_event(&record.event_id, &own, &target, None)?))
    }

    pub(super) fn stripped_state(
        &self,
        user: &UserId,
        room_id: &RoomId,
        record: &MembershipRecord,
    ) -> Result<Vec<Value>> {
        if let Some(outside) = self.rooms.outside_room(user, room_id)? {
            // This server is not in the room: what the inviting (or knocked-on) server sent.
            let mut out = outside.stripped_state;
            out.retain(|e| !(e["type"] == "m.room.member" && e["state_key"] == user.as_str()));
            out.extend(self.outside_event(record)?);
            return Ok(out);
        }
        let mut out = Vec::new();
        let stripped = |pdu: &Pdu| json!({"type": pdu.kind.to_string(), "state_key": pdu.state_key, "content": pdu.content_json(), "sender": pdu.sender});
        for kind in STRIPPED_STATE {
            if let Some(pdu) = self.rooms.current_state_event(room_id, kind, "")? {
                out.push(stripped(&pdu));
            }
        }
        if let Some(own) = self.rooms.pdu_record(&record.event_id)? {
            let pdu = Pdu::from_json(record.event_id.clone(), &own.json)?;
            // The inviter's own membership, so clients can show who invited.
            if let Some(inviter) =
                self.rooms.current_state_event(room_id, "m.room.member", pdu.sender.as_str())?
            {
                out.push(stripped(&inviter));
            }
            let user = pdu.state_key.clone().unwrap_or_default();
            out.push(self.rooms.client_event(
                &record.event_id,
                &own,
                &UserId::parse(&user).map_err(crate::Error::internal)?,
                None,
            )?);
        }
        Ok(out)
    }

    fn ephemeral_events(&self, user: &UserId, room_id: &RoomId, since: Option<u64>) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let typing = self.rooms.typing_users(room_id);
        out.push(json!({"type": "m.typing", "content": {"user_ids": typing}}));
        out.extend(self.receipts_since(user, room_id, since)?);
        Ok(out)
    }

    /// The room's receipts newer than `since` as one `m.receipt` event (none when there are
    /// none), private ones only the user's own.
    pub(super) fn receipts_since(
        &self,
        user: &UserId,
        room_id: &RoomId,
        since: Option<u64>,
    ) -> Result<Option<Value>> {
        let mut content: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for (kind, reader, thread, record) in self.rooms.receipts(room_id)? {
            if since.is_some_and(|s| record.stream_pos <= s) {
                continue;
            }
            if kind == "m.read.private" && reader != user {
                continue;
            }
            let mut receipt = json!({"ts": record.ts});
            if !thread.is_empty() {
                receipt["thread_id"] = json!(thread);
            }
            let by_type = content.entry(record.event_id.to_string()).or_default();
            let readers = by_type.entry(kind).or_insert_with(|| json!({}));
            readers[reader.as_str()] = receipt;
        }
        Ok((!content.is_empty()).then(|| json!({"type": "m.receipt", "content": content})))
    }

    pub(super) fn global_account_data(&self, user: &UserId, since: Option<u64>) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut has_push_rules = false;
        for entry in self.db.scan_prefix::<GlobalAccountData, _>(&user.to_owned())?.lenient() {
            let ((_, kind), Some(mut record)) = entry? else { continue };
            if kind == "m.push_rules" {
                has_push_rules = true;
                if let Some(global) = record.content.get_mut("global") {
                    crate::account_data::fill_rule_kinds(global);
                }
            }
            if since.is_none_or(|s| record.stream_pos > s) {
                out.push(json!({"type": kind, "content": record.content}));
            }
        }
        // Clients expect their push rules in an initial sync even before they changed any.
        if since.is_none() && !has_push_rules {
            let content = crate::account_data::default_push_rules_content(user)?;
            out.push(json!({"type": "m.push_rules", "content": content}));
        }
        Ok(out)
    }

    pub(super) fn room_account_data(
        &self,
        user: &UserId,
        room_id: &RoomId,
        since: Option<u64>,
    ) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for entry in
            self.db.scan_prefix::<RoomAccountData, _>(&(user.to_owned(), room_id.to_owned()))?.lenient()
        {
            let ((_, _, kind), Some(record)) = entry? else { continue };
            if since.is_none_or(|s| record.stream_pos > s) {
                out.push(json!({"type": kind, "content": record.content}));
            }
        }
        Ok(out)
    }

    /// Heroes and member counts, for clients that name rooms without a name.
    fn room_summary(&self, user: &UserId, room_id: &RoomId) -> Result<Value> {
        let members = self.rooms.members(room_id)?;
        // Both lists are sorted: the first five of each hold the first five of both.
        let others =
            |list: &[OwnedUserId]| list.iter().filter(|u| *u != user).take(5).cloned().collect::<Vec<_>>();
        let mut heroes: Vec<OwnedUserId> =
            others(&members.joined).into_iter().chain(others(&members.invited)).collect();
        heroes.sort();
        heroes.truncate(5);
        Ok(json!({
            "m.heroes": heroes,
            "m.joined_member_count": members.joined.len(),
            "m.invited_member_count": members.invited.len(),
        }))
    }
}

/// Whether others share a room with one user, answered per person from that user's joined
/// rooms and remembered for the response.
pub(super) struct Sharing<'a> {
    hs: &'a Homeserver,
    user: &'a UserId,
    rooms: std::cell::OnceCell<Vec<OwnedRoomId>>,
    answers: std::cell::RefCell<std::collections::HashMap<OwnedUserId, bool>>,
}

impl<'a> Sharing<'a> {
    pub(super) fn new(hs: &'a Homeserver, user: &'a UserId) -> Self {
        Self { hs, user, rooms: std::cell::OnceCell::new(), answers: std::cell::RefCell::default() }
    }

    pub(super) fn with(&self, other: &UserId) -> Result<bool> {
        if other == self.user {
            return Ok(true);
        }
        if let Some(known) = self.answers.borrow().get(other) {
            return Ok(*known);
        }
        let rooms = match self.rooms.get() {
            Some(rooms) => rooms,
            None => {
                let rooms = self.hs.rooms.joined_rooms(self.user)?;
                self.rooms.get_or_init(|| rooms)
            }
        };
        let mut shared = false;
        for room in rooms {
            if self.hs.rooms.membership(room, other)? == Some(MembershipState::Join) {
                shared = true;
                break;
            }
        }
        self.answers.borrow_mut().insert(other.to_owned(), shared);
        Ok(shared)
    }
}
