//! `/sync`: what changed for one user between two stream positions, in the response shape of
//! the Client-Server API, and the long-poll around it.
//!
//! Order matters: subscribe to the notifier, then read the published position, then compute;
//! if there is nothing, wait for a position above the one read and compute again. A write
//! published in between is never missed, because the wake-up waits in the channel.

use ruma::events::room::member::MembershipState;
use std::{collections::BTreeSet, ops::Bound, time::Duration};

use hearth_storage::{
    Direction,
    records::{MembershipRecord, StreamEntry},
    schema::{StreamLog, UserRooms},
};
use ruma::{
    DeviceId, OneTimeKeyAlgorithm, OwnedRoomId, OwnedUserId, UInt, UserId,
    api::client::{
        filter::FilterDefinition,
        sync::sync_events::v3::{
            InviteState, InvitedRoom, KnockState, KnockedRoom, LeftRoom, Response, Rooms,
        },
    },
};
use serde_json::Value;

use super::sharing::{MembershipMoves, Sharing};
use crate::{Homeserver, Result, json::raw, rooms::view::sync_token};

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
pub(super) const DEFAULT_TIMELINE_LIMIT: usize = 10;
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

/// Whether a response carries nothing for the client (a long-poll goes on waiting; the
/// WebSocket sends no frame).
pub fn carries_nothing(response: &Response) -> bool {
    response.rooms.is_empty()
        && response.account_data.is_empty()
        && response.presence.is_empty()
        && response.to_device.is_empty()
        && response.device_lists.is_empty()
}

/// A leave shown alone: the room's history is not the user's to read.
fn leave_alone(event: Option<&Value>) -> Result<LeftRoom> {
    let mut room = LeftRoom::new();
    room.timeline.events = event.into_iter().map(raw).collect::<Result<_>>()?;
    Ok(room)
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
    pub async fn sync(&self, user: &UserId, device: &DeviceId, req: &SyncRequest) -> Result<Response> {
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

    async fn sync_inner(&self, user: &UserId, device: &DeviceId, req: &SyncRequest) -> Result<Response> {
        let mut rx = self.notifier.subscribe(user);
        let deadline = tokio::time::Instant::now() + req.timeout;
        // The first read catches up with the store (a shared one); wake-ups carry the rest.
        let mut now = self.streams.read_position().await;
        loop {
            let response = {
                let this = self.clone();
                let (user, device, req) = (user.to_owned(), device.to_owned(), req.clone());
                crate::users::blocking(move || this.sync_at(&user, &device, &req, now)).await?
            };
            let initial = req.since.is_none() || req.full_state;
            if !carries_nothing(&response) || initial || tokio::time::Instant::now() >= deadline {
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
                return crate::users::blocking(move || this.sync_at(&user, &device, &req, now)).await;
            }
            now = self.streams.published();
        }
    }

    /// The response for the window `(since, now]`.
    fn sync_at(&self, user: &UserId, device: &DeviceId, req: &SyncRequest, now: u64) -> Result<Response> {
        // A token from another process sharing the store may be ahead of what this one has
        // published: catch up first, or the window would repeat what the token already covers.
        let now = match req.since {
            Some(since) if since > now => self.streams.catch_up(),
            _ => now,
        };
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
            let Some(pdu) = crate::rooms::servable(&record.event_id, &own) else { return Ok(false) };
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
            let Some(pdu) = crate::rooms::servable(&record.event_id, &own) else { return Ok(true) };
            Ok(pdu.sender.as_str() == user.as_str())
        };
        let mut rooms = Rooms::new();
        // Device-list bookkeeping for clients that encrypt.
        let mut moves = MembershipMoves::default();
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
                        let (room, moved) =
                            self.joined_room(user, device, &room_id, from, now, full, newly_joined, req)?;
                        if since.is_some() {
                            if membership_changed {
                                moves
                                    .newly_sharing
                                    .extend(self.rooms.members_with(&room_id, &MembershipState::Join)?);
                                moves.joined_now = true;
                            }
                            for (target, membership) in moved {
                                match membership {
                                    MembershipState::Join => {
                                        moves.newly_sharing.insert(target);
                                    }
                                    MembershipState::Leave | MembershipState::Ban => {
                                        moves.maybe_left.insert(target);
                                    }
                                    _ => {}
                                }
                            }
                        }
                        rooms.join.insert(room_id, room);
                    }
                }
                MembershipState::Invite if membership_changed && !invited_by_ignored(&record)? => {
                    let stripped = self.stripped_state(user, &room_id, &record)?;
                    let state = stripped.iter().map(raw).collect::<Result<Vec<_>>>()?;
                    rooms.invite.insert(room_id, InvitedRoom::from(InviteState::from(state)));
                }
                MembershipState::Knock if membership_changed => {
                    let stripped = self.stripped_state(user, &room_id, &record)?;
                    let mut state = KnockState::new();
                    state.events = stripped.iter().map(raw).collect::<Result<_>>()?;
                    rooms.knock.insert(room_id, KnockedRoom::from(state));
                }
                MembershipState::Leave | MembershipState::Ban
                    if membership_changed
                        && (since.is_some() || filter.room.include_leave)
                        && self.outside_event(&record)?.is_some() =>
                {
                    // A rejected invite or withdrawn knock in a room this server is not in: the
                    // leave itself is all there is to show.
                    rooms.leave.insert(room_id, leave_alone(self.outside_event(&record)?.as_ref())?);
                }
                MembershipState::Leave | MembershipState::Ban if record.forgotten => {
                    moves.maybe_left.extend(self.rooms.members_with(&room_id, &MembershipState::Join)?);
                    // Its history is no longer readable: the leave itself is all there is.
                    let own = self.rooms.pdu_record(&record.event_id)?;
                    let leave_event = match own {
                        Some(own) => {
                            Some(self.rooms.client_event(&record.event_id, &own, user, Some(device))?)
                        }
                        None => None,
                    };
                    rooms.leave.insert(room_id, leave_alone(leave_event.as_ref())?);
                }
                MembershipState::Leave | MembershipState::Ban if membership_changed && since.is_some() => {
                    moves.maybe_left.extend(self.rooms.members_with(&room_id, &MembershipState::Join)?);
                    let room = self.left_room(user, device, &room_id, since, record.stream_pos, req)?;
                    rooms.leave.insert(room_id, room);
                }
                MembershipState::Leave | MembershipState::Ban
                    if membership_changed && (filter.room.include_leave || !left_of_own_accord(&record)?) =>
                {
                    let room = self.left_room(user, device, &room_id, since, record.stream_pos, req)?;
                    rooms.leave.insert(room_id, room);
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
            &moves.newly_sharing,
            &filter.presence,
            &shares,
        )?;
        let (changed, left) = shares.device_lists(&changes.keys_changed, &moves)?;
        let mut response = Response::new(sync_token(now));
        response.rooms = rooms;
        response.account_data.events = account_data.iter().map(raw).collect::<Result<_>>()?;
        response.presence.events = presence.iter().map(raw).collect::<Result<_>>()?;
        response.to_device.events = to_device.iter().map(raw).collect::<Result<_>>()?;
        response.device_lists.changed = changed;
        response.device_lists.left = left;
        response.device_one_time_keys_count = self
            .one_time_key_counts(user, device)?
            .into_iter()
            .map(|(algorithm, n)| {
                (OneTimeKeyAlgorithm::from(algorithm), UInt::try_from(n).unwrap_or(UInt::MAX))
            })
            .collect();
        response.device_unused_fallback_key_types = Some(
            self.unused_fallback_key_types(user, device)?
                .into_iter()
                .map(OneTimeKeyAlgorithm::from)
                .collect(),
        );
        Ok(response)
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
}
