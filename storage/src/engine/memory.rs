//! An in-memory engine for unit tests: a `BTreeMap` per column family behind one lock, so a
//! batch is atomic exactly as in RocksDB.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
    sync::RwLock,
};

use super::{KvEngine, RawIter, WriteOp};
use crate::{Error, Result};

type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Default)]
pub struct MemEngine {
    trees: RwLock<HashMap<&'static str, Tree>>,
}

impl MemEngine {
    pub fn new(column_families: &[&'static str]) -> Self {
        let trees = column_families.iter().map(|cf| (*cf, Tree::new())).collect();
        Self { trees: RwLock::new(trees) }
    }

    fn poisoned() -> Error {
        Error::Engine("memory engine lock poisoned".into())
    }
}

impl KvEngine for MemEngine {
    fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let trees = self.trees.read().map_err(|_| Self::poisoned())?;
        let tree = trees.get(cf).ok_or(Error::UnknownTable(cf))?;
        Ok(tree.get(key).cloned())
    }

    fn write(&self, ops: Vec<WriteOp>, _sync: bool) -> Result<()> {
        let mut trees = self.trees.write().map_err(|_| Self::poisoned())?;
        // Check every column family first so that a bad batch changes nothing.
        for op in &ops {
            let (WriteOp::Put { cf, .. } | WriteOp::Delete { cf, .. }) = op else { continue };
            if !trees.contains_key(cf) {
                return Err(Error::UnknownTable(cf));
            }
        }
        for op in ops {
            match op {
                WriteOp::Put { cf, key, value } => {
                    trees.entry(cf).or_default().insert(key, value);
                }
                WriteOp::Delete { cf, key } => {
                    trees.entry(cf).or_default().remove(&key);
                }
                // One process owns this engine: it reserves no positions.
                WriteOp::ClaimPosition { .. } => {}
            }
        }
        Ok(())
    }

    fn range(
        &self,
        cf: &'static str,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Result<RawIter<'_>> {
        let trees = self.trees.read().map_err(|_| Self::poisoned())?;
        let tree = trees.get(cf).ok_or(Error::UnknownTable(cf))?;
        // A snapshot copy keeps the iterator independent of the lock, like a RocksDB snapshot.
        let items: Vec<_> = tree.range((lower, upper)).map(|(k, v)| (k.clone(), v.clone())).collect();
        if reverse {
            Ok(Box::new(items.into_iter().rev().map(Ok)))
        } else {
            Ok(Box::new(items.into_iter().map(Ok)))
        }
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
