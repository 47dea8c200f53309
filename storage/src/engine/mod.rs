//! The ordered key-value engine under the typed tables.
//!
//! Engines know column families by name and bytes only; types live one level up in [`crate::db`].

pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "rocksdb")]
pub mod rocks;

use std::ops::Bound;

use crate::Result;

/// One write in an atomic batch.
#[derive(Debug, Clone)]
pub enum WriteOp {
    Put { cf: &'static str, key: Vec<u8>, value: Vec<u8> },
    Delete { cf: &'static str, key: Vec<u8> },
}

/// Pairs of raw key and value, in key order (or reverse order when asked).
pub type RawIter<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + Send + 'a>;

/// An ordered key-value store with column families and atomic batches.
///
/// Implementations must apply a batch all-or-nothing, and when `sync` is true must not return
/// before the batch is durable (survives power loss).
pub trait KvEngine: Send + Sync + 'static {
    fn get(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>>;

    fn write(&self, ops: Vec<WriteOp>, sync: bool) -> Result<()>;

    /// Iterates keys within `(lower, upper)` in ascending order, or descending when `reverse`.
    fn range(
        &self,
        cf: &'static str,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        reverse: bool,
    ) -> Result<RawIter<'_>>;

    /// Forces everything written so far to durable storage.
    fn flush(&self) -> Result<()>;

    /// The engine's own numbers for monitoring, by name (none for engines without any).
    fn stats(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// The smallest byte string greater than every string starting with `prefix`,
/// or `None` when no such string exists (the prefix is all `0xFF`).
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_successor;

    #[test]
    fn successor() {
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_successor(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_successor(&[]), None);
    }
}
