//! The rooms of a /sync response: joined and left rooms with their timelines, state, summaries
//! and ephemeral events; invites and knocks with the stripped state shown before joining.

use std::collections::{BTreeMap, BTreeSet};

use hearth_storage::records::MembershipRecord;
use ruma::{
    DeviceId, OwnedUserId, RoomId, UInt, UserId,
    api::client::sync::sync_events::{
        UnreadNotificationsCount,
        v3::{JoinedRoom, LeftRoom, RoomSummary, State, StateEvents, Timeline},
    },
    events::{
        AnySyncEphemeralRoomEvent, AnySyncStateEvent, TimelineEventType, room::member::MembershipState,
    },
    serde::Raw,
};
use serde_json::{Map, Value, json};

use super::compute::*;
use crate::{
    Homeserver, Result,
    events::Pdu,
    json::raw,
    rooms::{Window, event_passes, view::position_token},
};

/// One room's timeline over a window and the state sent with it.
pub(super) struct RoomWindow {
    pub timeline: Timeline,
    pub state: Vec<Raw<AnySyncStateEvent>>,
    /// Who the timeline's member events are about, and their membership after each.
    pub memberships: Vec<(OwnedUserId, MembershipState)>,
    /// Whether the timeline or the state carries a member event.
    pub members_moved: bool,
}

fn count<N: TryInto<UInt>>(value: N) -> Option<UInt> {
    Some(value.try_into().unwrap_or(UInt::MAX))
}

fn unread(counts: crate::push::Counts) -> UnreadNotificationsCount {
    let mut out = UnreadNotificationsCount::new();
    out.highlight_count = count(counts.highlights);
    out.notification_count = count(counts.notifications);
    out
}

fn state(events: Vec<Raw<AnySyncStateEvent>>, req: &SyncRequest) -> State {
    let events = StateEvents::with_events(events);
    if req.use_state_after { State::After(events) } else { State::Before(events) }
}

impl Homeserver {
    /// A joined room's section, and the membership changes its timeline shows.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn joined_room(
        &self,
        user: &UserId,
        device: &DeviceId,
        room_id: &RoomId,
        since: Option<u64>,
        now: u64,
        full: bool,
        newly_joined: bool,
        req: &SyncRequest,
    ) -> Result<(JoinedRoom, Vec<(OwnedUserId, MembershipState)>)> {
        let window =
            self.room_timeline_and_state(user, device, room_id, since, now, full, newly_joined, req)?;
        let mut room = JoinedRoom::new();
        room.ephemeral.events = self.ephemeral_events(user, room_id, since)?;
        room.account_data.events =
            self.room_account_data(user, room_id, since)?.iter().map(raw).collect::<Result<_>>()?;
        // Recounted, as Synapse does, only when the membership may have moved: a full sync, or
        // member events in the timeline or state. Clients keep the last summary they were sent;
        // counting a big room's members for every sync would cost more than the sync.
        if since.is_none() || full || window.members_moved {
            room.summary = self.room_summary(user, room_id)?;
        }
        room.timeline = window.timeline;
        room.state = state(window.state, req);
        let counts = crate::push::unread_counts(&self.db, user, room_id, now)?;
        if req.filter.room.timeline.unread_thread_notifications {
            room.unread_notifications = unread(counts.main);
            room.unread_thread_notifications =
                counts.threads.into_iter().map(|(root, c)| (root, unread(c))).collect();
        } else {
            room.unread_notifications = unread(counts.total());
        }
        Ok((room, window.memberships))
    }

    pub(super) fn left_room(
        &self,
        user: &UserId,
        device: &DeviceId,
        room_id: &RoomId,
        since: Option<u64>,
        left_at: u64,
        req: &SyncRequest,
    ) -> Result<LeftRoom> {
        let window =
            self.room_timeline_and_state(user, device, room_id, since, left_at, since.is_none(), false, req)?;
        let mut room = LeftRoom::new();
        room.timeline = window.timeline;
        room.state = state(window.state, req);
        Ok(room)
    }

    /// The timeline of `(since, until]` (the last `limit` events of it, `limited` when more
    /// exist) and the state to send with it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn room_timeline_and_state(
        &self,
        user: &UserId,
        device: &DeviceId,
        room_id: &RoomId,
        since: Option<u64>,
        until: u64,
        full: bool,
        new_to_client: bool,
        req: &SyncRequest,
    ) -> Result<RoomWindow> {
        let filter = &req.filter.room;
        let limit = filter
            .timeline
            .limit
            .map_or(DEFAULT_TIMELINE_LIMIT, |l| {
                usize::try_from(u64::from(l)).unwrap_or(DEFAULT_TIMELINE_LIMIT)
            })
            .min(1000);
        let keep = |pdu: &Pdu| -> Result<bool> { Ok(event_passes(&filter.timeline, pdu)) };
        let (page_events, more, gap) = self.rooms.latest_window(room_id, user, since, until, limit, &keep)?;
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
        let mut memberships = Vec::new();
        for (_, pdu, record) in &page_events {
            window.add(&pdu.sender);
            timeline_ids.insert(pdu.event_id.clone());
            timeline_events.push(raw(&self.rooms.client_event(
                &pdu.event_id,
                record,
                user,
                Some(device),
            )?)?);
            if let Some(membership) = pdu.membership()
                && let Some(target) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok())
            {
                memberships.push((target, membership));
            }
        }
        let mut members_moved = !memberships.is_empty();
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
                    members_moved |= pdu.kind == TimelineEventType::RoomMember;
                    state_events.push(raw(&self.rooms.client_event(
                        &event_id,
                        &record,
                        user,
                        Some(device),
                    )?)?);
                }
            }
        }
        let mut timeline = Timeline::new();
        timeline.events = timeline_events;
        timeline.limited = limited;
        timeline.prev_batch = Some(position_token(prev_batch));
        Ok(RoomWindow { timeline, state: state_events, memberships, members_moved })
    }

    /// A membership event kept outside any timeline (this server is not in the room), in the
    /// client format.
    pub(super) fn outside_event(&self, record: &MembershipRecord) -> Result<Option<Value>> {
        let Some(own) = self.rooms.pdu_record(&record.event_id)? else { return Ok(None) };
        if own.stream_pos.is_some() {
            return Ok(None);
        }
        let Some(pdu) = crate::rooms::servable(&record.event_id, &own) else { return Ok(None) };
        let Some(target) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok()) else {
            return Ok(None);
        };
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
        if let Some(own) = self.rooms.pdu_record(&record.event_id)?
            && let Some(pdu) = crate::rooms::servable(&record.event_id, &own)
        {
            // The inviter's own membership, so clients can show who invited.
            if let Some(inviter) =
                self.rooms.current_state_event(room_id, "m.room.member", pdu.sender.as_str())?
            {
                out.push(stripped(&inviter));
            }
            if let Some(user) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok()) {
                out.push(self.rooms.client_event(&record.event_id, &own, &user, None)?);
            }
        }
        Ok(out)
    }

    pub(super) fn ephemeral_events(
        &self,
        user: &UserId,
        room_id: &RoomId,
        since: Option<u64>,
    ) -> Result<Vec<Raw<AnySyncEphemeralRoomEvent>>> {
        let typing = self.rooms.typing_users(room_id);
        let mut out = vec![raw(&json!({"type": "m.typing", "content": {"user_ids": typing}}))?];
        if let Some(receipts) = self.receipts_since(user, room_id, since)? {
            out.push(raw(&receipts)?);
        }
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

    /// Heroes and member counts, for clients that name rooms without a name.
    pub(super) fn room_summary(&self, user: &UserId, room_id: &RoomId) -> Result<RoomSummary> {
        let members = self.rooms.members(room_id)?;
        // Both lists are sorted: the first five of each hold the first five of both.
        let others =
            |list: &[OwnedUserId]| list.iter().filter(|u| *u != user).take(5).cloned().collect::<Vec<_>>();
        let mut heroes: Vec<OwnedUserId> =
            others(&members.joined).into_iter().chain(others(&members.invited)).collect();
        heroes.sort();
        heroes.truncate(5);
        let mut summary = RoomSummary::new();
        summary.heroes = heroes;
        summary.joined_member_count = count(members.joined.len());
        summary.invited_member_count = count(members.invited.len());
        Ok(summary)
    }
}
