//! Room history across servers. Serving: `backfill` (events before the given ones),
//! `event_auth` (an event's auth chain) and `state` (the state at an event, in full). Fetching:
//! when a local user pages back past the oldest event this server has, older events are asked
//! of a server in the room, verified, and placed before the known history (see
//! `rooms::backfill`).

use std::collections::{BTreeSet, HashMap, VecDeque};

use ruma::{
    EventId, OwnedEventId, OwnedServerName, RoomId, ServerName, UInt,
    api::federation::{backfill::get_backfill, event::get_room_state},
    room_version_rules::RoomVersionRules,
};
use serde_json::value::RawValue;

use crate::{
    Homeserver, Result,
    events::{Pdu, state_res::auth_chain},
    rooms::{Page, PageDirection, TimelineKey, state::StateMap},
};

/// Most events one backfill answer holds, and how many we ask for.
const MAX_BACKFILL: usize = 100;
const BACKFILL_BATCH: u32 = 50;
/// Backfill rounds one page of `/messages` may wait for.
const MAX_ROUNDS: usize = 3;
/// Events of one backfilled batch whose state is asked of the remote server at most.
const MAX_STATE_FETCHES: usize = 3;

impl Homeserver {
    /// `GET /backfill/{roomId}?v=...`: the given events and those before them through
    /// `prev_events`, breadth first, newest first, at most `limit`.
    pub fn backfill_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        from: &[OwnedEventId],
        limit: usize,
    ) -> Result<Vec<String>> {
        self.require_server_in_room(origin, room_id)?;
        let limit = limit.min(MAX_BACKFILL);
        let mut seen: BTreeSet<OwnedEventId> = BTreeSet::new();
        let mut queue: VecDeque<OwnedEventId> = from.iter().cloned().collect();
        let mut found = Vec::new();
        while let Some(id) = queue.pop_front() {
            if found.len() >= limit {
                break;
            }
            if !seen.insert(id.clone()) {
                continue;
            }
            let Some(record) = self.rooms.pdu_record(&id)? else { continue };
            if record.room_id != room_id {
                continue;
            }
            let pdu = Pdu::from_json(id, &record.json)?;
            queue.extend(pdu.prev_events.iter().cloned());
            found.push((pdu.depth, record));
        }
        found.sort_by_key(|(depth, _)| std::cmp::Reverse(*depth));
        let mut viewer = super::serve::ServerViewer::new(self, origin, room_id)?;
        found.into_iter().map(|(_, record)| viewer.shown(record)).collect()
    }

    /// The stored JSON of events, skipping any we do not have.
    fn jsons<'a>(&self, ids: impl IntoIterator<Item = &'a OwnedEventId>) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for id in ids {
            if let Some(record) = self.rooms.pdu_record(id)? {
                out.push(record.json);
            }
        }
        Ok(out)
    }

    /// The auth chain of events, with the room's create event, which from room version 12 no
    /// event lists but every receiver needs.
    fn full_auth_chain(&self, room_id: &RoomId, start: &[OwnedEventId]) -> Result<Vec<String>> {
        let reads = crate::rooms::Reads::default();
        let fetch = |id: &EventId| reads.keep(self.rooms.pdu(id));
        let chain = auth_chain(start.iter(), &fetch);
        let mut chain: BTreeSet<OwnedEventId> = reads.finish(chain)?.into_iter().collect();
        if let Some(create) = self.rooms.current_state_event(room_id, "m.room.create", "")? {
            chain.insert(create.event_id);
        }
        self.jsons(&chain)
    }

    /// `GET /event_auth/{roomId}/{eventId}`: the full auth chain of one event.
    pub fn event_auth_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<Vec<String>> {
        self.require_server_in_room(origin, room_id)?;
        let record =
            self.rooms.pdu_record(event_id)?.ok_or_else(|| crate::Error::not_found("Event not found"))?;
        if record.room_id != room_id {
            return Err(crate::Error::not_found("Event not found"));
        }
        self.full_auth_chain(room_id, &[event_id.to_owned()])
    }

    /// `GET /state/{roomId}?event_id=`: the state before the event and its auth chain, as full
    /// events.
    pub fn state_for_server(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let (_, ids) = self.state_ids_for_server(origin, room_id, event_id)?;
        Ok((self.jsons(&ids)?, self.full_auth_chain(room_id, &ids)?))
    }

    /// A page of `/messages`: what this server has, and when a backward page runs out of it
    /// before `limit`, older history fetched from the room's other servers.
    #[allow(clippy::too_many_arguments)]
    pub async fn messages_page(
        &self,
        room_id: &RoomId,
        user: &ruma::UserId,
        from: Option<TimelineKey>,
        until: Option<TimelineKey>,
        direction: PageDirection,
        limit: usize,
        keep: &(dyn Fn(&Pdu) -> Result<bool> + Sync),
    ) -> Result<Page<TimelineKey>> {
        let mut page = self.rooms.history_page(room_id, user, from, until, direction, limit, keep)?;
        let at_the_start = direction == PageDirection::Backward && until.is_none() && page.next.is_none();
        if !at_the_start || !self.federation.enabled() {
            return Ok(page);
        }
        if page.events.len() >= limit {
            // Full, but there is more to fetch: the client must come back for it.
            if !self.rooms.backfill_frontier(room_id)?.is_empty() {
                page.next = page.events.last().map(|(key, ..)| key.saturating_sub(1));
            }
            return Ok(page);
        }
        let mut stalled = false;
        for _ in 0..MAX_ROUNDS {
            if self.backfill(room_id).await? == 0 {
                stalled = true;
                break;
            }
            page = self.rooms.history_page(room_id, user, from, until, direction, limit, keep)?;
            if page.next.is_some() || page.events.len() >= limit {
                break;
            }
        }
        // Whether the page is full or the rounds ran out before it was, history that other
        // servers are still giving means this is not the start of the room: the client must
        // come back for the rest, so the page ends with a token rather than none. A round that
        // brought nothing ends it (no token to loop on while no server can help).
        if page.next.is_none() && !stalled {
            let frontier = self.rooms.backfill_frontier(room_id)?;
            if !frontier.is_empty() && !self.federation.is_dead_end(room_id, &frontier) {
                page.next = page.events.last().map(|(key, ..)| key.saturating_sub(1)).or(from);
            }
        }
        Ok(page)
    }

    /// Fetches one batch of history older than what this server has from a server in the room.
    /// Returns how many events were placed; 0 when history is complete or nobody could help.
    pub async fn backfill(&self, room_id: &RoomId) -> Result<usize> {
        let frontier = self.rooms.backfill_frontier(room_id)?;
        if frontier.is_empty() || self.federation.is_dead_end(room_id, &frontier) {
            return Ok(0);
        }
        let rules = self.room_rules(room_id)?;
        let mut servers: Vec<OwnedServerName> = self.servers_in_room(room_id)?.into_iter().collect();
        if let Some(server) = room_id.server_name()
            && server != self.server_name()
            && !servers.iter().any(|s| s == server)
        {
            servers.insert(0, server.to_owned());
        }
        for server in servers {
            let request = get_backfill::v1::Request::new(
                room_id.to_owned(),
                frontier.clone(),
                UInt::from(BACKFILL_BATCH),
            );
            match self.federation_request(&server, request).await {
                Ok(response) => {
                    let placed = self.place_backfilled(&server, room_id, &response.pdus, &rules).await?;
                    tracing::debug!(%room_id, %server, placed, "backfilled");
                    if placed == 0 {
                        self.federation.mark_dead_end(room_id, frontier);
                    }
                    return Ok(placed);
                }
                Err(error) => tracing::info!(%room_id, %server, %error, "backfill failed"),
            }
        }
        Ok(0)
    }

    async fn place_backfilled(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        raw: &[Box<RawValue>],
        rules: &RoomVersionRules,
    ) -> Result<usize> {
        let mut events = Vec::new();
        for raw_event in raw.iter().take(MAX_BACKFILL) {
            match self.verify_pdu(raw_event, rules).await {
                Ok((id, json)) => events.push((id.clone(), Pdu::from_json(id, &json)?, json)),
                Err(error) => tracing::info!(%room_id, %server, %error, "dropped a backfilled event"),
            }
        }
        let in_batch: BTreeSet<OwnedEventId> = events.iter().map(|(id, ..)| id.clone()).collect();
        let mut budget = 20;
        let mut known_before = HashMap::new();
        let mut state_fetches = 0;
        for (id, pdu, _) in &events {
            let mut missing_auth: Vec<OwnedEventId> = Vec::new();
            for auth in &pdu.auth_events {
                if !in_batch.contains(auth) && !self.rooms.has_event(auth)? {
                    missing_auth.push(auth.clone());
                }
            }
            for auth in missing_auth {
                self.fetch_outlier(server, room_id, &auth, rules, &mut budget).await;
            }
            let prev_known = pdu.prev_events.is_empty()
                || pdu.prev_events.iter().any(|p| in_batch.contains(p))
                || self.any_has_state(&pdu.prev_events)?;
            if !prev_known && state_fetches < MAX_STATE_FETCHES {
                state_fetches += 1;
                if let Some(state) = self.fetch_state_before(server, room_id, id, rules).await {
                    known_before.insert(id.clone(), state);
                }
            }
        }
        let events = events.into_iter().map(|(id, _, json)| (id, json)).collect();
        self.rooms.store_backfilled(room_id, events, known_before).await
    }

    /// The state before an event, as the remote server has it: its events verified and stored
    /// as outliers.
    async fn fetch_state_before(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        rules: &RoomVersionRules,
    ) -> Option<StateMap> {
        let request = get_room_state::v1::Request::new(event_id.to_owned(), room_id.to_owned());
        let response = match self.federation_request(server, request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::info!(%room_id, %event_id, %error, "could not fetch the state for backfill");
                return None;
            }
        };
        let mut outliers = Vec::new();
        let mut state_ids = Vec::new();
        for (is_state, raw_event) in
            response.auth_chain.iter().map(|e| (false, e)).chain(response.pdus.iter().map(|e| (true, e)))
        {
            if let Ok((id, json)) = self.verify_pdu(raw_event, rules).await {
                if is_state {
                    state_ids.push(id.clone());
                }
                outliers.push((id, json));
            }
        }
        // Only what passes its auth checks is stored, and only what is stored is state.
        self.store_checked_outliers(room_id, outliers, rules).await.ok()?;
        let mut state = StateMap::new();
        for id in state_ids {
            // A failed read fails this whole answer (the caller tries elsewhere) rather than
            // leaving an entry out of the state.
            let Some(pdu) = self.rooms.pdu(&id).ok()? else { continue };
            if let Some(key) = pdu.state_key {
                state.insert((pdu.kind.to_string(), key), id);
            }
        }
        Some(state)
    }
}
