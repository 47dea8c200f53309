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
    Put {
        cf: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: &'static str,
        key: Vec<u8>,
    },
    /// Ends the reservation of a stream position taken through [`Shared::reserve_position`]:
    /// the batch fails, writing nothing, if the reservation is gone (released, or swept as
    /// belonging to a process that died). Engines without [`Shared`] never reserve and skip it.
    ClaimPosition {
        pos: u64,
    },
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

    /// What processes sharing this store agree on through it; `None` for an engine one
    /// process owns, whose own locks and counters are then the whole truth.
    fn shared(&self) -> Option<&dyn Shared> {
        None
    }
}

/// What kind of thing a [`Shared::lock`] serializes; each kind has its own key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// Local writes to one room (the key is the room ID).
    Room,
    /// Claiming something unique: a new room or user ID, the server's key, a due delayed
    /// event (the key names what).
    Create,
    /// Running the delivery queues (federation, push, delayed events, application services):
    /// one process at a time.
    Queues,
}

/// Held while alive; dropping it releases the lock.
pub trait LockGuard: Send {}

/// Agreement between the processes that share one store: counters, the global stream's
/// positions and locks, all kept by the store, so that every process sees the same.
///
/// Stream positions are reserved before the write that uses them and claimed by it
/// ([`WriteOp::ClaimPosition`]); [`Shared::watermark`] is the highest position at or below
/// which nothing is still reserved, which is what a reader in any process may read up to:
/// concurrent writers may commit in any order, and none is ever skipped.
pub trait Shared: Send + Sync {
    /// Increments the named counter, which starts above `floor`, and returns its new value.
    fn increment(&self, counter: &str, floor: u64) -> Result<u64>;

    /// Reserves the next stream position (above `floor` and every position reserved before).
    fn reserve_position(&self, floor: u64) -> Result<u64>;

    /// Gives back a reservation whose write failed.
    fn release_position(&self, pos: u64) -> Result<()>;

    /// The highest position below which no reservation is outstanding, or `None` before the
    /// first reservation.
    fn watermark(&self) -> Result<Option<u64>>;

    /// Removes reservations that can no longer be claimed: this process's that are older than
    /// a few seconds and not in `mine` (the ones it still works on), and those of processes
    /// that have died.
    fn sweep(&self, mine: &[u64]) -> Result<usize>;

    /// Waits for the lock of `kind` on `key`, held until the guard drops, against every
    /// process (and every other caller in this one).
    fn lock(&self, kind: LockKind, key: &str) -> Result<Box<dyn LockGuard>>;

    /// The lock if it is free now, without waiting.
    fn try_lock(&self, kind: LockKind, key: &str) -> Result<Option<Box<dyn LockGuard>>>;
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
