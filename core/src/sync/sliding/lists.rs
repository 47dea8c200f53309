//! Which rooms a sliding sync response covers: the user's rooms, filtered and sorted by
//! recency for each list, cut to the list's ranges, and the rooms subscribed to.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use hearth_storage::{Direction, records::MembershipRecord, schema::RoomTimeline};
use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, UserId,
    events::{TimelineEventType, room::member::MembershipState},
};
use serde::Deserialize;
use serde_json::Value;

use super::{ListFilters, RoomConfig, SlidingRequest, Window, conn::Snapshot};
use crate::{Homeserver, Result, events::Pdu};

/// Event types that move a room up the list (the MSC's default bump types): conversation, not
/// state changes or reactions.
const BUMP_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.message",
    "m.room.encrypted",
    "m.sticker",
    "m.call.invite",
    "m.poll.start",
    "org.matrix.msc3381.poll.start",
    "m.beacon_info",
    "org.matrix.msc3672.beacon_info",
];
/// How far back a room's timeline is searched for a bump event before its membership's
/// position stands in.
const BUMP_SCAN: usize = 100;

/// One of the user's rooms that a list may show.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub record: MembershipRecord,
    pub membership: MembershipState,
    /// The position of the last event that bumps the room, as the client may see it.
    pub bump: u64,
    /// A direct chat, by `m.direct` or by the invite's `is_direct`.
    pub dm: bool,
}

/// The rooms of one response.
#[derive(Debug, Default)]
pub(super) struct Selection {
    pub candidates: HashMap<OwnedRoomId, Candidate>,
    /// Every room in a list's ranges or subscribed to, with what to send of it.
    pub rooms: BTreeMap<OwnedRoomId, RoomConfig>,
    pub counts: BTreeMap<String, usize>,
    /// The rooms in each list's ranges (extensions are scoped by list).
    pub in_lists: BTreeMap<String, Vec<OwnedRoomId>>,
    pub subscribed: BTreeSet<OwnedRoomId>,
}

/// What the filters ask of a room, read once per response.
#[derive(Debug, Default)]
struct Facts {
    encrypted: bool,
    room_type: Option<String>,
    tags: Vec<String>,
}

#[derive(Deserialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: String,
}

impl Homeserver {
    pub(super) fn select_rooms(
        &self,
        w: &Window<'_>,
        req: &SlidingRequest,
        previous: &Snapshot,
        snapshot: &mut Snapshot,
    ) -> Result<Selection> {
        let (user, since, now) = (w.user, w.since, w.now);
        let mut selection = Selection::default();
        let direct = self.direct_rooms(user)?;
        let ignored = self.account_data.ignored_users(user)?;
        for (room_id, record) in self.user_memberships(user)? {
            if record.stream_pos > now {
                continue;
            }
            let membership = MembershipState::from(record.membership.as_str());
            let newly = since.is_some_and(|s| record.stream_pos > s);
            // Read only where the event matters: a join's says nothing the lists need.
            let own_event = match membership {
                MembershipState::Join | MembershipState::Knock => None,
                _ => self.membership_event(&record)?,
            };
            let by_self = own_event.as_ref().is_none_or(|pdu| pdu.sender == user);
            let shown = match membership {
                MembershipState::Join | MembershipState::Knock => true,
                MembershipState::Invite => {
                    own_event.as_ref().is_none_or(|pdu| !ignored.contains(&pdu.sender))
                }
                // A room the user left is shown once, for the leave itself; one they were put out
                // of stays until they forget it, so that they learn of it.
                MembershipState::Leave | MembershipState::Ban => newly || (!by_self && !record.forgotten),
                _ => false,
            };
            if !shown {
                continue;
            }
            let invited_direct = membership == MembershipState::Invite
                && own_event.as_ref().is_some_and(|pdu| pdu.content_json()["is_direct"] == Value::Bool(true));
            let bump = match membership {
                MembershipState::Join => {
                    let known = previous
                        .bumps
                        .get(&room_id)
                        .filter(|_| since.is_some() && !w.changes.rooms.contains(&room_id));
                    match known {
                        Some(bump) => *bump,
                        None => self.bump_stamp(&room_id, now)?.unwrap_or(record.stream_pos),
                    }
                }
                // Outside the room, nothing after the membership is the user's to see.
                _ => record.stream_pos,
            };
            snapshot.bumps.insert(room_id.clone(), bump);
            let dm = direct.contains(&room_id) || invited_direct;
            selection.candidates.insert(room_id, Candidate { record, membership, bump, dm });
        }
        snapshot.bumps.retain(|room, _| selection.candidates.contains_key(room));

        let mut sorted: Vec<(&OwnedRoomId, &Candidate)> = selection.candidates.iter().collect();
        sorted.sort_by(|a, b| b.1.bump.cmp(&a.1.bump).then_with(|| a.0.cmp(b.0)));
        let mut facts: HashMap<OwnedRoomId, Facts> = HashMap::new();
        let mut space_children: HashMap<OwnedRoomId, BTreeSet<OwnedRoomId>> = HashMap::new();
        for (name, list) in &req.lists {
            let mut matching = Vec::new();
            for (room_id, candidate) in &sorted {
                if self.passes(user, room_id, candidate, &list.filters, &mut facts, &mut space_children)? {
                    matching.push((*room_id).clone());
                }
            }
            selection.counts.insert(name.clone(), matching.len());
            // Overlapping ranges show a room once.
            let mut indexes = BTreeSet::new();
            for &(start, end) in &list.ranges {
                let start = usize::try_from(start).unwrap_or(usize::MAX);
                let end = usize::try_from(end).unwrap_or(usize::MAX);
                if start > end || start >= matching.len() {
                    continue;
                }
                indexes.extend(start..=end.min(matching.len() - 1));
            }
            let mut shown = Vec::with_capacity(indexes.len());
            for index in indexes {
                let room_id = &matching[index];
                selection.rooms.entry(room_id.clone()).or_default().merge(&list.room);
                shown.push(room_id.clone());
            }
            selection.in_lists.insert(name.clone(), shown);
        }
        for (room_id, config) in &req.subscriptions {
            // A room the user has no place in is not theirs to subscribe to; it is left out, as
            // a room that does not exist is.
            if selection.candidates.contains_key(room_id) {
                selection.rooms.entry(room_id.clone()).or_default().merge(config);
                selection.subscribed.insert(room_id.clone());
            }
        }
        Ok(selection)
    }

    /// Rooms named in the user's `m.direct` account data.
    fn direct_rooms(&self, user: &UserId) -> Result<BTreeSet<OwnedRoomId>> {
        let Some(Value::Object(direct)) = self.account_data.global(user, "m.direct")? else {
            return Ok(BTreeSet::new());
        };
        Ok(direct
            .values()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(|r| r.as_str().and_then(|r| RoomId::parse(r).ok()))
            .collect())
    }

    fn membership_event(&self, record: &MembershipRecord) -> Result<Option<Pdu>> {
        let Some(own) = self.rooms.pdu_record(&record.event_id)? else { return Ok(None) };
        Ok(crate::rooms::servable(&record.event_id, &own))
    }

    /// The position of the room's last bump event at or below `until`, if one is recent.
    pub(super) fn bump_stamp(&self, room_id: &RoomId, until: u64) -> Result<Option<u64>> {
        let room = room_id.to_owned();
        let (low, high) = ((room.clone(), 0), (room, until));
        let entries = self.db.range::<RoomTimeline>(
            Bound::Included(&low),
            Bound::Included(&high),
            Direction::Backward,
        )?;
        for entry in entries.take(BUMP_SCAN) {
            let ((_, pos), event_id) = entry?;
            let Some(record) = self.rooms.pdu_record(&event_id)? else { continue };
            match serde_json::from_str::<TypeOnly>(&record.json) {
                Ok(t) if BUMP_TYPES.contains(&t.kind.as_str()) => return Ok(Some(pos)),
                Ok(_) => {}
                Err(error) => tracing::warn!(%event_id, %error, "skipping an unreadable stored event"),
            }
        }
        Ok(None)
    }

    fn passes(
        &self,
        user: &UserId,
        room_id: &RoomId,
        candidate: &Candidate,
        filters: &ListFilters,
        facts: &mut HashMap<OwnedRoomId, Facts>,
        space_children: &mut HashMap<OwnedRoomId, BTreeSet<OwnedRoomId>>,
    ) -> Result<bool> {
        if filters.is_dm.is_some_and(|dm| dm != candidate.dm) {
            return Ok(false);
        }
        if filters.is_invite.is_some_and(|invite| invite != (candidate.membership == MembershipState::Invite))
        {
            return Ok(false);
        }
        if let Some(spaces) = &filters.spaces {
            let mut inside = false;
            for space in spaces {
                if !space_children.contains_key(space) {
                    let children = self.space_children(user, space)?;
                    space_children.insert(space.clone(), children);
                }
                inside |= space_children[space].contains(room_id);
            }
            if !inside {
                return Ok(false);
            }
        }
        let needs_facts = filters.is_encrypted.is_some()
            || filters.room_types.is_some()
            || !filters.not_room_types.is_empty()
            || filters.tags.is_some()
            || !filters.not_tags.is_empty();
        if !needs_facts {
            return Ok(true);
        }
        if !facts.contains_key(room_id) {
            let found = self.room_facts(user, room_id)?;
            facts.insert(room_id.to_owned(), found);
        }
        let facts = &facts[room_id];
        Ok(filters.is_encrypted.is_none_or(|e| e == facts.encrypted)
            && filters.room_types.as_ref().is_none_or(|types| types.contains(&facts.room_type))
            && !filters.not_room_types.contains(&facts.room_type)
            && filters.tags.as_ref().is_none_or(|tags| tags.iter().any(|t| facts.tags.contains(t)))
            && !filters.not_tags.iter().any(|t| facts.tags.contains(t)))
    }

    fn room_facts(&self, user: &UserId, room_id: &RoomId) -> Result<Facts> {
        let tags = match self.account_data.room(user, room_id, "m.tag")? {
            Some(content) => {
                content["tags"].as_object().map(|t| t.keys().cloned().collect()).unwrap_or_default()
            }
            None => Vec::new(),
        };
        if let Some(outside) = self.rooms.outside_room(user, room_id)? {
            // Not a room this server is in: what the invite carried.
            let find = |kind: &str| outside.stripped_state.iter().find(|e| e["type"] == kind).cloned();
            return Ok(Facts {
                encrypted: find("m.room.encryption").is_some(),
                room_type: find("m.room.create")
                    .and_then(|e| e["content"]["type"].as_str().map(str::to_owned)),
                tags,
            });
        }
        let state = |kind: &str| self.rooms.current_state_event(room_id, kind, "");
        Ok(Facts {
            encrypted: state("m.room.encryption")?.is_some(),
            room_type: self.rooms.room_type(room_id)?.map(|t| t.to_string()),
            tags,
        })
    }

    /// The rooms a space names as children (`m.space.child` with a `via`), when the user may
    /// see the space.
    fn space_children(&self, user: &UserId, space: &RoomId) -> Result<BTreeSet<OwnedRoomId>> {
        let member = self.rooms.membership(space, user)?.is_some_and(|m| m == MembershipState::Join);
        if !member {
            return Ok(BTreeSet::new());
        }
        let Some(group) = self.rooms.state_group_at_position(space, u64::MAX)? else {
            return Ok(BTreeSet::new());
        };
        let mut children = BTreeSet::new();
        for ((kind, key), event_id) in self.rooms.state_map(group)? {
            if kind != TimelineEventType::SpaceChild.to_string() {
                continue;
            }
            let Some(record) = self.rooms.pdu_record(&event_id)? else { continue };
            let Some(pdu) = crate::rooms::servable(&event_id, &record) else { continue };
            if crate::rooms::valid_via(&pdu.content_json()).is_some()
                && let Ok(child) = RoomId::parse(&key)
            {
                children.insert(child);
            }
        }
        Ok(children)
    }
}

/// Whoever else is in the room, for naming it: joined members first, then invited, five at most.
pub(super) fn heroes(members: &crate::rooms::Members, user: &UserId) -> Vec<OwnedUserId> {
    members.joined.iter().chain(members.invited.iter()).filter(|u| *u != user).take(5).cloned().collect()
}
