//! The remote write path: events other servers created, already checked for signatures and
//! hashes, go through the spec's authorization steps (against their auth events, against the
//! state before them, soft-failing against the current state) and, when the room's graph has
//! forked, through state resolution before they change the current state.

use ruma::events::room::member::MembershipState;
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use hearth_storage::{
    Batch,
    records::{PduRecord, RoomRecord},
    schema::{CurrentState, Pdus, Rooms as RoomsTable},
};
use ruma::{
    EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res,
};

use super::{Reads, Rooms, state, state::StateMap};
use crate::{
    Error, Result,
    events::{Pdu, auth, state_res::resolve},
    users::blocking,
};

/// What became of a received PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// In the timeline; current state updated.
    Accepted,
    /// Stored, but not shown: it passed its own auth but not the room's current state.
    SoftFailed,
    /// Already had it.
    Duplicate,
}

fn to_res(map: &StateMap) -> state_res::StateMap<OwnedEventId> {
    map.iter().map(|((k, s), id)| ((StateEventType::from(k.as_str()), s.clone()), id.clone())).collect()
}

fn from_res(map: state_res::StateMap<OwnedEventId>) -> StateMap {
    map.into_iter().map(|((k, s), id)| ((k.to_string(), s), id)).collect()
}

impl Rooms {
    /// The event a state map names for `(kind, key)`; a failed read is kept in `reads`.
    fn lookup_in(&self, reads: &Reads, map: &StateMap, kind: &StateEventType, key: &str) -> Option<Pdu> {
        map.get(&(kind.to_string(), key.to_owned())).and_then(|id| reads.keep(self.pdu(id)))
    }

    /// Stored events for ruma's callbacks; a failed read is kept in `reads`.
    fn fetch<'a>(&'a self, reads: &'a Reads) -> impl Fn(&EventId) -> Option<Pdu> + 'a {
        |id| reads.keep(self.pdu(id))
    }

    /// State resolution (v2 or v2.1) of several states, with the events read from storage and
    /// `pending`, the event being received: it is not stored until the resolution decides, yet
    /// a state it is in must be resolved with it. Left out, it would drop out of the conflicted
    /// set, and the room's old state would win every conflict with it.
    fn resolve_maps(
        &self,
        rules: &RoomVersionRules,
        maps: &[state_res::StateMap<OwnedEventId>],
        pending: Option<&Pdu>,
    ) -> Result<StateMap> {
        let reads = Reads::default();
        let resolved = {
            let stored = self.fetch(&reads);
            let fetch = |id: &EventId| match pending {
                Some(pdu) if pdu.event_id == id => Some(pdu.clone()),
                _ => stored(id),
            };
            resolve(rules, maps, &fetch)
        };
        reads
            .finish(resolved)?
            .map(from_res)
            .map_err(|e| Error::internal(format!("state resolution failed: {e}")))
    }

    /// The resolution of several states of the room (state resolution v2 or v2.1).
    pub fn resolve_states(&self, rules: &RoomVersionRules, states: &[StateMap]) -> Result<StateMap> {
        let maps: Vec<_> = states.iter().map(to_res).collect();
        self.resolve_maps(rules, &maps, None)
    }

    /// Whether the event is stored (as an outlier or in a timeline).
    pub fn has_event(&self, event_id: &EventId) -> Result<bool> {
        Ok(self.db().contains::<Pdus>(&event_id.to_owned())?)
    }

    /// Stores events outside any timeline (auth chains, state of a room being joined), so
    /// auth checks and state resolution can read them.
    pub async fn store_outliers(&self, room_id: &RoomId, events: Vec<(OwnedEventId, String)>) -> Result<()> {
        let this = self.clone();
        let room_id = room_id.to_owned();
        blocking(move || {
            let mut batch = Batch::new();
            for (event_id, json) in events {
                if this.has_event(&event_id)? {
                    continue;
                }
                batch.put::<Pdus>(&event_id, &super::outlier_record(&room_id, json))?;
            }
            Ok(this.db().write(batch)?)
        })
        .await
    }

    /// Authorizes and persists an event from another server into a room this server is in.
    /// Every auth event must be stored; prev events that are not are left out of the state
    /// calculation. `Err` is the rejection reason.
    pub async fn receive_pdu(&self, room_id: &RoomId, event_id: &EventId, json: String) -> Result<Received> {
        self.receive_pdu_with_state(room_id, event_id, json, None).await
    }

    /// [`Self::receive_pdu`] with the state before the event given, for an event whose prev
    /// events could not be had (the state came from the sending server and was verified).
    pub async fn receive_pdu_with_state(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        json: String,
        state_before: Option<StateMap>,
    ) -> Result<Received> {
        let _guard = self.lock(room_id).await?;
        let this = self.clone();
        let (room_id, event_id) = (room_id.to_owned(), event_id.to_owned());
        let outcome =
            blocking(move || this.receive_blocking(&room_id, &event_id, json, state_before)).await?;
        Ok(match outcome {
            Outcome::Done(received) => received,
            Outcome::Timeline { ticket, wake } => {
                self.inner.streams.finish(ticket, wake);
                Received::Accepted
            }
        })
    }

    fn receive_blocking(
        &self,
        room_id: &OwnedRoomId,
        event_id: &OwnedEventId,
        json: String,
        state_before: Option<StateMap>,
    ) -> Result<Outcome> {
        let db = self.db();
        if let Some(existing) = self.pdu_record(event_id)?
            && (existing.stream_pos.is_some() || existing.state_group != 0)
        {
            return Ok(Outcome::Done(Received::Duplicate));
        }
        let mut room = db.get::<RoomsTable>(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let (_, rules) = self.version(&room)?;
        let pdu = Pdu::from_json(event_id.clone(), &json)?;
        if pdu.room_id.as_ref().is_some_and(|r| r != room_id) {
            return Err(Error::bad_request("event is for another room"));
        }

        // Read before anything is written: a prev event that is unknown, or only an outlier
        // (no place in the timeline, no state), means history is missing here. A soft-failed
        // prev event is no gap: it was received, just not shown.
        let mut gap_before = false;
        for prev in &pdu.prev_events {
            let missing = self
                .pdu_record(prev)?
                .is_none_or(|r| super::timeline::timeline_key(&r).is_none() && r.state_group == 0);
            if missing {
                gap_before = true;
            }
        }
        let mut batch = Batch::new();
        let (before, after, after_group) = self.authorize(&mut batch, room_id, &pdu, &rules, state_before)?;

        // 3. Against the current state: failing here hides the event without rejecting it.
        let current = state::load(db, room.current_state_group)?;
        let reads = Reads::default();
        let checked =
            auth::check(&rules, &pdu, self.fetch(&reads), |k, s| self.lookup_in(&reads, &current, k, s));
        // A storage error is an error, never a soft failure: that would hide the event for good.
        if reads.finish(checked)?.is_err() {
            let record = super::event_record(room_id, json, after_group);
            batch.put::<Pdus>(event_id, &record)?;
            self.commit(batch)?;
            tracing::info!(%event_id, %room_id, "soft-failed a remote event");
            return Ok(Outcome::Done(Received::SoftFailed));
        }

        let mut extremities: Vec<OwnedEventId> =
            room.forward_extremities.iter().filter(|e| !pdu.prev_events.contains(e)).cloned().collect();
        extremities.push(event_id.clone());
        let (new_current, new_group) = if extremities.len() == 1 {
            (after.clone(), after_group)
        } else {
            let resolved = self.resolve_maps(&rules, &[to_res(&current), to_res(&after)], Some(&pdu))?;
            if resolved == current {
                (current.clone(), room.current_state_group)
            } else if resolved == after {
                (after.clone(), after_group)
            } else {
                let id = self.new_state_group_id()?;
                let all: Vec<_> =
                    resolved.iter().map(|((k, s), e)| (k.clone(), s.clone(), e.clone())).collect();
                state::write_group(db, &mut batch, id, None, &all)?;
                (resolved, id)
            }
        };

        let ticket = self.inner.streams.allocate()?;
        let pos = ticket.pos;
        let members = self.members(room_id)?;
        let landing = super::notify::Landing { pdu: &pdu, json: &json, pos };
        self.record_push_actions(&mut batch, room_id, landing, &members, &rules)?;
        let members = members.local.clone();
        let mut targets = BTreeSet::new();
        self.apply_state_diff(
            &mut batch,
            &mut room,
            room_id,
            &current,
            &new_current,
            pos,
            &mut targets,
            &pdu,
        )?;
        if pdu.kind == TimelineEventType::RoomRedaction
            && let Some(target) = &pdu.redacts
            && self.pdu(target)?.is_some_and(|t| t.sender.server_name() == pdu.sender.server_name())
        {
            // Servers may redact their own users' events; other redactions wait for a
            // moderator's, which arrive as their own events.
            self.redact_stored(&mut batch, room_id, target, event_id, &rules)?;
        }
        let record = PduRecord {
            replaces_state: pdu
                .state_key
                .as_ref()
                .and_then(|key| before.get(&(pdu.kind.to_string(), key.clone())).cloned()),
            gap_before,
            ..super::timeline_record(room_id, json, pos, after_group)
        };
        super::put_timeline_event(db, &mut batch, &pdu, &record)?;
        room.forward_extremities = extremities;
        room.max_depth = room.max_depth.max(pdu.depth);
        room.current_state_group = new_group;
        batch.put::<RoomsTable>(room_id, &room)?;
        self.commit(batch)?;
        Ok(Outcome::Timeline { ticket, wake: self.local_wake(members, targets) })
    }

    /// The spec's checks of an event against its own auth events and against the state before
    /// it; on success, adds the state group after it to `batch` and returns the state before,
    /// the state after and that group. `known_before` is the state before an event whose prev
    /// events are not here (history fetched from the beginning of a gap); otherwise it is
    /// computed from the prev events.
    pub(super) fn authorize(
        &self,
        batch: &mut Batch,
        room_id: &RoomId,
        pdu: &Pdu,
        rules: &RoomVersionRules,
        known_before: Option<StateMap>,
    ) -> Result<(StateMap, StateMap, u64)> {
        let db = self.db();
        let event_id = &pdu.event_id;
        // 1. Against its own auth events.
        let mut auth_events = Vec::new();
        for id in &pdu.auth_events {
            auth_events
                .push(self.pdu(id)?.ok_or_else(|| Error::forbidden(format!("auth event {id} is unknown")))?);
        }
        let reads = Reads::default();
        let by_auth = |kind: &StateEventType, key: &str| {
            auth_events
                .iter()
                .find(|p| p.kind.to_string() == kind.to_string() && p.state_key.as_deref() == Some(key))
                .cloned()
                // From room version 12 the create event is implied by the room ID, not listed.
                .or_else(|| {
                    (*kind == StateEventType::RoomCreate)
                        .then(|| reads.keep(self.current_state_event(room_id, "m.room.create", "")))
                        .flatten()
                })
        };
        let checked = auth::check(rules, pdu, self.fetch(&reads), by_auth);
        reads.finish(checked)?.map_err(|r| Error::forbidden(format!("rejected by its auth events: {r}")))?;

        // 2. Against the state before it.
        let (before, parent) = match known_before {
            Some(before) => (before, None),
            None => self.state_before(pdu, rules)?,
        };
        let reads = Reads::default();
        let checked =
            auth::check(rules, pdu, self.fetch(&reads), |k, s| self.lookup_in(&reads, &before, k, s));
        reads
            .finish(checked)?
            .map_err(|r| Error::forbidden(format!("rejected by the state before it: {r}")))?;

        let mut after = before.clone();
        let after_group = match (&pdu.state_key, parent) {
            (None, Some(group)) => group,
            (state_key, parent) => {
                let id = self.new_state_group_id()?;
                let mut changes = Vec::new();
                if let Some(key) = state_key {
                    after.insert((pdu.kind.to_string(), key.clone()), event_id.clone());
                    changes.push((pdu.kind.to_string(), key.clone(), event_id.clone()));
                }
                match parent {
                    Some(parent) => state::write_group(db, batch, id, Some(parent), &changes)?,
                    None => {
                        let all: Vec<_> =
                            after.iter().map(|((k, s), e)| (k.clone(), s.clone(), e.clone())).collect();
                        state::write_group(db, batch, id, None, &all)?;
                    }
                }
                id
            }
        };
        Ok((before, after, after_group))
    }

    /// The state before `pdu`: the state after its one known prev event, or the resolution of
    /// the states after several. Also the group to build on when there is a single one.
    pub(super) fn state_before(
        &self,
        pdu: &Pdu,
        rules: &RoomVersionRules,
    ) -> Result<(StateMap, Option<u64>)> {
        let mut groups = Vec::new();
        for prev in &pdu.prev_events {
            if let Some(record) = self.pdu_record(prev)?
                && record.state_group != 0
            {
                groups.push(record.state_group);
            }
        }
        groups.sort_unstable();
        groups.dedup();
        match groups.as_slice() {
            [] => Err(Error::forbidden("none of the event's prev_events is known here")),
            [group] => Ok((state::load(self.db(), *group)?, Some(*group))),
            many => {
                let maps = many
                    .iter()
                    .map(|g| state::load(self.db(), *g).map(|m| to_res(&m)))
                    .collect::<Result<Vec<_>>>()?;
                Ok((self.resolve_maps(rules, &maps, None)?, None))
            }
        }
    }

    /// Brings `CurrentState` and the membership tables from `old` to `new`.
    #[allow(clippy::too_many_arguments)]
    fn apply_state_diff(
        &self,
        batch: &mut Batch,
        room: &mut RoomRecord,
        room_id: &OwnedRoomId,
        old: &StateMap,
        new: &StateMap,
        pos: u64,
        wake: &mut BTreeSet<OwnedUserId>,
        incoming: &Pdu,
    ) -> Result<()> {
        let keys: BTreeSet<&(String, String)> = old.keys().chain(new.keys()).collect();
        for key in keys {
            let (before, after) = (old.get(key), new.get(key));
            if before == after {
                continue;
            }
            let row = (room_id.clone(), key.0.clone(), key.1.clone());
            match after {
                Some(id) => batch.put::<CurrentState>(&row, id)?,
                None => batch.delete::<CurrentState>(&row),
            }
            if key.0 == "m.room.member"
                && let Ok(target) = UserId::parse(&key.1)
                && let Some(id) = after
            {
                // The incoming event is in the batch, not yet in storage.
                let pdu = if *id == incoming.event_id { Some(incoming.clone()) } else { self.pdu(id)? };
                let membership = pdu.and_then(|p| p.membership()).unwrap_or(MembershipState::Leave);
                self.record_membership(batch, room, room_id, &target, &membership, id, pos)?;
                wake.insert(target);
            }
        }
        Ok(())
    }

    /// Creates the local copy of a room joined through another server: `state` is the room's
    /// state before our join (its events and their auth chains already stored as outliers),
    /// `join` our signed join event as the resident server accepted it.
    pub async fn persist_remote_join(
        &self,
        room_id: &RoomId,
        version: &RoomVersionId,
        state: BTreeMap<(String, String), OwnedEventId>,
        join: (OwnedEventId, String),
    ) -> Result<()> {
        let _guard = self.lock(room_id).await?;
        let this = self.clone();
        let (room_id, version) = (room_id.to_owned(), version.clone());
        let outcome = blocking(move || this.remote_join_blocking(&room_id, &version, &state, join)).await?;
        if let Outcome::Timeline { ticket, wake } = outcome {
            self.inner.streams.finish(ticket, wake);
        }
        Ok(())
    }

    fn remote_join_blocking(
        &self,
        room_id: &OwnedRoomId,
        version: &RoomVersionId,
        before: &StateMap,
        (event_id, json): (OwnedEventId, String),
    ) -> Result<Outcome> {
        let db = self.db();
        let rules = version.rules().ok_or_else(|| Error::internal(format!("no rules for {version}")))?;
        let pdu = Pdu::from_json(event_id.clone(), &json)?;
        let reads = Reads::default();
        let checked =
            auth::check(&rules, &pdu, self.fetch(&reads), |k, s| self.lookup_in(&reads, before, k, s));
        reads
            .finish(checked)?
            .map_err(|r| Error::forbidden(format!("the room's state does not allow this join: {r}")))?;
        let mut batch = Batch::new();
        let before_group = self.new_state_group_id()?;
        let entries: Vec<_> = before.iter().map(|((k, s), e)| (k.clone(), s.clone(), e.clone())).collect();
        state::write_group(db, &mut batch, before_group, None, &entries)?;
        // The join builds on a group that is not written yet, so it is a snapshot too.
        let mut after = before.clone();
        let key = pdu.state_key.clone().unwrap_or_default();
        after.insert(("m.room.member".to_owned(), key.clone()), event_id.clone());
        let after_group = self.new_state_group_id()?;
        let all: Vec<_> = after.iter().map(|((k, s), e)| (k.clone(), s.clone(), e.clone())).collect();
        state::write_group(db, &mut batch, after_group, None, &all)?;

        let existing = db.get::<RoomsTable>(room_id)?;
        let old_state = match &existing {
            Some(room) => state::load(db, room.current_state_group)?,
            None => StateMap::new(),
        };
        let mut room = existing.unwrap_or(RoomRecord {
            version: version.to_string(),
            forward_extremities: Vec::new(),
            current_state_group: after_group,
            max_depth: 0,
            joined_count: 0,
        });
        let ticket = self.inner.streams.allocate()?;
        let pos = ticket.pos;
        let mut wake = BTreeSet::new();
        self.apply_state_diff(&mut batch, &mut room, room_id, &old_state, &after, pos, &mut wake, &pdu)?;
        let record = PduRecord {
            replaces_state: before.get(&("m.room.member".to_owned(), key)).cloned(),
            ..super::timeline_record(room_id, json, pos, after_group)
        };
        super::put_timeline_event(self.db(), &mut batch, &pdu, &record)?;
        room.forward_extremities = vec![event_id];
        room.max_depth = room.max_depth.max(pdu.depth);
        room.current_state_group = after_group;
        batch.put::<RoomsTable>(room_id, &room)?;
        self.commit(batch)?;
        Ok(Outcome::Timeline { ticket, wake: self.local_wake(Arc::new([]), wake) })
    }
}

enum Outcome {
    Done(Received),
    Timeline { ticket: crate::sync::stream::Ticket, wake: Arc<[OwnedUserId]> },
}
