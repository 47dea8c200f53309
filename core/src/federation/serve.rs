//! Reads other servers may make of our rooms: single events, the events they missed, and the
//! state at an event. Only servers with a member in the room may read it, and events from when
//! history was hidden from all of a server's users come redacted (`ServerViewer`).

use ruma::events::room::{history_visibility::HistoryVisibility, member::MembershipState};
use std::collections::{BTreeSet, HashMap, VecDeque};

use hearth_storage::{records::PduRecord, schema::RoomMembers};
use ruma::{CanonicalJsonObject, EventId, OwnedEventId, RoomId, ServerName, canonical_json::redact};

use crate::{Error, Homeserver, Result, events::state_res::auth_chain};

/// Most events one `get_missing_events` answers with.
const MAX_MISSING: usize = 50;

impl Homeserver {
    /// Whether `server` has, or had, a member in the room.
    fn server_in_room(&self, server: &ServerName, room_id: &RoomId) -> Result<bool> {
        for entry in self.db.scan_prefix::<RoomMembers, _>(&room_id.to_owned())? {
            let ((_, user), _) = entry?;
            if user.server_name() == server {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub(super) fn require_server_in_room(&self, server: &ServerName, room_id: &RoomId) -> Result<()> {
        self.require_acl(room_id, server)?;
        if self.server_in_room(server, room_id)? {
            Ok(())
        } else {
            Err(Error::forbidden("Your server is not in this room"))
        }
    }

    /// `GET /event/{eventId}`: the stored JSON of one event.
    pub fn event_for_server(&self, origin: &ServerName, event_id: &EventId) -> Result<String> {
        let record = self.rooms.pdu_record(event_id)?.ok_or_else(|| Error::not_found("Event not found"))?;
        self.require_server_in_room(origin, &record.room_id)?;
        Ok(record.json)
    }

    /// `POST /get_missing_events`: events reachable backwards from `latest` through
    /// `prev_events`, stopping at `earliest`, oldest first.
    pub fn missing_events(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        earliest: &[OwnedEventId],
        latest: &[OwnedEventId],
        limit: usize,
    ) -> Result<Vec<String>> {
        self.require_server_in_room(origin, room_id)?;
        let limit = limit.min(MAX_MISSING);
        let stop: BTreeSet<&OwnedEventId> = earliest.iter().collect();
        let mut seen: BTreeSet<OwnedEventId> = latest.iter().cloned().collect();
        let mut queue: VecDeque<OwnedEventId> = VecDeque::new();
        for id in latest {
            if let Some(pdu) = self.rooms.pdu(id)? {
                queue.extend(pdu.prev_events);
            }
        }
        let mut found = Vec::new();
        while let Some(id) = queue.pop_front() {
            if found.len() >= limit {
                break;
            }
            if stop.contains(&id) || !seen.insert(id.clone()) {
                continue;
            }
            let Some(record) = self.rooms.pdu_record(&id)? else { continue };
            if record.room_id != room_id {
                continue;
            }
            let pdu = crate::events::Pdu::from_json(id.clone(), &record.json)?;
            queue.extend(pdu.prev_events.iter().cloned());
            found.push((pdu.depth, record));
        }
        found.sort_by_key(|(depth, _)| *depth);
        let mut viewer = ServerViewer::new(self, origin, room_id)?;
        found.into_iter().map(|(_, record)| viewer.shown(record)).collect()
    }

    /// `GET /state_ids`: the state before `event_id` and the auth chain of that state.
    pub fn state_ids_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<(Vec<OwnedEventId>, Vec<OwnedEventId>)> {
        self.require_server_in_room(origin, room_id)?;
        let record = self.rooms.pdu_record(event_id)?.ok_or_else(|| Error::not_found("Event not found"))?;
        if record.room_id != room_id || record.state_group == 0 {
            return Err(Error::not_found("No state known at that event"));
        }
        let mut state = crate::rooms::state::load(&self.db, record.state_group)?;
        let pdu = crate::events::Pdu::from_json(event_id.to_owned(), &record.json)?;
        if let Some(key) = pdu.state_key {
            let slot = (pdu.kind.to_string(), key);
            match record.replaces_state {
                Some(previous) => state.insert(slot, previous),
                None => state.remove(&slot),
            };
        }
        let ids: Vec<OwnedEventId> = state.into_values().collect();
        let reads = crate::rooms::Reads::default();
        let fetch = |id: &EventId| reads.keep(self.rooms.pdu(id));
        let chain = auth_chain(ids.iter(), &fetch);
        Ok((reads.finish(chain)?.into_iter().collect(), ids))
    }
}

/// What another server may see of a room's events: an event its users could not see when it
/// was sent (history visibility `joined` or `invited` and none of them joined, or invited, at
/// the time) is given redacted, as Synapse does, so the graph stays whole.
pub(crate) struct ServerViewer<'a> {
    hs: &'a Homeserver,
    server: &'a ServerName,
    rules: ruma::room_version_rules::RoomVersionRules,
    memo: HashMap<u64, bool>,
}

impl<'a> ServerViewer<'a> {
    pub(crate) fn new(hs: &'a Homeserver, server: &'a ServerName, room_id: &RoomId) -> Result<Self> {
        Ok(Self { hs, server, rules: hs.room_rules(room_id)?, memo: HashMap::new() })
    }

    fn visible(&mut self, group: u64) -> Result<bool> {
        if let Some(visible) = self.memo.get(&group) {
            return Ok(*visible);
        }
        let db = &self.hs.db;
        let rooms = &self.hs.rooms;
        let setting = match rooms.state_entry(group, "m.room.history_visibility", "")? {
            Some(id) => crate::rooms::view::visibility_of(rooms.pdu(&id)?.as_ref()),
            None => HistoryVisibility::Shared,
        };
        let allowed: &[MembershipState] = match setting {
            HistoryVisibility::Joined => &[MembershipState::Join],
            HistoryVisibility::Invited => &[MembershipState::Join, MembershipState::Invite],
            // World-readable and shared history is for every server.
            _ => {
                self.memo.insert(group, true);
                return Ok(true);
            }
        };
        let mut visible = false;
        for ((kind, key), id) in crate::rooms::state::load(db, group)? {
            let ours = kind == "m.room.member"
                && ruma::UserId::parse(&key).is_ok_and(|user| user.server_name() == self.server);
            if ours && rooms.pdu(&id)?.and_then(|pdu| pdu.membership()).is_some_and(|m| allowed.contains(&m))
            {
                visible = true;
                break;
            }
        }
        self.memo.insert(group, visible);
        Ok(visible)
    }

    /// The event's JSON as the server may have it.
    pub(crate) fn shown(&mut self, record: PduRecord) -> Result<String> {
        if record.state_group == 0 || self.visible(record.state_group)? {
            return Ok(record.json);
        }
        let object: CanonicalJsonObject = serde_json::from_str(&record.json).map_err(Error::internal)?;
        let redacted = redact(object, &self.rules.redaction, None).map_err(Error::internal)?;
        crate::events::pdu::to_json_string(&redacted)
    }
}
