//! Test support: build a room's signed events by hand, so tests can fork the graph and check
//! single events against chosen states.

use std::collections::HashMap;

use hearth_storage::Db;
use ruma::{
    OwnedEventId, OwnedUserId, RoomId, RoomVersionId,
    events::{StateEventType, TimelineEventType},
    owned_server_name,
    room_version_rules::RoomVersionRules,
    state_res::StateMap,
};
use serde_json::Value;

use super::{
    NewEvent, Pdu, auth,
    pdu::{Placement, build_and_sign, to_json_string},
};
use crate::keys::signing_key::SigningKey;

/// Builds a room's events by hand, so a test can fork the graph at will.
pub struct Graph {
    pub rules: RoomVersionRules,
    key: SigningKey,
    pub room_id: Option<ruma::OwnedRoomId>,
    pub events: HashMap<OwnedEventId, Pdu>,
}

impl Graph {
    pub fn new(version: &RoomVersionId) -> Self {
        Self {
            rules: version.rules().unwrap(),
            key: SigningKey::load_or_generate(&Db::in_memory()).unwrap(),
            room_id: None,
            events: HashMap::new(),
        }
    }

    /// Adds a state event on top of `prev`, authorized by `state`; returns the state after it.
    pub fn add(
        &mut self,
        state: &StateMap<OwnedEventId>,
        prev: &[OwnedEventId],
        sender: &OwnedUserId,
        kind: &str,
        key: &str,
        content: Value,
    ) -> (OwnedEventId, StateMap<OwnedEventId>) {
        let new = NewEvent::state(TimelineEventType::from(kind), key, content);
        let pdu = self.build(state, prev, sender, &new);
        self.check(state, &pdu).unwrap_or_else(|e| panic!("{kind} not allowed: {e}"));
        let event_id = pdu.event_id.clone();
        if self.room_id.is_none() {
            let id = if self.rules.authorization.room_create_event_id_as_room_id {
                RoomId::parse(format!("!{}", event_id.as_str().trim_start_matches('$'))).unwrap()
            } else {
                RoomId::parse("!room:example.org").unwrap()
            };
            self.room_id = Some(id);
        }
        self.events.insert(event_id.clone(), pdu);
        let mut after = state.clone();
        after.insert((StateEventType::from(kind), key.to_owned()), event_id.clone());
        (event_id, after)
    }
}

impl Graph {
    /// Builds an event on `prev` with auth events from `state`, without checking it.
    pub fn build(
        &self,
        state: &StateMap<OwnedEventId>,
        prev: &[OwnedEventId],
        sender: &OwnedUserId,
        new: &NewEvent,
    ) -> Pdu {
        let raw = serde_json::value::to_raw_value(&new.content).unwrap();
        let types = auth::auth_types(&new.kind, sender, new.state_key.as_deref(), &raw, &self.rules).unwrap();
        let auth_events: Vec<OwnedEventId> = types.iter().filter_map(|t| state.get(t).cloned()).collect();
        let depth = prev.iter().map(|p| self.events[p].depth).max().unwrap_or(0) + 1;
        let placement = Placement {
            room_id: self.room_id.as_deref(),
            prev_events: prev,
            auth_events: &auth_events,
            depth,
        };
        let (event_id, object) = build_and_sign(
            new,
            sender,
            &placement,
            &self.rules,
            &owned_server_name!("example.org"),
            &self.key,
        )
        .unwrap();
        Pdu::from_json(event_id, &to_json_string(&object).unwrap()).unwrap()
    }

    /// Checks `pdu` against `state` with the auth rules.
    pub fn check(&self, state: &StateMap<OwnedEventId>, pdu: &Pdu) -> Result<(), String> {
        let events = &self.events;
        auth::check(
            &self.rules,
            pdu,
            |id| events.get(id).cloned(),
            |t, k| state.get(&(t.clone(), k.to_owned())).and_then(|id| events.get(id).cloned()),
        )
    }
}
