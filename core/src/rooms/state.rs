//! Room state as state groups: each group is a delta on its parent, and every
//! [`SNAPSHOT_EVERY`]th group is a full snapshot, so reading any state walks at most that many
//! groups. A PDU points at the group of the state after it; the current state is also kept
//! flat in `CurrentState` for the hot lookups.

use std::collections::BTreeMap;

use hearth_storage::{Batch, Db, records::StateGroupRecord, schema::StateGroups};
use ruma::OwnedEventId;

use crate::{Error, Result};

/// Longest delta chain before a group is written as a full snapshot.
pub const SNAPSHOT_EVERY: u32 = 64;

/// `(event type, state key) -> event ID`.
pub type StateMap = BTreeMap<(String, String), OwnedEventId>;

fn group(db: &Db, id: u64) -> Result<StateGroupRecord> {
    db.get::<StateGroups>(&id)?.ok_or_else(|| Error::internal(format!("state group {id} is missing")))
}

/// The full state of a group.
pub fn load(db: &Db, id: u64) -> Result<StateMap> {
    let mut chain = Vec::new();
    let mut next = Some(id);
    while let Some(id) = next {
        let record = group(db, id)?;
        next = record.parent;
        chain.push(record);
    }
    let mut state = StateMap::new();
    // Oldest first, so later deltas win.
    for record in chain.into_iter().rev() {
        for (kind, key, event_id) in record.entries {
            state.insert((kind, key), event_id);
        }
    }
    Ok(state)
}

/// One entry of a group's state, without loading all of it.
pub fn lookup(db: &Db, id: u64, kind: &str, key: &str) -> Result<Option<OwnedEventId>> {
    let mut next = Some(id);
    while let Some(id) = next {
        let record = group(db, id)?;
        if let Some((_, _, event_id)) = record.entries.iter().find(|(k, s, _)| k == kind && s == key) {
            return Ok(Some(event_id.clone()));
        }
        next = record.parent;
    }
    Ok(None)
}

/// Adds to `batch` a group that is `parent` plus `changes` (or a snapshot when the chain is long
/// or there is no parent) under the new ID `id`.
pub fn write_group(
    db: &Db,
    batch: &mut Batch,
    id: u64,
    parent: Option<u64>,
    changes: &[(String, String, OwnedEventId)],
) -> Result<()> {
    let parent_record = parent.map(|p| group(db, p)).transpose()?;
    let record = match (parent, parent_record) {
        (Some(parent), Some(p)) if p.chain_len + 1 < SNAPSHOT_EVERY => {
            StateGroupRecord { parent: Some(parent), chain_len: p.chain_len + 1, entries: changes.to_vec() }
        }
        _ => {
            let mut state = match parent {
                Some(parent) => load(db, parent)?,
                None => StateMap::new(),
            };
            for (kind, key, event_id) in changes {
                state.insert((kind.clone(), key.clone()), event_id.clone());
            }
            let entries = state.into_iter().map(|((k, s), e)| (k, s, e)).collect();
            StateGroupRecord { parent: None, chain_len: 0, entries }
        }
    };
    batch.put::<StateGroups>(&id, &record)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eid(n: u32) -> OwnedEventId {
        OwnedEventId::try_from(format!("$e{n}")).unwrap()
    }

    #[test]
    fn deltas_and_snapshots_agree() {
        let db = Db::in_memory();
        let mut parent = None;
        // Enough groups to cross several snapshots; each sets one member and rewrites the topic.
        for n in 1..=(SNAPSHOT_EVERY * 2 + 5) {
            let mut batch = Batch::new();
            let changes = vec![
                ("m.room.member".to_owned(), format!("@u{n}:x"), eid(n)),
                ("m.room.topic".to_owned(), String::new(), eid(n)),
            ];
            write_group(&db, &mut batch, u64::from(n), parent, &changes).unwrap();
            db.write(batch).unwrap();
            parent = Some(u64::from(n));
        }
        let last = parent.unwrap();
        let state = load(&db, last).unwrap();
        assert_eq!(state.len(), (SNAPSHOT_EVERY * 2 + 5) as usize + 1);
        assert_eq!(state[&("m.room.topic".to_owned(), String::new())], eid(SNAPSHOT_EVERY * 2 + 5));
        assert_eq!(lookup(&db, last, "m.room.member", "@u1:x").unwrap(), Some(eid(1)));
        assert_eq!(lookup(&db, 3, "m.room.member", "@u7:x").unwrap(), None, "state of an older group");
        // No chain is longer than the snapshot interval.
        let record = db.get::<StateGroups>(&last).unwrap().unwrap();
        assert!(record.chain_len < SNAPSHOT_EVERY);
    }
}
