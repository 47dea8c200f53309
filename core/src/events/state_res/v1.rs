//! State resolution v1 (room version 1), which ruma's state-res does not implement. As the
//! spec and Synapse have it: a key is conflicted only when two states give it different
//! events (a key missing from one state is not); unconflicted state stands; conflicts are
//! settled for power levels, then join rules, then memberships, each by walking the candidates
//! from the oldest (lowest depth, then highest SHA-1 of the ID) and keeping the newest that the
//! auth rules still allow on top of the previous one; every other conflict goes to the newest
//! candidate the auth rules allow.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{
    EventId, OwnedEventId,
    events::StateEventType,
    room_version_rules::RoomVersionRules,
    state_res::{self, StateMap},
};
use sha1::{Digest, Sha1};

use crate::events::Pdu;

type Key = (StateEventType, String);

pub(super) fn resolve(
    rules: &RoomVersionRules,
    states: &[StateMap<OwnedEventId>],
    fetch: &dyn Fn(&EventId) -> Option<Pdu>,
) -> Result<StateMap<OwnedEventId>, String> {
    let Some((first, rest)) = states.split_first() else { return Ok(StateMap::new()) };
    let mut unconflicted = first.clone();
    let mut conflicted: BTreeMap<Key, BTreeSet<OwnedEventId>> = BTreeMap::new();
    for state in rest {
        for (key, id) in state {
            if let Some(candidates) = conflicted.get_mut(key) {
                candidates.insert(id.clone());
            } else if let Some(existing) = unconflicted.get(key) {
                if existing != id {
                    let existing = unconflicted.remove(key).into_iter();
                    conflicted.insert(key.clone(), existing.chain([id.clone()]).collect());
                }
            } else {
                unconflicted.insert(key.clone(), id.clone());
            }
        }
    }

    // The state the auth checks see: the unconflicted state, then each phase's winners.
    let mut auth_state = unconflicted.clone();
    let mut resolved = StateMap::new();
    let phases: [&dyn Fn(&StateEventType) -> bool; 3] = [
        &|kind| *kind == StateEventType::RoomPowerLevels,
        &|kind| *kind == StateEventType::RoomJoinRules,
        &|kind| *kind == StateEventType::RoomMember,
    ];
    for in_phase in phases {
        let mut won = Vec::new();
        for (key, candidates) in conflicted.iter().filter(|(key, _)| in_phase(&key.0)) {
            if let Some(winner) = resolve_auth_events(rules, candidates, &auth_state, fetch) {
                won.push((key.clone(), winner));
            }
        }
        for (key, winner) in won {
            auth_state.insert(key.clone(), winner.clone());
            resolved.insert(key, winner);
        }
    }
    for (key, candidates) in &conflicted {
        if !resolved.contains_key(key)
            && let Some(winner) = resolve_normal_events(rules, candidates, &auth_state, fetch)
        {
            resolved.insert(key.clone(), winner);
        }
    }
    unconflicted.extend(resolved);
    Ok(unconflicted)
}

/// Candidates newest first: highest depth, then lowest SHA-1 of the event ID. Events that
/// cannot be found take no part.
fn ordered(candidates: &BTreeSet<OwnedEventId>, fetch: &dyn Fn(&EventId) -> Option<Pdu>) -> Vec<Pdu> {
    let mut events: Vec<(u64, String, Pdu)> = candidates
        .iter()
        .filter_map(|id| fetch(id))
        .map(|pdu| (pdu.depth, hex::encode(Sha1::digest(pdu.event_id.as_bytes())), pdu))
        .collect();
    events.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    events.into_iter().map(|(_, _, pdu)| pdu).collect()
}

fn allowed(
    rules: &RoomVersionRules,
    event: &Pdu,
    state: &StateMap<OwnedEventId>,
    fetch: &dyn Fn(&EventId) -> Option<Pdu>,
) -> bool {
    state_res::check_state_dependent_auth_rules(&rules.authorization, event, |kind, key| {
        state.get(&(kind.clone(), key.to_owned())).and_then(|id| fetch(id))
    })
    .is_ok()
}

/// From the oldest candidate on: each next one replaces the last while the auth rules allow
/// it on top of it; the first refusal ends the walk.
fn resolve_auth_events(
    rules: &RoomVersionRules,
    candidates: &BTreeSet<OwnedEventId>,
    auth_state: &StateMap<OwnedEventId>,
    fetch: &dyn Fn(&EventId) -> Option<Pdu>,
) -> Option<OwnedEventId> {
    let mut oldest_first = ordered(candidates, fetch).into_iter().rev();
    let mut previous = oldest_first.next()?;
    let mut state = auth_state.clone();
    for event in oldest_first {
        let key = (previous.kind.to_string().into(), previous.state_key.clone().unwrap_or_default());
        state.insert(key, previous.event_id.clone());
        if !allowed(rules, &event, &state, fetch) {
            break;
        }
        previous = event;
    }
    Some(previous.event_id)
}

/// The newest candidate the auth rules allow, or else the oldest.
fn resolve_normal_events(
    rules: &RoomVersionRules,
    candidates: &BTreeSet<OwnedEventId>,
    auth_state: &StateMap<OwnedEventId>,
    fetch: &dyn Fn(&EventId) -> Option<Pdu>,
) -> Option<OwnedEventId> {
    let events = ordered(candidates, fetch);
    events
        .iter()
        .find(|event| allowed(rules, event, auth_state, fetch))
        .or_else(|| events.last())
        .map(|event| event.event_id.clone())
}
