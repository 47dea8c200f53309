//! State resolution (v1 for room version 1, in `v1.rs`; v2, and v2.1 from room version 12,
//! through ruma's state-res): the one place that resolves, so federation and any other
//! fork-merging code go through here.

use std::collections::{HashMap, HashSet, VecDeque};

use ruma::{
    EventId, OwnedEventId,
    room_version_rules::{RoomVersionRules, StateResolutionVersion},
    state_res::{self, StateMap, utils::event_id_set::EventIdSet},
};

use super::Pdu;

/// Resolves forked states into one. `fetch` must find every event the states and their auth
/// chains mention (and, for v2.1, the events between conflicting ones).
pub fn resolve(
    rules: &RoomVersionRules,
    states: &[StateMap<OwnedEventId>],
    fetch: &dyn Fn(&EventId) -> Option<Pdu>,
) -> Result<StateMap<OwnedEventId>, String> {
    let StateResolutionVersion::V2(v2_rules) = &rules.state_res else {
        return v1::resolve(rules, states, fetch);
    };
    let auth_chains = states.iter().map(|state| auth_chain(state.values(), fetch)).collect();
    state_res::resolve(
        &rules.authorization,
        v2_rules,
        states,
        auth_chains,
        |id| fetch(id),
        |conflicted| Some(conflicted_subgraph(conflicted, fetch)),
    )
    .map_err(|e| e.to_string())
}

/// Every event reachable through `auth_events` from `start` (inclusive of the auth events,
/// exclusive of `start` itself unless another event points at it).
pub fn auth_chain<'a>(
    start: impl Iterator<Item = &'a OwnedEventId>,
    fetch: &dyn Fn(&EventId) -> Option<Pdu>,
) -> EventIdSet<OwnedEventId> {
    let mut seen = HashSet::new();
    let mut queue: VecDeque<OwnedEventId> = VecDeque::new();
    for id in start {
        if let Some(pdu) = fetch(id) {
            queue.extend(pdu.auth_events);
        }
    }
    while let Some(id) = queue.pop_front() {
        if seen.insert(id.clone())
            && let Some(pdu) = fetch(&id)
        {
            queue.extend(pdu.auth_events.into_iter().filter(|a| !seen.contains(a)));
        }
    }
    seen.into_iter().collect()
}

/// The events on `prev_events` paths between conflicted events (room version 12's conflicted
/// state subgraph): those that descend from one conflicted event and lead to another.
fn conflicted_subgraph(
    conflicted: &StateMap<Vec<OwnedEventId>>,
    fetch: &dyn Fn(&EventId) -> Option<Pdu>,
) -> EventIdSet<OwnedEventId> {
    let targets: HashSet<OwnedEventId> = conflicted.values().flatten().cloned().collect();
    // Whether each visited event can reach a conflicted event by going backwards.
    let mut reaches: HashMap<OwnedEventId, bool> = HashMap::new();
    let mut out = EventIdSet::new();
    for start in &targets {
        // Iterative post-order walk backwards from each conflicted event.
        let mut stack = vec![(start.clone(), false)];
        while let Some((id, expanded)) = stack.pop() {
            if reaches.contains_key(&id) && !expanded {
                continue;
            }
            let prevs = fetch(&id).map(|p| p.prev_events).unwrap_or_default();
            if expanded {
                let hit =
                    prevs.iter().any(|p| targets.contains(p) || reaches.get(p).copied().unwrap_or(false));
                reaches.insert(id.clone(), hit);
                if hit || targets.contains(&id) {
                    out.insert(id);
                }
                continue;
            }
            reaches.insert(id.clone(), false);
            stack.push((id, true));
            for prev in prevs {
                if !reaches.contains_key(&prev) {
                    stack.push((prev, false));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
mod v1;
