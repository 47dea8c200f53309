use std::{
    ops::Bound,
    sync::atomic::{AtomicU64, Ordering},
};

use ruma::{OwnedDeviceId, OwnedUserId, owned_room_id, owned_user_id};

use super::*;
use crate::{
    engine::WriteOp,
    records::AccountDataRecord,
    schema::{Devices, Filters, RoomAccountData},
};

/// What keeps an engine alive (its directory, its server) for as long as a test uses it.
type Keep = Option<Box<dyn std::any::Any>>;

/// Each engine with what keeps it alive.
fn engines() -> Vec<(&'static str, Db, Keep)> {
    let mut all: Vec<(&'static str, Db, Keep)> = vec![("memory", Db::in_memory(), None)];
    #[cfg(feature = "rocksdb")]
    {
        let dir = tempfile::tempdir().unwrap();
        let config = StorageConfig {
            path: dir.path().to_owned(),
            sync_writes: false,
            cache_mb: 8,
            ..StorageConfig::default()
        };
        all.push(("rocksdb", Db::open(&config).unwrap(), Some(Box::new(dir))));
    }
    #[cfg(feature = "postgres")]
    {
        let cluster = crate::engine::postgres::test_cluster::TestCluster::start();
        let engine =
            crate::engine::postgres::PostgresEngine::open(&cluster.url, crate::schema::ALL_TABLES, 4)
                .unwrap();
        all.push(("postgres", Db::from_engine(Box::new(engine), false).unwrap(), Some(Box::new(cluster))));
    }
    all
}

fn alice() -> OwnedUserId {
    owned_user_id!("@alice:example.org")
}

#[test]
fn put_get_delete() {
    for (name, db, _dir) in engines() {
        let key = (alice(), 3u64);
        assert_eq!(db.get::<Filters>(&key).unwrap(), None, "{name}");
        db.put::<Filters>(&key, &serde_json::json!({"room": {}})).unwrap();
        assert_eq!(db.get::<Filters>(&key).unwrap(), Some(serde_json::json!({"room": {}})), "{name}");
        assert!(db.contains::<Filters>(&key).unwrap());
        db.delete::<Filters>(&key).unwrap();
        assert!(!db.contains::<Filters>(&key).unwrap(), "{name}");
    }
}

#[test]
fn prefix_scan_stays_inside_prefix_in_both_directions() {
    for (name, db, _dir) in engines() {
        let bob = owned_user_id!("@bob:example.org");
        // "@alice:example.org" is a string prefix of this one; the key encoding must keep them apart.
        let alice2 = owned_user_id!("@alice:example.org2");
        for (user, n) in [(alice(), 1u64), (alice(), 2), (alice2.clone(), 1), (bob.clone(), 1), (alice(), 10)]
        {
            db.put::<Filters>(&(user, n), &serde_json::json!(n)).unwrap();
        }
        let forward: Vec<u64> =
            db.scan_prefix::<Filters, _>(&alice()).unwrap().map(|r| r.unwrap().0.1).collect();
        assert_eq!(forward, vec![1, 2, 10], "{name}");
        let backward: Vec<u64> = db
            .scan_prefix_dir::<Filters, _>(&alice(), Direction::Backward)
            .unwrap()
            .map(|r| r.unwrap().0.1)
            .collect();
        assert_eq!(backward, vec![10, 2, 1], "{name}");
    }
}

#[test]
fn three_part_keys_scan_by_one_or_two_parts() {
    for (name, db, _dir) in engines() {
        let room_a = owned_room_id!("!a:example.org");
        let room_b = owned_room_id!("!b:example.org");
        let record = AccountDataRecord { content: serde_json::json!({}), stream_pos: 1 };
        for (room, ty) in [(&room_a, "m.tag"), (&room_a, "x"), (&room_b, "m.tag")] {
            db.put::<RoomAccountData>(&(alice(), room.clone(), ty.to_owned()), &record).unwrap();
        }
        assert_eq!(db.scan_prefix::<RoomAccountData, _>(&alice()).unwrap().count(), 3, "{name}");
        let in_a = db.scan_prefix::<RoomAccountData, _>(&(alice(), room_a.clone())).unwrap().count();
        assert_eq!(in_a, 2, "{name}");
    }
}

#[test]
fn range_bounds() {
    for (name, db, _dir) in engines() {
        for n in 1..=5u64 {
            db.put::<Filters>(&(alice(), n), &serde_json::json!(n)).unwrap();
        }
        let (k2, k4) = ((alice(), 2u64), (alice(), 4u64));
        let ids = |it: TableIter<'_, Filters>| it.map(|r| r.unwrap().0.1).collect::<Vec<_>>();
        let got =
            ids(db.range::<Filters>(Bound::Excluded(&k2), Bound::Included(&k4), Direction::Forward).unwrap());
        assert_eq!(got, vec![3, 4], "{name}");
        let got = ids(db
            .range::<Filters>(Bound::Included(&k2), Bound::Excluded(&k4), Direction::Backward)
            .unwrap());
        assert_eq!(got, vec![3, 2], "{name}");
        let got =
            ids(db.range::<Filters>(Bound::Excluded(&k2), Bound::Unbounded, Direction::Backward).unwrap());
        assert_eq!(got, vec![5, 4, 3], "{name}");
    }
}

#[test]
fn batch_is_all_or_nothing() {
    for (name, db, _dir) in engines() {
        let ok = WriteOp::Put { cf: Filters::CF, key: (alice(), 1u64).to_key_bytes(), value: b"1".to_vec() };
        let bad = WriteOp::Put { cf: "no_such_table", key: vec![1], value: vec![] };
        assert!(db.inner.engine.write(vec![ok, bad], false).is_err(), "{name}");
        assert!(!db.contains::<Filters>(&(alice(), 1)).unwrap(), "{name}: half a batch landed");

        let mut batch = Batch::new();
        let device = OwnedDeviceId::from("DEV");
        batch.put::<Filters>(&(alice(), 1), &serde_json::json!(1)).unwrap();
        batch.delete::<Devices>(&(alice(), device));
        assert_eq!(batch.len(), 2);
        db.write(batch).unwrap();
        assert!(db.contains::<Filters>(&(alice(), 1)).unwrap(), "{name}");
    }
}

#[test]
fn corrupt_value_names_the_table() {
    let db = Db::in_memory();
    let key = (alice(), 1u64);
    let op = WriteOp::Put { cf: Filters::CF, key: key.to_key_bytes(), value: b"{not json".to_vec() };
    db.inner.engine.write(vec![op], false).unwrap();
    let err = db.get::<Filters>(&key).unwrap_err().to_string();
    assert!(err.contains("filters"), "{err}");
}

#[test]
fn counters_increase_under_concurrency() {
    for (name, db, _keep) in engines() {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let db = db.clone();
                std::thread::spawn(move || (0..50).map(|_| db.next_id("t").unwrap()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort_unstable();
        assert_eq!(all, (1..=200).collect::<Vec<_>>(), "{name}");
    }
}

static MIGRATED_TO: AtomicU64 = AtomicU64::new(0);

fn step2(_db: &Db) -> Result<()> {
    MIGRATED_TO.store(2, Ordering::SeqCst);
    Ok(())
}

#[test]
fn schema_version_and_migration_hook() {
    let db = Db::in_memory();
    assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
    // An old database is brought forward step by step.
    db.migrate(2, &[Migration { version: 2, run: step2 }]).unwrap();
    assert_eq!(MIGRATED_TO.load(Ordering::SeqCst), 2);
    assert_eq!(db.schema_version().unwrap(), 2);
    // A database newer than the build is refused.
    let err = db.migrate(1, &[]).unwrap_err();
    assert!(matches!(err, Error::SchemaTooNew { found: 2, supported: 1 }), "{err}");
    // A gap in the migration list is an error, not a silent skip.
    assert!(db.migrate(3, &[]).is_err());
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig {
        path: dir.path().to_owned(),
        sync_writes: true,
        cache_mb: 8,
        ..StorageConfig::default()
    };
    {
        let db = Db::open(&config).unwrap();
        db.put::<Filters>(&(alice(), 7), &serde_json::json!("kept")).unwrap();
        assert_eq!(db.next_id("x").unwrap(), 1);
    }
    let db = Db::open(&config).unwrap();
    assert_eq!(db.get::<Filters>(&(alice(), 7)).unwrap(), Some(serde_json::json!("kept")));
    assert_eq!(db.next_id("x").unwrap(), 2);
    assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
}

#[test]
fn lenient_scan_hands_back_the_key_of_an_undecodable_value() {
    let db = Db::in_memory();
    db.put::<Filters>(&(alice(), 1), &serde_json::json!({"ok": 1})).unwrap();
    let op =
        WriteOp::Put { cf: Filters::CF, key: (alice(), 2u64).to_key_bytes(), value: b"{not json".to_vec() };
    db.inner.engine.write(vec![op], false).unwrap();
    db.put::<Filters>(&(alice(), 3), &serde_json::json!({"ok": 3})).unwrap();

    // The strict scan fails on the bad record; the lenient one skips it and names its key.
    assert!(db.scan_prefix::<Filters, _>(&alice()).unwrap().any(|e| e.is_err()));
    let seen: Vec<(u64, bool)> = db
        .scan_prefix::<Filters, _>(&alice())
        .unwrap()
        .lenient()
        .map(|e| e.map(|((_, n), v)| (n, v.is_some())).unwrap())
        .collect();
    assert_eq!(seen, vec![(1, true), (2, false), (3, true)]);
    let error = db.get::<Filters>(&(alice(), 2)).unwrap_err();
    assert!(error.is_value_decode(), "{error}");
    assert_eq!(db.get_lenient::<Filters>(&(alice(), 2)).unwrap(), None);
    assert_eq!(db.get_lenient::<Filters>(&(alice(), 3)).unwrap(), Some(serde_json::json!({"ok": 3})));
}

#[test]
fn keys_over_the_limit_are_refused_alike_on_every_engine() {
    for (name, db, _dir) in engines() {
        let room = owned_room_id!("!r:example.org");
        let longest = "t".repeat(MAX_KEY_BYTES - 64);
        let fits = (alice(), room.clone(), longest.clone());
        let record = AccountDataRecord { content: serde_json::json!({}), stream_pos: 1 };
        db.put::<RoomAccountData>(&fits, &record).unwrap();
        assert!(db.get::<RoomAccountData>(&fits).unwrap().is_some(), "{name}");
        let over = (alice(), room, "t".repeat(MAX_KEY_BYTES + 1000));
        let error = db.put::<RoomAccountData>(&over, &record).unwrap_err();
        assert!(error.is_key_too_long(), "{name}: {error}");
        // Reading or deleting such a key is no error: it is simply not there.
        assert_eq!(db.get::<RoomAccountData>(&over).unwrap(), None, "{name}");
        db.delete::<RoomAccountData>(&over).unwrap();
    }
}
