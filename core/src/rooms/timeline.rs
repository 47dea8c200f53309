//! Reading a room's timeline: pages in either direction, filtered by what the reader may see,
//! and events in the client format.

use ruma::events::room::member::MembershipState;
use std::ops::Bound;

use hearth_storage::{
    Direction,
    records::PduRecord,
    schema::{RoomBackfill, RoomTimeline},
};
use ruma::{DeviceId, EventId, OwnedEventId, OwnedRoomId, RoomId, UserId};
use serde_json::Value;

use super::{
    Rooms,
    view::{Viewer, history_token},
};
use crate::{
    Error, Result,
    events::{
        Pdu,
        client::{Unsigned, client_event},
        pdu::parse_object,
    },
    json,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageDirection {
    Backward,
    Forward,
}

/// A place in a room's timeline order. Events this server appended or received live sit at
/// their stream position (`>= 1`); history fetched later from other servers (backfill) sits
/// before all of them, the `n`th backfilled event at `-n`. A boundary between events uses the
/// same numbers: a backward page from `k` starts with the event at `k`, a forward page after it.
pub type TimelineKey = i64;

/// Where an event sits in its room's timeline order, if it has a place (outliers and
/// soft-failed events have none).
pub fn timeline_key(record: &PduRecord) -> Option<TimelineKey> {
    match (record.stream_pos, record.backfill) {
        (Some(pos), _) => Some(live_key(pos)),
        (None, Some(seq)) => Some(backfill_key(seq)),
        (None, None) => None,
    }
}

/// A page of a timeline. `next` is the boundary to continue from, or `None` at the end.
#[derive(Debug)]
pub struct Page<K = u64> {
    pub events: Vec<(K, Pdu, PduRecord)>,
    pub next: Option<K>,
}

/// Events scanned per request at most, so a filter matching nothing cannot make one request
/// walk a whole room.
const MAX_SCAN: usize = 5_000;

type KeyedIter<'a> = Box<dyn Iterator<Item = Result<(TimelineKey, OwnedEventId)>> + 'a>;

/// The events around one event (see [`Rooms::around`]).
#[derive(Debug)]
pub struct Around {
    /// Before it, newest first.
    pub before: Vec<(TimelineKey, Pdu, PduRecord)>,
    /// After it, oldest first.
    pub after: Vec<(TimelineKey, Pdu, PduRecord)>,
    /// Pages on backward from the earliest of them.
    pub start: String,
    /// Pages on forward from the latest of them.
    pub end: String,
}

fn to_seq(key: TimelineKey) -> u64 {
    key.unsigned_abs()
}

fn live_key(pos: u64) -> TimelineKey {
    i64::try_from(pos).unwrap_or(i64::MAX)
}

/// Backfill keys are `-seq`: going back in time is going up in `seq`.
fn backfill_key(seq: u64) -> TimelineKey {
    -i64::try_from(seq).unwrap_or(i64::MAX)
}

impl Rooms {
    /// The last `limit` events of `(since, until]` that `keep` passes, oldest first, for a sync
    /// timeline; whether the window holds more than that; and whether it was cut at a gap.
    /// History this server never received sits before a gap event: what precedes it is not
    /// continuous with what follows, so the window starts at the latest gap. A limit of 0 asks
    /// for no events, but whether there were any is still said.
    #[allow(clippy::type_complexity)]
    pub(crate) fn latest_window(
        &self,
        room_id: &RoomId,
        user: &UserId,
        since: Option<u64>,
        until: u64,
        limit: usize,
        keep: &dyn Fn(&Pdu) -> Result<bool>,
    ) -> Result<(Vec<(u64, Pdu, PduRecord)>, bool, bool)> {
        let page =
            self.page(room_id, user, Some(until), since, PageDirection::Backward, limit.max(1), keep)?;
        let (mut events, more) = if limit == 0 {
            (Vec::new(), !page.events.is_empty())
        } else {
            (page.events, page.next.is_some())
        };
        events.reverse();
        let gap = match events.iter().rposition(|(_, _, record)| record.gap_before) {
            Some(cut) => {
                events.drain(..cut);
                true
            }
            None => false,
        };
        Ok((events, more, gap))
    }

    /// Events of the live timeline (stream positions only) from the boundary `from` in
    /// `direction`: backward pages hold positions `<= from`, forward pages positions `> from`.
    /// Only events `user` may see, and that pass `keep`, are returned; at most `limit` of them;
    /// never past `until`. Backfilled history is left out: see [`Rooms::history_page`].
    #[allow(clippy::too_many_arguments)]
    pub fn page(
        &self,
        room_id: &RoomId,
        user: &UserId,
        from: Option<u64>,
        until: Option<u64>,
        direction: PageDirection,
        limit: usize,
        keep: &dyn Fn(&Pdu) -> Result<bool>,
    ) -> Result<Page> {
        let key = |p: u64| i64::try_from(p).unwrap_or(i64::MAX);
        let (from, until) = match direction {
            PageDirection::Backward => (from.map(key), Some(until.map_or(0, key))),
            PageDirection::Forward => (Some(from.map_or(0, key)), until.map(key)),
        };
        let page = self.history_page(room_id, user, from, until, direction, limit, keep)?;
        let pos = |k: TimelineKey| u64::try_from(k).unwrap_or(0);
        Ok(Page {
            events: page.events.into_iter().map(|(k, pdu, record)| (pos(k), pdu, record)).collect(),
            next: page.next.map(pos),
        })
    }

    /// Events of a room in timeline order, backfilled history included, from the boundary
    /// `from` in `direction` (backward: keys `<= from`, from the newest when `None`; forward:
    /// keys `> from`, from the oldest when `None`), never past `until`, filtered like
    /// [`Rooms::page`].
    #[allow(clippy::too_many_arguments)]
    pub fn history_page(
        &self,
        room_id: &RoomId,
        user: &UserId,
        from: Option<TimelineKey>,
        until: Option<TimelineKey>,
        direction: PageDirection,
        limit: usize,
        keep: &dyn Fn(&Pdu) -> Result<bool>,
    ) -> Result<Page<TimelineKey>> {
        let horizon = i64::try_from(self.read_access(room_id, user)?).unwrap_or(i64::MAX);
        let entries = match direction {
            PageDirection::Backward => {
                self.keys_backward(room_id, from.unwrap_or(i64::MAX).min(horizon), until)?
            }
            PageDirection::Forward => {
                self.keys_forward(room_id, from, until.unwrap_or(i64::MAX).min(horizon))?
            }
        };
        let mut viewer = Viewer::new(self, room_id, user)?;
        let mut events = Vec::new();
        let mut last_scanned = None;
        let mut exhausted = true;
        for (scanned, entry) in entries.enumerate() {
            if events.len() >= limit || scanned >= MAX_SCAN {
                exhausted = false;
                break;
            }
            let (key, event_id) = entry?;
            last_scanned = Some(key);
            let Some(record) = self.pdu_record(&event_id)? else { continue };
            let Some(pdu) = servable(&event_id, &record) else { continue };
            if viewer.can_see(&pdu, &record)? && keep(&pdu)? {
                events.push((key, pdu, record));
            }
        }
        let next = match (exhausted, last_scanned, direction) {
            (true, _, _) | (_, None, _) => None,
            (false, Some(key), PageDirection::Backward) => Some(key.saturating_sub(1)),
            (false, Some(key), PageDirection::Forward) => Some(key),
        };
        Ok(Page { events, next })
    }

    /// Entries of a per-room ordering table (`room_timeline` by stream position, or
    /// `room_backfill` by how far back) within the bounds, with their timeline keys.
    fn ordered<T>(
        &self,
        room_id: &RoomId,
        (low, high): (Bound<u64>, Bound<u64>),
        key: fn(u64) -> TimelineKey,
        dir: Direction,
    ) -> Result<KeyedIter<'_>>
    where
        T: hearth_storage::schema::Table<Key = (OwnedRoomId, u64), Value = OwnedEventId>,
    {
        let room = room_id.to_owned();
        let bound = |b: Bound<u64>| b.map(|p| (room.clone(), p));
        let (low, high) = (bound(low), bound(high));
        let entries = self.db().range::<T>(low.as_ref(), high.as_ref(), dir)?;
        Ok(Box::new(entries.map(move |e| {
            let ((_, n), id) = e?;
            Ok((key(n), id))
        })))
    }

    /// Keys `<= from` and `> until`, newest first: the live timeline, then backfilled history.
    fn keys_backward(
        &self,
        room_id: &RoomId,
        from: TimelineKey,
        until: Option<TimelineKey>,
    ) -> Result<KeyedIter<'_>> {
        let lower = until.unwrap_or(i64::MIN);
        let mut parts: Vec<KeyedIter<'_>> = Vec::new();
        if from >= 1 && lower < from {
            let low = u64::try_from(lower.saturating_add(1)).unwrap_or(0);
            let high = u64::try_from(from).unwrap_or(0);
            let bounds = (Bound::Included(low), Bound::Included(high));
            parts.push(self.ordered::<RoomTimeline>(room_id, bounds, live_key, Direction::Backward)?);
        }
        if lower < 0 && lower < from {
            let first = Bound::Included(to_seq(from.min(0)).max(1));
            let last = if lower == i64::MIN { Bound::Unbounded } else { Bound::Excluded(to_seq(lower)) };
            parts.push(self.ordered::<RoomBackfill>(
                room_id,
                (first, last),
                backfill_key,
                Direction::Forward,
            )?);
        }
        Ok(Box::new(parts.into_iter().flatten()))
    }

    /// Keys `> from` and `<= until`, oldest first: backfilled history, then the live timeline.
    fn keys_forward(
        &self,
        room_id: &RoomId,
        from: Option<TimelineKey>,
        until: TimelineKey,
    ) -> Result<KeyedIter<'_>> {
        let from = from.unwrap_or(i64::MIN);
        let mut parts: Vec<KeyedIter<'_>> = Vec::new();
        if from < 0 && from < until {
            let newest = Bound::Included(to_seq(until.min(-1)).max(1));
            let oldest = if from == i64::MIN { Bound::Unbounded } else { Bound::Excluded(to_seq(from)) };
            parts.push(self.ordered::<RoomBackfill>(
                room_id,
                (newest, oldest),
                backfill_key,
                Direction::Backward,
            )?);
        }
        if until >= 1 && from < until {
            let low = u64::try_from(from.max(0)).unwrap_or(0);
            let high = u64::try_from(until).unwrap_or(0);
            let bounds = (Bound::Excluded(low), Bound::Included(high));
            parts.push(self.ordered::<RoomTimeline>(room_id, bounds, live_key, Direction::Forward)?);
        }
        Ok(Box::new(parts.into_iter().flatten()))
    }

    /// The events around the one at `key` that `user` may see and `keep` keeps, at most
    /// `before_limit` before (newest first) and `after_limit` after, with the tokens that page
    /// on from either end: what `/context` and a search result's context give.
    #[allow(clippy::too_many_arguments)]
    pub fn around(
        &self,
        room_id: &RoomId,
        user: &UserId,
        key: TimelineKey,
        before_limit: usize,
        after_limit: usize,
        keep: &dyn Fn(&Pdu) -> Result<bool>,
    ) -> Result<Around> {
        let before = self.history_page(
            room_id,
            user,
            Some(key - 1),
            None,
            PageDirection::Backward,
            before_limit,
            keep,
        )?;
        let after =
            self.history_page(room_id, user, Some(key), None, PageDirection::Forward, after_limit, keep)?;
        let earliest = before.events.last().map_or(key, |(k, ..)| *k);
        let start = history_token(before.next.unwrap_or(earliest.saturating_sub(1)));
        let latest = after.events.last().map_or(key, |(k, ..)| *k);
        let end = history_token(after.next.unwrap_or(latest));
        Ok(Around { before: before.events, after: after.events, start, end })
    }

    /// An event in the client format, with `unsigned` as `viewer` (on `device`) should see it,
    /// bundled aggregations included.
    pub fn client_event(
        &self,
        event_id: &EventId,
        record: &PduRecord,
        viewer: &UserId,
        device: Option<&DeviceId>,
    ) -> Result<Value> {
        self.client_event_with(event_id, record, viewer, device, true)
    }

    /// [`Self::client_event`], with or without bundled aggregations (events inside an
    /// aggregation carry none, as in Synapse).
    pub(super) fn client_event_with(
        &self,
        event_id: &EventId,
        record: &PduRecord,
        viewer: &UserId,
        device: Option<&DeviceId>,
        bundle: bool,
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
            if let Some(prev) = self.pdu_record(replaced)?.and_then(|r| servable(replaced, &r)) {
                extra.prev_content = Some(prev.content_json());
                extra.prev_sender = Some(prev.sender.to_string());
            }
        }
        if let Some(redaction) = &record.redacted_by
            && let Some(redaction_record) = self.pdu_record(redaction)?
            && servable(redaction, &redaction_record).is_some()
        {
            let because = parse_object(&redaction_record.json)?;
            extra.redacted_because =
                Some(client_event(redaction, &redaction_record.room_id, &because, Unsigned::default()));
        }
        // The viewer's membership after the event: "leave" before they ever joined. Outliers
        // have no place in the room's history, so no membership at them either.
        if timeline_key(record).is_some() {
            let membership = self.membership_at(record.state_group, viewer)?;
            extra.membership = Some(membership.unwrap_or(MembershipState::Leave).as_str().to_owned());
        }
        if bundle && record.redacted_by.is_none() {
            extra.relations = self.bundled_aggregations(event_id, record, &object, viewer)?;
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
        let horizon = i64::try_from(self.read_access(room_id, user)?).unwrap_or(i64::MAX);
        let Some(record) = self.pdu_record(event_id)? else { return Ok(None) };
        if record.room_id != room_id || timeline_key(&record).is_none_or(|k| k > horizon) {
            return Ok(None);
        }
        let Some(pdu) = servable(event_id, &record) else { return Ok(None) };
        if Viewer::new(self, room_id, user)?.can_see(&pdu, &record)? {
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
        self.state_lookup(group, kind, key)
    }

    /// The state events of a state group.
    pub fn state_events(&self, group: u64) -> Result<Vec<(OwnedEventId, PduRecord, Pdu)>> {
        let map = super::state::load(self.db(), group)?;
        let mut out = Vec::with_capacity(map.len());
        for event_id in map.into_values() {
            if let Some(record) = self.pdu_record(&event_id)?
                && let Some(pdu) = servable(&event_id, &record)
            {
                out.push((event_id, record, pdu));
            }
        }
        Ok(out)
    }
}

/// A stored event parsed for serving, or `None` (logged with its ID) when it cannot be served:
/// it does not parse, or it is nested too deeply to be read back inside a response's envelopes
/// (only possible for events stored before the nesting limit existed). Read paths skip such an
/// event rather than fail the whole response.
pub(crate) fn servable(event_id: &EventId, record: &PduRecord) -> Option<Pdu> {
    let depth = json::depth(record.json.as_bytes());
    if depth > json::MAX_SERVABLE_DEPTH {
        tracing::error!(%event_id, depth, "skipping a stored event nested too deeply to serve");
        return None;
    }
    match Pdu::from_json(event_id.to_owned(), &record.json) {
        Ok(pdu) => Some(pdu),
        Err(error) => {
            tracing::error!(%event_id, %error, "skipping a stored event that cannot be read");
            None
        }
    }
}
