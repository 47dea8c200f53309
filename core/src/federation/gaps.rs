//! Filling the holes in a room's graph that a received event reveals. An event pushed to us
//! whose `prev_events` we lack makes us ask its sender for the events in between
//! (`get_missing_events`, bounded); the oldest of those may still lack its own prev events, and
//! for each missing one we take the state after it from the sender (`/state_ids`, then `/event`
//! for the few we lack or `/state` for many) and resolve it with what we know. A pushed event
//! whose gap could not be closed is refused, as Synapse does: trusting the sender's word for the
//! state at an event it pushed would let any server rewrite the room's state.
//!
//! Everything fetched is checked against its own auth events before it is stored, in
//! dependency order, so an event whose auth chain cannot be had or fails is never stored and
//! cannot become part of any state. Servers that do not answer are left alone for a while
//! (exponential backoff).

use std::{
    collections::{BTreeSet, HashMap},
    sync::PoisonError,
    time::{Duration, Instant},
};

use ruma::{
    EventId, OwnedEventId, OwnedServerName, RoomId, ServerName,
    api::federation::event::{get_event, get_missing_events, get_room_state, get_room_state_ids},
    events::StateEventType,
    room_version_rules::RoomVersionRules,
};

use crate::{
    Error, ErrorCode, Homeserver, Result,
    events::{Pdu, auth},
    rooms::state::StateMap,
};

/// Events asked of `get_missing_events` for one pushed event, as Synapse does.
const MISSING_EVENTS_LIMIT: u32 = 10;
/// Most events of one `get_missing_events` answer we look at.
const MAX_MISSING_EVENTS: usize = 50;
/// Most missing prev events of one event whose state we fetch.
const MAX_PREV_STATE_FETCHES: usize = 5;
/// A `/state_ids` answer larger than this is not followed.
const MAX_STATE_IDS: usize = 20_000;
/// Most single-event fetches (`/event`) for the state at one prev event; beyond, `/state`.
const MAX_EVENT_FETCHES: usize = 100;
/// Backoff after a server failed to answer: first pause, and longest.
const BACKOFF_START: Duration = Duration::from_secs(60);
const BACKOFF_MAX: Duration = Duration::from_secs(60 * 60);

/// Servers that recently failed to answer our gap-filling requests.
#[derive(Debug, Default)]
pub struct Backoff {
    servers: std::sync::Mutex<HashMap<OwnedServerName, (Instant, Duration)>>,
}

impl Backoff {
    /// Whether `server` should not be asked now.
    pub fn waiting(&self, server: &ServerName) -> bool {
        let servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        servers.get(server).is_some_and(|(until, _)| Instant::now() < *until)
    }

    /// Records the outcome of a request to `server`: an unreachable or failing server is
    /// left alone for twice as long as last time; any answer ends the backoff.
    pub fn record<T>(&self, server: &ServerName, outcome: &Result<T>) {
        let mut servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Err(error) if error.code() == ErrorCode::RemoteUnavailable => {
                let pause =
                    servers.get(server).map_or(BACKOFF_START, |(_, last)| (*last * 2).min(BACKOFF_MAX));
                servers.insert(server.to_owned(), (Instant::now() + pause, pause));
            }
            _ => {
                servers.remove(server);
            }
        }
    }
}

impl Homeserver {
    /// A request made while filling gaps: not made to a server in backoff, and its failure
    /// recorded.
    async fn gap_request<R>(&self, server: &ServerName, request: R) -> Result<R::IncomingResponse>
    where
        R: ruma::api::OutgoingRequest,
        for<'a> R::Authentication: ruma::api::auth_scheme::AuthScheme<
                Input<'a> = ruma::api::federation::authentication::XMatrixSigningInput<'a>,
            >,
        for<'a> R::PathBuilder: ruma::api::path_builder::PathBuilder<Input<'a> = ()>,
    {
        if self.federation.backoff.waiting(server) {
            return Err(Error::new(
                ErrorCode::RemoteUnavailable,
                format!("{server} did not answer recently; not asking again yet"),
            ));
        }
        let outcome = self.federation_request(server, request).await;
        self.federation.backoff.record(server, &outcome);
        outcome
    }

    /// Whether the event is in a timeline here (so the state after it is known). A storage
    /// error stays an error: taken for "not here", it would have the event fetched again or a
    /// valid event refused.
    pub(super) fn has_state_after(&self, event_id: &EventId) -> Result<bool> {
        Ok(self.rooms.pdu_record(event_id)?.is_some_and(|r| r.state_group != 0))
    }

    /// Whether the state after each of `ids` is known here.
    fn all_have_state(&self, ids: &[ruma::OwnedEventId]) -> Result<bool> {
        for id in ids {
            if !self.has_state_after(id)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether the state after any of `ids` is known here.
    pub(super) fn any_has_state(&self, ids: &[ruma::OwnedEventId]) -> Result<bool> {
        for id in ids {
            if self.has_state_after(id)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Makes sure what a pushed event refers to is here: its auth events (as outliers) and its
    /// prev events (fetched with `get_missing_events` and received in order, oldest first, each
    /// with the state at any gap before it). `Err` when none of its prev events could be had.
    pub(super) async fn fill_gaps(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        pdu: &Pdu,
        rules: &RoomVersionRules,
    ) -> Result<()> {
        let mut budget = MAX_EVENT_FETCHES;
        self.fetch_missing_auth(origin, room_id, pdu, rules, &mut budget).await?;
        if self.all_have_state(&pdu.prev_events)? {
            return Ok(());
        }
        let room = self.rooms.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let mut request = get_missing_events::v1::Request::new(
            room_id.to_owned(),
            room.forward_extremities.clone(),
            vec![pdu.event_id.clone()],
        );
        request.limit = ruma::UInt::from(MISSING_EVENTS_LIMIT);
        match self.gap_request(origin, request).await {
            Ok(response) => {
                let mut fetched = Vec::new();
                for raw in response.events.iter().take(MAX_MISSING_EVENTS) {
                    match self.verify_pdu(raw, rules).await {
                        Ok((id, json)) if id != pdu.event_id => {
                            if !self.has_state_after(&id)?
                                && let Ok(event) = Pdu::from_json(id, &json)
                            {
                                fetched.push((event, json));
                            }
                        }
                        Ok(_) => {}
                        Err(error) => tracing::info!(%room_id, %error, "dropped a missing event"),
                    }
                }
                fetched.sort_by(|(a, _), (b, _)| (a.depth, &a.event_id).cmp(&(b.depth, &b.event_id)));
                fetched.dedup_by(|(a, _), (b, _)| a.event_id == b.event_id);
                for (event, json) in fetched {
                    self.receive_pulled(origin, room_id, event, json, rules).await;
                }
            }
            Err(error) => tracing::info!(%room_id, %origin, %error, "get_missing_events failed"),
        }
        if self.any_has_state(&pdu.prev_events)? {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "none of the prev_events of {} could be fetched from {origin}",
                pdu.event_id
            )))
        }
    }

    /// Receives an event we asked for, the state before it taken from `origin` where its
    /// prev events are not here. Failures are logged: the event is then simply not had.
    async fn receive_pulled(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event: Pdu,
        json: String,
        rules: &RoomVersionRules,
    ) {
        let event_id = event.event_id.clone();
        let state_before = match self.state_before_pulled(origin, room_id, &event, rules).await {
            Ok(state) => state,
            Err(error) => {
                tracing::info!(%event_id, %error, "no state for a fetched missing event; dropped");
                return;
            }
        };
        let mut budget = MAX_EVENT_FETCHES;
        if let Err(error) = self.fetch_missing_auth(origin, room_id, &event, rules, &mut budget).await {
            tracing::warn!(%event_id, %error, "could not look for a fetched event's auth events; dropped");
            return;
        }
        match self.rooms.receive_pdu_with_state(room_id, &event_id, json, state_before).await {
            Ok(received) => tracing::debug!(%event_id, ?received, "received a fetched missing event"),
            Err(error) => tracing::info!(%event_id, %error, "a fetched missing event was rejected"),
        }
    }

    /// `None` when every prev event of `event` is here (the normal path computes the state);
    /// otherwise the resolution of the states after each prev event, those we lack as `origin`
    /// has them.
    async fn state_before_pulled(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event: &Pdu,
        rules: &RoomVersionRules,
    ) -> Result<Option<StateMap>> {
        if self.all_have_state(&event.prev_events)? {
            return Ok(None);
        }
        if event.prev_events.len() > MAX_PREV_STATE_FETCHES {
            return Err(Error::bad_request("too many missing prev_events"));
        }
        let mut states = Vec::new();
        for prev in &event.prev_events {
            match self.rooms.pdu_record(prev)? {
                Some(record) if record.state_group != 0 => {
                    states.push(crate::rooms::state::load(&self.db, record.state_group)?);
                }
                _ => states.push(self.state_after_remote(origin, room_id, prev, rules).await?),
            }
        }
        match states.len() {
            1 => Ok(states.pop()),
            _ => self.rooms.resolve_states(rules, &states).map(Some),
        }
    }

    /// The state after `event_id` as `origin` has it: `/state_ids` at it, then the events we
    /// lack, each checked against its auth events before it is stored. Events that cannot be
    /// had or fail their checks are left out of the state.
    pub(super) async fn state_after_remote(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        rules: &RoomVersionRules,
    ) -> Result<StateMap> {
        let request = get_room_state_ids::v1::Request::new(event_id.to_owned(), room_id.to_owned());
        let ids = self.gap_request(origin, request).await?;
        if ids.pdu_ids.len() + ids.auth_chain_ids.len() > MAX_STATE_IDS {
            return Err(Error::bad_request("the state at the event is too large to follow"));
        }
        let mut desired: BTreeSet<OwnedEventId> = ids.pdu_ids.iter().cloned().collect();
        desired.insert(event_id.to_owned());
        let missing_desired: Vec<OwnedEventId> =
            desired.iter().filter(|id| !self.rooms.has_event(id).unwrap_or(false)).cloned().collect();
        let missing_auth =
            ids.auth_chain_ids.iter().filter(|id| !self.rooms.has_event(id).unwrap_or(false)).count();
        let missing = missing_desired.len() + missing_auth;
        let total = ids.pdu_ids.len() + ids.auth_chain_ids.len();

        let mut fetched = Vec::new();
        let mut wanted = missing_desired.clone();
        // Like Synapse: one request for the whole state when we lack much of it.
        if missing > 0 && (missing * 10 >= total || missing_desired.len() > MAX_EVENT_FETCHES) {
            let request = get_room_state::v1::Request::new(event_id.to_owned(), room_id.to_owned());
            match self.gap_request(origin, request).await {
                Ok(state) => {
                    let allowed: BTreeSet<&OwnedEventId> =
                        desired.iter().chain(ids.auth_chain_ids.iter()).collect();
                    for raw in state.auth_chain.iter().chain(state.pdus.iter()) {
                        if let Ok((id, json)) = self.verify_pdu(raw, rules).await
                            && allowed.contains(&id)
                        {
                            wanted.retain(|w| *w != id);
                            fetched.push((id, json));
                        }
                    }
                }
                Err(error) => {
                    tracing::info!(%room_id, %origin, %error, "/state failed; asking event by event");
                }
            }
        }
        let mut budget = MAX_EVENT_FETCHES;
        fetched.extend(self.fetch_events(origin, wanted, &fetched, rules, &mut budget).await);
        self.store_checked_outliers(room_id, fetched, rules).await?;

        let mut state = StateMap::new();
        for id in ids.pdu_ids.iter().chain(std::iter::once(&event_id.to_owned())) {
            let Some(pdu) = self.rooms.pdu(id)? else { continue };
            if pdu.room_id.as_ref().is_some_and(|r| r != room_id) {
                continue;
            }
            if let Some(key) = pdu.state_key {
                state.insert((pdu.kind.to_string(), key), pdu.event_id);
            }
        }
        tracing::info!(%room_id, %event_id, %origin, entries = state.len(), "took the state at a gap");
        Ok(state)
    }

    /// Fetches the missing auth events of `event` (and theirs) as checked outliers. Failing
    /// to read what is here is an error: taking it for "here" would skip the fetch and have
    /// the event refused for want of its auth events.
    async fn fetch_missing_auth(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event: &Pdu,
        rules: &RoomVersionRules,
        budget: &mut usize,
    ) -> Result<()> {
        let mut missing: Vec<OwnedEventId> = Vec::new();
        for id in &event.auth_events {
            if !self.rooms.has_event(id)? {
                missing.push(id.clone());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let fetched = self.fetch_events(origin, missing, &[], rules, budget).await;
        if let Err(error) = self.store_checked_outliers(room_id, fetched, rules).await {
            tracing::warn!(%error, "could not store fetched auth events");
        }
        Ok(())
    }

    /// Fetches events one by one (`/event`) and, within `budget`, the auth events they name
    /// that are neither stored nor in `have`. Returns them verified, not yet checked or stored.
    pub(super) async fn fetch_events(
        &self,
        origin: &ServerName,
        wanted: Vec<OwnedEventId>,
        have: &[(OwnedEventId, String)],
        rules: &RoomVersionRules,
        budget: &mut usize,
    ) -> Vec<(OwnedEventId, String)> {
        let mut seen: BTreeSet<OwnedEventId> = have.iter().map(|(id, _)| id.clone()).collect();
        let mut queue = wanted;
        let mut got = Vec::new();
        while let Some(id) = queue.pop() {
            if !seen.insert(id.clone()) || self.rooms.has_event(&id).unwrap_or(false) {
                continue;
            }
            if *budget == 0 {
                break;
            }
            *budget -= 1;
            let Ok(response) = self.gap_request(origin, get_event::v1::Request::new(id.clone())).await else {
                continue;
            };
            let Ok((verified_id, json)) = self.verify_pdu(&response.pdu, rules).await else { continue };
            if verified_id != id {
                continue;
            }
            if let Ok(pdu) = Pdu::from_json(id.clone(), &json) {
                queue.extend(pdu.auth_events.into_iter().filter(|a| !seen.contains(a)));
            }
            got.push((id, json));
        }
        got
    }

    /// Stores verified events as outliers once each passes the auth rules against its own
    /// auth events, in dependency order. An event whose auth events are neither stored nor
    /// among those accepted here, or that fails its checks, is dropped, and so is everything
    /// that depends on it. Returns the IDs stored.
    pub(super) async fn store_checked_outliers(
        &self,
        room_id: &RoomId,
        events: Vec<(OwnedEventId, String)>,
        rules: &RoomVersionRules,
    ) -> Result<BTreeSet<OwnedEventId>> {
        let mut pending: Vec<(Pdu, String)> = Vec::new();
        let mut seen = BTreeSet::new();
        for (id, json) in events {
            if !seen.insert(id.clone()) || self.rooms.has_event(&id)? {
                continue;
            }
            match Pdu::from_json(id, &json) {
                Ok(pdu) => pending.push((pdu, json)),
                Err(error) => tracing::info!(%error, "dropped an unreadable fetched event"),
            }
        }
        pending.sort_by(|(a, _), (b, _)| (a.depth, &a.event_id).cmp(&(b.depth, &b.event_id)));
        // From room version 12 no event lists the create event; it is the room's, or, for a
        // room being joined, the one among these whose event ID the room ID is derived from.
        let create = match self.rooms.current_state_event(room_id, "m.room.create", "")? {
            Some(create) => Some(create),
            None => pending
                .iter()
                .map(|(pdu, _)| pdu)
                .find(|pdu| {
                    pdu.kind == ruma::events::TimelineEventType::RoomCreate
                        && pdu.event_id.as_str().get(1..) == room_id.as_str().get(1..)
                })
                .cloned(),
        };
        let mut accepted: HashMap<OwnedEventId, Pdu> = HashMap::new();
        let mut to_store = Vec::new();
        loop {
            let mut progress = false;
            let mut waiting = Vec::new();
            for (pdu, json) in pending {
                let mut ready = true;
                for id in &pdu.auth_events {
                    if !accepted.contains_key(id) && !self.rooms.has_event(id)? {
                        ready = false;
                    }
                }
                if !ready {
                    waiting.push((pdu, json));
                    continue;
                }
                progress = true;
                let reads = crate::rooms::Reads::default();
                let fetch = |id: &EventId| -> Option<Pdu> {
                    accepted.get(id).cloned().or_else(|| reads.keep(self.rooms.pdu(id)))
                };
                let by_auth = |kind: &StateEventType, key: &str| -> Option<Pdu> {
                    pdu.auth_events
                        .iter()
                        .filter_map(|id| fetch(id))
                        .find(|p| {
                            p.kind.to_string() == kind.to_string() && p.state_key.as_deref() == Some(key)
                        })
                        // From room version 12 the create event is implied by the room ID.
                        .or_else(|| (*kind == StateEventType::RoomCreate).then(|| create.clone()).flatten())
                };
                let checked = auth::check(rules, &pdu, fetch, by_auth);
                // A failed read is this server's problem, not the event's: nothing is stored.
                match reads.finish(checked)? {
                    Ok(()) => {
                        to_store.push((pdu.event_id.clone(), json));
                        accepted.insert(pdu.event_id.clone(), pdu);
                    }
                    Err(reason) => {
                        tracing::info!(event_id = %pdu.event_id, %reason, "a fetched event failed its auth checks");
                    }
                }
            }
            pending = waiting;
            if pending.is_empty() || !progress {
                break;
            }
        }
        for (pdu, _) in &pending {
            tracing::info!(event_id = %pdu.event_id, "dropped a fetched event whose auth events cannot be had");
        }
        let stored = to_store.iter().map(|(id, _)| id.clone()).collect();
        self.rooms.store_outliers(room_id, to_store).await?;
        Ok(stored)
    }
}
