//! Reading a room's timeline: pages in either direction, filtered by what the reader may see,
//! and events in the client format.

use std::ops::Bound;

use hearth_storage::{Direction, records::PduRecord, schema::RoomTimeline};
use ruma::{DeviceId, EventId, OwnedEventId, RoomId, UserId, events::TimelineEventType};
use serde_json::Value;

use super::{Rooms, visibility::Viewer};
use crate::{
    Error, Result,
    events::{
        Pdu,
        client::{Unsigned, client_event},
        pdu::parse_object,
    },
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageDirection {
    Backward,
    Forward,
}

/// A page of a timeline. `next` is the position to continue from, or `None` at the end.
#[derive(Debug)]
pub struct Page {
    pub events: Vec<(u64, Pdu, PduRecord)>,
    pub next: Option<u64>,
}

/// Events scanned per request at most, so a filter matching nothing cannot make one request
/// walk a whole room.
const MAX_SCAN: usize = 5_000;

impl Rooms {
    /// Whether `user` may read this room's history at all (members past and present, and anyone
    /// when it is world-readable), and up to which position (a user who left sees nothing after).
    pub fn read_access(&self, room_id: &RoomId, user: &UserId) -> Result<u64> {
        if !self.exists(room_id)? {
            return Err(Error::forbidden("You are not allowed to view this room"));
        }
        match self.membership(room_id, user)?.as_deref() {
            Some("join") => Ok(u64::MAX),
            Some("leave" | "ban") => {
                let record = self
                    .db()
                    .get::<hearth_storage::schema::UserRooms>(&(user.to_owned(), room_id.to_owned()))?;
                Ok(record.map_or(0, |r| r.stream_pos))
            }
            _ => {
                let world_readable = self
                    .current_state_event(room_id, "m.room.history_visibility", "")?
                    .and_then(|p| p.content_str("history_visibility"))
                    .is_some_and(|v| v == "world_readable");
                if world_readable {
                    Ok(u64::MAX)
                } else {
                    Err(Error::forbidden(format!(
                        "User {user} not in room {room_id}, and room previews are disabled"
                    )))
                }
            }
        }
    }

    /// Events of a room from the boundary `from` in `direction`: backward pages hold positions
    /// `<= from`, forward pages positions `> from`. Only events `user` may see, and that pass
    /// `keep`, are returned; at most `limit` of them; never past `until`.
    #[allow(clippy::too_many_arguments)]
    pub fn page(
        &self,
        room_id: &RoomId,
        user: &UserId,
        from: Option<u64>,
        until: Option<u64>,
        direction: PageDirection,
        limit: usize,
        keep: &dyn Fn(&Pdu) -> bool,
    ) -> Result<Page> {
        let horizon = self.read_access(room_id, user)?;
        let room = room_id.to_owned();
        let (lower, upper, dir) = match direction {
            PageDirection::Backward => {
                let from = from.unwrap_or(u64::MAX).min(horizon);
                let lower =
                    until.map_or(Bound::Included((room.clone(), 0)), |u| Bound::Excluded((room.clone(), u)));
                (lower, Bound::Included((room.clone(), from)), Direction::Backward)
            }
            PageDirection::Forward => {
                let from = from.unwrap_or(0);
                let upper = until.unwrap_or(u64::MAX).min(horizon);
                (
                    Bound::Excluded((room.clone(), from)),
                    Bound::Included((room.clone(), upper)),
                    Direction::Forward,
                )
            }
        };
        let mut viewer = Viewer::new(self, room_id, user)?;
        let mut events = Vec::new();
        let mut last_scanned = None;
        let mut exhausted = true;
        for (scanned, entry) in
            self.db().range::<RoomTimeline>(lower.as_ref(), upper.as_ref(), dir)?.enumerate()
        {
            if events.len() >= limit || scanned >= MAX_SCAN {
                exhausted = false;
                break;
            }
            let ((_, pos), event_id) = entry?;
            last_scanned = Some(pos);
            let Some(record) = self.pdu_record(&event_id)? else { continue };
            let pdu = Pdu::from_json(event_id, &record.json)?;
            let own_membership =
                pdu.kind == TimelineEventType::RoomMember && pdu.state_key.as_deref() == Some(user.as_str());
            if (own_membership || viewer.can_see(&record)?) && keep(&pdu) {
                events.push((pos, pdu, record));
            }
        }
        let next = match (exhausted, last_scanned, direction) {
            (true, _, _) | (_, None, _) => None,
            (false, Some(pos), PageDirection::Backward) => Some(pos.saturating_sub(1)),
            (false, Some(pos), PageDirection::Forward) => Some(pos),
        };
        Ok(Page { events, next })
    }

    /// An event in the client format, with `unsigned` as `viewer` (on `device`) should see it.
    pub fn client_event(
        &self,
        event_id: &EventId,
        record: &PduRecord,
        viewer: &UserId,
        device: Option<&DeviceId>,
    ) -> Result<Value> {
        let object = parse_object(&record.json)?;
        let mut extra = Unsigned::default();
        if let Some((txn_device, txn_id)) = &record.txn {
            let sender_is_viewer = object.get("sender").and_then(|s| s.as_str()) == Some(viewer.as_str());
            if sender_is_viewer && device == Some(txn_device.as_ref()) {
                extra.transaction_id = Some(txn_id.clone());
            }
        }
        if let Some(replaced) = &record.replaces_state {
            extra.replaces_state = Some(replaced.clone());
            extra.prev_content = self.pdu(replaced)?.map(|p| p.content_json());
        }
        if let Some(redaction) = &record.redacted_by
            && let Some(redaction_record) = self.pdu_record(redaction)?
        {
            let because = parse_object(&redaction_record.json)?;
            extra.redacted_because =
                Some(client_event(redaction, &redaction_record.room_id, &because, Unsigned::default()));
        }
        let owned: OwnedEventId = event_id.to_owned();
        Ok(client_event(&owned, &record.room_id, &object, extra))
    }

    /// One event, if `user` may see it.
    pub fn visible_event(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        user: &UserId,
    ) -> Result<Option<(Pdu, PduRecord)>> {
        let horizon = self.read_access(room_id, user)?;
        let Some(record) = self.pdu_record(event_id)? else { return Ok(None) };
        if record.room_id != room_id || record.stream_pos.is_none_or(|p| p > horizon) {
            return Ok(None);
        }
        let pdu = Pdu::from_json(event_id.to_owned(), &record.json)?;
        let own =
            pdu.kind == TimelineEventType::RoomMember && pdu.state_key.as_deref() == Some(user.as_str());
        if own || Viewer::new(self, room_id, user)?.can_see(&record)? {
            Ok(Some((pdu, record)))
        } else {
            Ok(None)
        }
    }
}

impl Rooms {
    /// The room state after the last event at or before stream position `pos`.
    pub fn state_at_position(
        &self,
        room_id: &RoomId,
        pos: u64,
    ) -> Result<Vec<(OwnedEventId, PduRecord, Pdu)>> {
        let Some(group) = self.state_group_at_position(room_id, pos)? else { return Ok(Vec::new()) };
        self.state_events(group)
    }

    /// The state group after the last event at or before `pos`, if the room had any event then.
    pub fn state_group_at_position(&self, room_id: &RoomId, pos: u64) -> Result<Option<u64>> {
        let room = self.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        if pos == u64::MAX {
            return Ok(Some(room.current_state_group));
        }
        let upper = (room_id.to_owned(), pos);
        let last = self
            .db()
            .range::<RoomTimeline>(Bound::Unbounded, Bound::Included(&upper), Direction::Backward)?
            .next()
            .transpose()?;
        Ok(match last {
            Some(((found, _), event_id)) if found == room_id => {
                self.pdu_record(&event_id)?.map(|r| r.state_group)
            }
            _ => None,
        })
    }

    /// The state of a group as event IDs, without reading the events.
    pub fn state_map(&self, group: u64) -> Result<super::state::StateMap> {
        super::state::load(self.db(), group)
    }

    /// One entry of a group's state.
    pub fn state_entry(&self, group: u64, kind: &str, key: &str) -> Result<Option<OwnedEventId>> {
        super::state::lookup(self.db(), group, kind, key)
    }

    /// The state events of a state group.
    pub fn state_events(&self, group: u64) -> Result<Vec<(OwnedEventId, PduRecord, Pdu)>> {
        let map = super::state::load(self.db(), group)?;
        let mut out = Vec::with_capacity(map.len());
        for event_id in map.into_values() {
            if let Some(record) = self.pdu_record(&event_id)? {
                let pdu = Pdu::from_json(event_id.clone(), &record.json)?;
                out.push((event_id, record, pdu));
            }
        }
        Ok(out)
    }
}
