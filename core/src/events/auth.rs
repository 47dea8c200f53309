//! The authorization rules, for every room version, through ruma's state-res: the one place that
//! calls it, so that its API can move without touching the rest.

use ruma::{
    EventId, OwnedEventId, UserId,
    events::{StateEventType, TimelineEventType},
    room_version_rules::RoomVersionRules,
    state_res,
};
use serde_json::value::RawValue as RawJsonValue;

use super::Pdu;

/// The `(type, state_key)` pairs whose current events become a new event's `auth_events`.
pub fn auth_types(
    kind: &TimelineEventType,
    sender: &UserId,
    state_key: Option<&str>,
    content: &RawJsonValue,
    rules: &RoomVersionRules,
) -> Result<Vec<(StateEventType, String)>, String> {
    state_res::auth_types_for_event(kind, sender, state_key, content, &rules.authorization)
}

/// Checks `pdu` against the auth rules: the state-independent ones (its `auth_events`, fetched
/// with `fetch_event`), then the state-dependent ones against the state `fetch_state` reads.
/// `Err` carries the rule that failed, for the client.
pub fn check(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    fetch_event: impl Fn(&EventId) -> Option<Pdu>,
    fetch_state: impl Fn(&StateEventType, &str) -> Option<Pdu>,
) -> Result<(), String> {
    state_res::check_state_independent_auth_rules(&rules.authorization, pdu, fetch_event)?;
    state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state)
}

/// The event IDs of a state map, for state resolution's inputs.
pub type StateMap = state_res::StateMap<OwnedEventId>;
