//! Room state as state groups: each group is a delta on its parent, and every
//! [`SNAPSHOT_EVERY`]th group is a full snapshot, so reading any state walks at most that many
//! groups. A snapshot's entries are rows of their own (`StateSnapshotEntries`), so that one
//! entry of a big room's state is one read. A PDU points at the group of the state after it;
//! the current state is also kept flat in `CurrentState` for the hot lookups.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Mutex, PoisonError},
};

use hearth_storage::{
    Batch, Db,
    records::StateGroupRecord,
    schema::{StateGroups, StateSnapshotEntries},
};
use ruma::OwnedEventId;

use crate::{Error, Result};

/// Longest delta chain before a group is written as a full snapshot.
pub const SNAPSHOT_EVERY: u32 = 64;

/// `(event type, state key) -> event ID`.
pub type StateMap = BTreeMap<(String, String), OwnedEventId>;

fn group(db: &Db, id: u64) -> Result<StateGroupRecord> {
    db.get::<StateGroups>(&id)?.ok_or_else(|| Error::internal(format!("state group {id} is missing")))
}

/// The entries a group itself holds: its delta, or all of a snapshot's.
fn own_entries(db: &Db, id: u64, record: StateGroupRecord) -> Result<Vec<(String, String, OwnedEventId)>> {
    if !record.rows {
        return Ok(record.entries);
    }
    db.scan_prefix::<StateSnapshotEntries, _>(&id)?
        .map(|entry| {
            let ((_, kind, key), event_id) = entry?;
            Ok((kind, key, event_id))
        })
        .collect()
}

/// The full state of a group.
pub fn load(db: &Db, id: u64) -> Result<StateMap> {
    let mut chain = Vec::new();
    let mut next = Some(id);
    while let Some(id) = next {
        let record = group(db, id)?;
        next = record.parent;
        chain.push((id, record));
    }
    let mut state = StateMap::new();
    // Oldest first, so later deltas win.
    for (id, record) in chain.into_iter().rev() {
        for (kind, key, event_id) in own_entries(db, id, record)? {
            state.insert((kind, key), event_id);
        }
    }
    Ok(state)
}

/// What one group says of `(kind, key)`: `Some(answer)` when the group settles it (a delta
/// that sets it, or a snapshot, which has every entry), `None` to ask its parent.
fn settled_by(
    db: &Db,
    id: u64,
    record: &StateGroupRecord,
    kind: &str,
    key: &str,
) -> Result<Option<Option<OwnedEventId>>> {
    if record.rows {
        return Ok(Some(db.get::<StateSnapshotEntries>(&(id, kind.to_owned(), key.to_owned()))?));
    }
    if let Some((_, _, event_id)) = record.entries.iter().find(|(k, s, _)| k == kind && s == key) {
        return Ok(Some(Some(event_id.clone())));
    }
    Ok(record.parent.is_none().then_some(None))
}

/// Entries the lookup cache holds before it starts afresh.
const LOOKUP_CACHE_ENTRIES: usize = 50_000;

/// One entry of a group's state without loading all of it, and the answer remembered for
/// every group the lookup passed through, so that the many lookups
/// of one entry across a room's consecutive groups (a member list, a page of events, each
/// asking the viewer's membership) walk each delta once instead of once per event. Groups
/// never change, so no answer goes stale; the cache is emptied when full, which bounds it.
#[derive(Default)]
pub struct LookupCache {
    answers: Mutex<HashMap<(u64, String, String), Option<OwnedEventId>>>,
}

impl LookupCache {
    fn cached(&self, id: u64, kind: &str, key: &str) -> Option<Option<OwnedEventId>> {
        let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        answers.get(&(id, kind.to_owned(), key.to_owned())).cloned()
    }

    /// What group `id` holds for `(kind, key)`.
    pub fn lookup(&self, db: &Db, id: u64, kind: &str, key: &str) -> Result<Option<OwnedEventId>> {
        let mut passed = Vec::new();
        let mut next = Some(id);
        let mut answer = None;
        while let Some(id) = next {
            if let Some(known) = self.cached(id, kind, key) {
                answer = known;
                break;
            }
            passed.push(id);
            let record = group(db, id)?;
            if let Some(settled) = settled_by(db, id, &record, kind, key)? {
                answer = settled;
                break;
            }
            next = record.parent;
        }
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        if answers.len() + passed.len() > LOOKUP_CACHE_ENTRIES {
            answers.clear();
        }
        for id in passed {
            answers.insert((id, kind.to_owned(), key.to_owned()), answer.clone());
        }
        Ok(answer)
    }
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
        (Some(parent), Some(p)) if p.chain_len + 1 < SNAPSHOT_EVERY => StateGroupRecord {
            parent: Some(parent),
            chain_len: p.chain_len + 1,
            entries: changes.to_vec(),
            rows: false,
        },
        _ => {
            let mut state = match parent {
                Some(parent) => load(db, parent)?,
                None => StateMap::new(),
            };
            for (kind, key, event_id) in changes {
                state.insert((kind.clone(), key.clone()), event_id.clone());
            }
            for ((kind, key), event_id) in state {
                batch.put::<StateSnapshotEntries>(&(id, kind, key), &event_id)?;
            }
            StateGroupRecord { parent: None, chain_len: 0, entries: Vec::new(), rows: true }
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
        let cache = LookupCache::default();
        assert_eq!(cache.lookup(&db, last, "m.room.member", "@u1:x").unwrap(), Some(eid(1)));
        assert_eq!(cache.lookup(&db, 3, "m.room.member", "@u7:x").unwrap(), None, "state of an older group");
        // No chain is longer than the snapshot interval.
        let record = db.get::<StateGroups>(&last).unwrap().unwrap();
        assert!(record.chain_len < SNAPSHOT_EVERY);
        // Lookups answer as the full state does, for every group, asked in any order (so that
        // answers remembered from earlier walks are used).
        for id in (1..=last).rev().chain(1..=last) {
            let state = load(&db, id).unwrap();
            for key in ["@u1:x", "@u70:x", "@u999:x"] {
                let expected = state.get(&("m.room.member".to_owned(), key.to_owned())).cloned();
                assert_eq!(cache.lookup(&db, id, "m.room.member", key).unwrap(), expected, "{key} at {id}");
            }
        }
    }

    #[test]
    fn snapshots_written_before_snapshot_rows_still_read() {
        let db = Db::in_memory();
        let mut batch = Batch::new();
        let old = StateGroupRecord {
            parent: None,
            chain_len: 0,
            entries: vec![("m.room.create".to_owned(), String::new(), eid(1))],
            rows: false,
        };
        batch.put::<StateGroups>(&1, &old).unwrap();
        db.write(batch).unwrap();
        let mut batch = Batch::new();
        write_group(&db, &mut batch, 2, Some(1), &[("m.room.topic".to_owned(), String::new(), eid(2))])
            .unwrap();
        db.write(batch).unwrap();
        assert_eq!(load(&db, 2).unwrap().len(), 2);
        assert_eq!(LookupCache::default().lookup(&db, 2, "m.room.create", "").unwrap(), Some(eid(1)));
    }
}
