//! What a client may see of a room at a point, decided here once for every read path: `/sync`
//! and the WebSocket, sliding sync, `/messages`, `/context`, search, `/members` and
//! `timestamp_to_event`.
//!
//! - Whether a user may read a room's history at all, and up to where: [`Rooms::read_access`].
//! - Who may see which event (history visibility and membership at the event): [`Viewer`].
//! - Which events a room event filter keeps: [`event_passes`].
//! - Which state goes with a window of events, lazy-loaded members included: [`Window`].
//! - The tokens that name places in a room's timeline and in the stream.

use std::collections::{BTreeSet, HashMap};

use hearth_storage::records::PduRecord;
use ruma::{
    OwnedEventId, RoomId, UserId,
    api::client::filter::{RoomEventFilter, UrlFilter},
    events::{
        TimelineEventType,
        room::{history_visibility::HistoryVisibility, member::MembershipState},
    },
};
use serde_json::Value;

use super::{Rooms, state::StateMap, timeline::TimelineKey};
use crate::{Error, Result, events::Pdu};

// --- Tokens -----------------------------------------------------------------------------------

/// The pagination token of a place in a room's timeline order: `t<position>` among the events
/// this server saw live, `b<n>` in the history fetched later from other servers, which comes
/// before all of them. `/messages`, `/context`, sliding sync and search contexts hand these out.
pub fn history_token(key: TimelineKey) -> String {
    if key >= 0 { format!("t{key}") } else { format!("b{}", key.unsigned_abs()) }
}

/// The place a [`history_token`] names; a sync token (`s<position>`) names the same kind of
/// boundary in the live timeline, so clients may pass either.
pub fn parse_history_token(token: &str) -> Option<TimelineKey> {
    match token.strip_prefix('b') {
        Some(n) => n.parse::<i64>().ok().filter(|n| *n > 0).map(|n| -n),
        None => parse_position_token(token).and_then(|p| i64::try_from(p).ok()),
    }
}

/// `/sync`'s `next_batch`: `s<position>` in the stream.
pub fn sync_token(pos: u64) -> String {
    format!("s{pos}")
}

pub fn parse_sync_token(token: &str) -> Option<u64> {
    token.strip_prefix('s').and_then(|n| n.parse().ok())
}

/// A stream position as the endpoints that page by it (`/keys/changes`, `/notifications`,
/// `/members?at=`, `initialSync`) give it: `t<position>`.
pub fn position_token(pos: u64) -> String {
    format!("t{pos}")
}

/// A stream position from a [`position_token`] or a [`sync_token`], which name the same kind of
/// boundary.
pub fn parse_position_token(token: &str) -> Option<u64> {
    token.strip_prefix('t').or_else(|| token.strip_prefix('s')).and_then(|n| n.parse().ok())
}

// --- Filters ----------------------------------------------------------------------------------

pub(crate) fn type_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

/// Whether a room event passes a room event filter's type, sender and `contains_url` rules.
pub fn event_passes(filter: &RoomEventFilter, pdu: &Pdu) -> bool {
    let kind = pdu.kind.to_string();
    let url_ok = filter.url_filter.as_ref().is_none_or(|wanted| {
        let has_url = pdu.content_json().get("url").is_some_and(Value::is_string);
        has_url == matches!(wanted, UrlFilter::EventsWithUrl)
    });
    !filter.not_types.iter().any(|t| type_matches(t, &kind))
        && filter.types.as_ref().is_none_or(|types| types.iter().any(|t| type_matches(t, &kind)))
        && !filter.not_senders.iter().any(|s| s == &pdu.sender)
        && filter.senders.as_ref().is_none_or(|senders| senders.iter().any(|s| s == &pdu.sender))
        && url_ok
}

// --- History visibility -----------------------------------------------------------------------

impl Rooms {
    /// Whether `user` may read this room's history at all (members past and present, and anyone
    /// when it is world-readable), and up to which position (a user who left sees nothing after).
    pub fn read_access(&self, room_id: &RoomId, user: &UserId) -> Result<u64> {
        if !self.exists(room_id)? {
            return Err(Error::forbidden("You are not allowed to view this room"));
        }
        match self.membership(room_id, user)? {
            Some(MembershipState::Join) => Ok(u64::MAX),
            Some(MembershipState::Leave | MembershipState::Ban) => {
                let record = self
                    .db()
                    .get::<hearth_storage::schema::UserRooms>(&(user.to_owned(), room_id.to_owned()))?;
                match record {
                    // Forgetting a room gives up its history too, until the user comes back.
                    Some(r) if r.forgotten => {
                        Err(Error::forbidden(format!("User {user} has forgotten room {room_id}")))
                    }
                    Some(r) => Ok(r.stream_pos),
                    None => Ok(0),
                }
            }
            _ if self.current_visibility(room_id)? == HistoryVisibility::WorldReadable => Ok(u64::MAX),
            _ => Err(Error::forbidden(format!(
                "User {user} not in room {room_id}, and room previews are disabled"
            ))),
        }
    }

    /// The room's history visibility now.
    pub fn current_visibility(&self, room_id: &RoomId) -> Result<HistoryVisibility> {
        let event = self.current_state_event(room_id, "m.room.history_visibility", "")?;
        Ok(visibility_of(event.as_ref()))
    }

    /// `user`'s membership in the state group `group` (the state after some event), if any.
    pub(crate) fn membership_at(&self, group: u64, user: &UserId) -> Result<Option<MembershipState>> {
        let Some(id) = self.state_lookup(group, "m.room.member", user.as_str())? else {
            return Ok(None);
        };
        Ok(self.pdu(&id)?.and_then(|p| p.membership()))
    }
}

/// The visibility an `m.room.history_visibility` event sets; without one, or with a value this
/// server does not know, `shared`, as the spec says.
pub(crate) fn visibility_of(event: Option<&Pdu>) -> HistoryVisibility {
    match event.and_then(|p| p.content_str("history_visibility")).map(|v| HistoryVisibility::from(v.as_str()))
    {
        Some(
            v @ (HistoryVisibility::WorldReadable | HistoryVisibility::Joined | HistoryVisibility::Invited),
        ) => v,
        _ => HistoryVisibility::Shared,
    }
}

/// Decides which events of one room one user may see, memoized per state group because
/// consecutive events mostly share one.
pub struct Viewer<'a> {
    rooms: &'a Rooms,
    user: &'a UserId,
    currently_joined: bool,
    memo: HashMap<u64, bool>,
}

impl<'a> Viewer<'a> {
    pub fn new(rooms: &'a Rooms, room_id: &RoomId, user: &'a UserId) -> Result<Self> {
        let currently_joined = rooms.membership(room_id, user)? == Some(MembershipState::Join);
        Ok(Self { rooms, user, currently_joined, memo: HashMap::new() })
    }

    /// Whether the user may see this event. Their own membership events always: they learn of
    /// an invite, a kick or a ban even where the history around it is hidden.
    pub fn can_see(&mut self, pdu: &Pdu, record: &PduRecord) -> Result<bool> {
        let own =
            pdu.kind == TimelineEventType::RoomMember && pdu.state_key.as_deref() == Some(self.user.as_str());
        Ok(own || self.can_see_at(record.state_group)?)
    }

    /// Whether the user may see events whose state (after them) is `group`.
    fn can_see_at(&mut self, group: u64) -> Result<bool> {
        if let Some(seen) = self.memo.get(&group) {
            return Ok(*seen);
        }
        let setting = match self.rooms.state_lookup(group, "m.room.history_visibility", "")? {
            Some(id) => visibility_of(self.rooms.pdu(&id)?.as_ref()),
            None => HistoryVisibility::Shared,
        };
        let at = self.rooms.membership_at(group, self.user)?;
        let joined_then = at == Some(MembershipState::Join);
        let visible = match setting {
            HistoryVisibility::WorldReadable => true,
            HistoryVisibility::Joined => joined_then,
            HistoryVisibility::Invited => joined_then || at == Some(MembershipState::Invite),
            _ => joined_then || self.currently_joined,
        };
        self.memo.insert(group, visible);
        Ok(visible)
    }
}

// --- State that goes with a window of events (lazy-loading) -----------------------------------

/// The events one response shows of a room, seen from the state that goes with them. Every
/// state entry goes with a window except members; members go too unless the client loads
/// them lazily, in which case only the members of the window's senders do. This is the one
/// lazy-loading rule: `/sync` (state before its timeline, plus the syncing user), `/messages`
/// (the members at the chunk's first event), `/context` (the state at the last event returned,
/// as the spec says) and sliding sync's `$LAZY` (the state its timeline ends with) differ only
/// in the point they read it at.
#[derive(Debug, Default)]
pub struct Window {
    lazy: bool,
    senders: BTreeSet<String>,
}

const MEMBER: &str = "m.room.member";

impl Window {
    /// A window whose client loads members lazily or not, as its filter says.
    pub fn for_filter(filter: &RoomEventFilter) -> Self {
        Self::lazy(!filter.lazy_load_options.is_disabled())
    }

    pub fn lazy(lazy: bool) -> Self {
        Self { lazy, senders: BTreeSet::new() }
    }

    pub fn is_lazy(&self) -> bool {
        self.lazy
    }

    /// Counts `sender` among the window's senders (also used for a member the response needs
    /// although they sent nothing in it, as `/sync`'s own user).
    pub fn add(&mut self, sender: &UserId) {
        self.senders.insert(sender.as_str().to_owned());
    }

    /// Whether the state entry `(kind, key)` goes with this window.
    pub fn keeps(&self, kind: &str, key: &str) -> bool {
        !self.lazy || kind != MEMBER || self.senders.contains(key)
    }
}

impl Rooms {
    /// The state at `group` that goes with `window`, as event IDs. With `known` (the group of
    /// the state the client already has) only what differs from it, except that lazily loaded
    /// members of the window's senders always go: the client may never have been sent them.
    pub fn window_state(&self, group: u64, window: &Window, known: Option<u64>) -> Result<StateMap> {
        let mut chosen = StateMap::new();
        if known != Some(group) {
            let before = match known {
                Some(known) => self.state_map(known)?,
                None => StateMap::new(),
            };
            for (key, event_id) in self.state_map(group)? {
                if window.keeps(&key.0, &key.1) && before.get(&key) != Some(&event_id) {
                    chosen.insert(key, event_id);
                }
            }
        }
        chosen.extend(self.window_members(group, window)?);
        Ok(chosen)
    }

    /// What changed from the state at `from` to the state at `to` that goes with `window`.
    pub fn window_state_changes(&self, from: u64, to: u64, window: &Window) -> Result<StateMap> {
        if from == to {
            return Ok(StateMap::new());
        }
        let shown = self.state_map(from)?;
        Ok(self
            .state_map(to)?
            .into_iter()
            .filter(|(key, event_id)| window.keeps(&key.0, &key.1) && shown.get(key) != Some(event_id))
            .collect())
    }

    /// The member events at `group` of the window's senders when it loads members lazily;
    /// nothing otherwise.
    pub fn window_members(&self, group: u64, window: &Window) -> Result<StateMap> {
        let mut members = StateMap::new();
        if window.lazy {
            for sender in &window.senders {
                if let Some(event_id) = self.state_lookup(group, MEMBER, sender)? {
                    members.insert((MEMBER.to_owned(), sender.clone()), event_id);
                }
            }
        }
        Ok(members)
    }

    /// The events of a state map that can be served, in the map's order.
    pub fn servable_state(&self, map: StateMap) -> Result<Vec<(OwnedEventId, PduRecord, Pdu)>> {
        let mut out = Vec::with_capacity(map.len());
        for event_id in map.into_values() {
            if let Some(record) = self.pdu_record(&event_id)?
                && let Some(pdu) = super::servable(&event_id, &record)
            {
                out.push((event_id, record, pdu));
            }
        }
        Ok(out)
    }
}
