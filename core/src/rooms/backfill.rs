//! History older than anything this server saw live, fetched from other servers (backfill),
//! placed before the room's timeline in `room_backfill` (see [`super::timeline::TimelineKey`]).
//! Backfilled events go through the same checks as live ones (their auth events, the state
//! before them) and get a state group, so history visibility works on them as on any event;
//! they never touch the current state, the membership tables or the stream, so sync does not
//! show them as new.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use hearth_storage::{
    Batch, Direction,
    records::PduRecord,
    schema::{Pdus, RoomBackfill, RoomTimeline, Rooms as RoomsTable},
};
use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId};

use super::{Rooms, state::StateMap};
use crate::{Error, Result, events::Pdu, users::blocking};

/// Events at each end of the known history whose prev events are looked at to find where
/// history continues.
const EDGE: usize = 50;
/// Most events one backfill request asks for.
const MAX_FRONTIER: usize = 20;

impl Rooms {
    /// Whether the event has a place in its room's timeline order (live, backfilled, or
    /// soft-failed with its state computed): such an event is not fetched again.
    fn is_placed(&self, event_id: &EventId) -> Result<bool> {
        Ok(self
            .pdu_record(event_id)?
            .is_some_and(|r| r.stream_pos.is_some() || r.backfill.is_some() || r.state_group != 0))
    }

    /// The events just before the oldest history this server has: prev events of the oldest
    /// timeline and backfilled events that have no place yet. Empty when history is complete
    /// (it reaches the room's create event), as it always is for rooms created here.
    pub fn backfill_frontier(&self, room_id: &RoomId) -> Result<Vec<OwnedEventId>> {
        let room = room_id.to_owned();
        let mut edge = Vec::new();
        for entry in self.db().scan_prefix::<RoomTimeline, _>(&room)?.take(EDGE) {
            edge.push(entry?.1);
        }
        for entry in self.db().scan_prefix_dir::<RoomBackfill, _>(&room, Direction::Backward)?.take(EDGE) {
            edge.push(entry?.1);
        }
        let mut frontier = BTreeSet::new();
        for event_id in edge {
            let Some(pdu) = self.pdu(&event_id)? else { continue };
            for prev in pdu.prev_events {
                if !self.is_placed(&prev)? {
                    frontier.insert(prev);
                }
            }
        }
        Ok(frontier.into_iter().take(MAX_FRONTIER).collect())
    }

    /// Places verified events fetched by backfill before the room's known history, newest
    /// first. `known_before` holds the state before events whose prev events are not here
    /// (asked of the remote server). Events that fail their checks, or whose state cannot be
    /// known, are left out. Returns how many were placed.
    pub async fn store_backfilled(
        &self,
        room_id: &RoomId,
        events: Vec<(OwnedEventId, String)>,
        known_before: HashMap<OwnedEventId, StateMap>,
    ) -> Result<usize> {
        let _guard = self.lock(room_id).await?;
        let this = self.clone();
        let room_id = room_id.to_owned();
        blocking(move || this.backfill_blocking(&room_id, events, known_before)).await
    }

    fn backfill_blocking(
        &self,
        room_id: &OwnedRoomId,
        events: Vec<(OwnedEventId, String)>,
        mut known_before: HashMap<OwnedEventId, StateMap>,
    ) -> Result<usize> {
        let db = self.db();
        let room = db.get::<RoomsTable>(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let (_, rules) = self.version(&room)?;
        let mut pdus = Vec::new();
        for (event_id, json) in events {
            if self.is_placed(&event_id)? {
                continue;
            }
            let pdu = Pdu::from_json(event_id, &json)?;
            if pdu.room_id.as_ref().is_some_and(|r| r != room_id) {
                continue;
            }
            pdus.push((pdu, json));
        }
        // Newest first gets the place closest to the known history; depth orders the graph,
        // the timestamp and the ID break ties so the order is the same on every run.
        pdus.sort_by(|(a, _), (b, _)| {
            (b.depth, b.origin_server_ts, &b.event_id).cmp(&(a.depth, a.origin_server_ts, &a.event_id))
        });
        pdus.dedup_by(|(a, _), (b, _)| a.event_id == b.event_id);
        let first_seq = db
            .scan_prefix_dir::<RoomBackfill, _>(room_id, Direction::Backward)?
            .next()
            .transpose()?
            .map_or(1, |((_, seq), _)| seq + 1);
        let seqs: BTreeMap<OwnedEventId, u64> =
            pdus.iter().zip(first_seq..).map(|((pdu, _), seq)| (pdu.event_id.clone(), seq)).collect();

        let mut placed = 0;
        // Oldest first, so each event's prev events have their state before it needs it.
        for (pdu, json) in pdus.into_iter().rev() {
            let event_id = pdu.event_id.clone();
            let before =
                known_before.remove(&event_id).or_else(|| pdu.prev_events.is_empty().then(StateMap::new));
            let mut batch = Batch::new();
            let (before, _, after_group) = match self.authorize(&mut batch, room_id, &pdu, &rules, before) {
                Ok(done) => done,
                Err(error) => {
                    tracing::info!(%event_id, %room_id, %error, "left out a backfilled event");
                    continue;
                }
            };
            let seq = seqs.get(&event_id).copied().ok_or_else(|| Error::internal("backfill order lost"))?;
            let record = PduRecord {
                replaces_state: pdu
                    .state_key
                    .as_ref()
                    .and_then(|key| before.get(&(pdu.kind.to_string(), key.clone())).cloned()),
                backfill: Some(seq),
                ..super::event_record(room_id, json, after_group)
            };
            batch.put::<Pdus>(&event_id, &record)?;
            batch.put::<RoomBackfill>(&(room_id.clone(), seq), &event_id)?;
            // One write per event: the next event's state group may build on this one's.
            db.write(batch)?;
            placed += 1;
        }
        Ok(placed)
    }
}
