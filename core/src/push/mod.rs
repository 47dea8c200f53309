//! Notifications: what each local user's push rules make of the events that land in their
//! rooms, the unread counts those add up to, the notification list, and pushers.
//!
//! An event that notifies someone leaves two rows in its own batch (`rooms/notify.rs` writes
//! them): a `PushActions` row, which is the unread notification itself and is deleted once a
//! read receipt (or the user's own message) covers it, and a `Notifications` row, kept for
//! `GET /notifications`. Unread counts are therefore a scan of what is still unread, and a
//! notification is read exactly when its `PushActions` row is gone.

mod channels;
pub mod mail;
pub mod pushers;
pub mod rules;
pub mod sender;

use std::collections::BTreeMap;

use hearth_storage::{
    Batch, Db,
    records::{NotificationRecord, PushActionRecord},
    schema::{Notifications, PushActions},
};
use ruma::{OwnedEventId, RoomId, UserId};

use crate::{Result, events::Pdu};

pub use rules::RulesCache;

/// What the room write paths share with the rest of notifications: each user's parsed rules,
/// and the push sender's wake-up.
#[derive(Debug, Clone, Default)]
pub struct PushShared {
    pub rules: RulesCache,
    pub wake: std::sync::Arc<tokio::sync::Notify>,
}

/// Notification and highlight counts of one room or thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub notifications: u64,
    pub highlights: u64,
}

impl Counts {
    fn add(&mut self, record: &PushActionRecord) {
        self.notifications += 1;
        self.highlights += u64::from(record.highlight);
    }
}

/// A user's unread notifications in one room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnreadCounts {
    /// The main timeline (events outside any thread).
    pub main: Counts,
    /// Each thread with something unread, by its root.
    pub threads: BTreeMap<OwnedEventId, Counts>,
}

impl UnreadCounts {
    /// Everything unread in the room, threads included: what a client that does not ask for
    /// thread counts is shown.
    pub fn total(&self) -> Counts {
        self.threads.values().fold(self.main, |acc, c| Counts {
            notifications: acc.notifications + c.notifications,
            highlights: acc.highlights + c.highlights,
        })
    }
}

/// The thread an event belongs to: the root named by an `m.thread` relation.
pub fn thread_of(pdu: &Pdu) -> Option<OwnedEventId> {
    let (root, rel_type) = crate::rooms::relations::content_relation(pdu.content.get())?;
    (rel_type == "m.thread").then_some(root)
}

/// A user's unread notifications in a room, by thread, up to a stream position (a sync counts
/// what its timeline can show, not events written but not yet published).
pub fn unread_counts(db: &Db, user: &UserId, room_id: &RoomId, up_to: u64) -> Result<UnreadCounts> {
    let mut counts = UnreadCounts::default();
    for row in db.scan_prefix::<PushActions, _>(&(user.to_owned(), room_id.to_owned()))?.lenient() {
        let (key, record) = row?;
        if key.2 > up_to {
            break;
        }
        let Some(record) = record else { continue };
        match &record.thread {
            None => counts.main.add(&record),
            Some(root) => counts.threads.entry(root.clone()).or_default().add(&record),
        }
    }
    Ok(counts)
}

/// What a read receipt (or the user's own event) marks as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadScope {
    /// Everything in the room: an unthreaded receipt.
    Room,
    /// The main timeline only (a receipt with `thread_id: "main"`).
    Main,
    /// One thread, by its root.
    Thread(OwnedEventId),
}

impl ReadScope {
    /// The scope of a receipt's `thread_id` (`""` when the receipt has none).
    pub fn of_receipt_thread(thread: &str) -> Option<Self> {
        match thread {
            "" => Some(Self::Room),
            "main" => Some(Self::Main),
            root => OwnedEventId::try_from(root).ok().map(Self::Thread),
        }
    }

    fn covers(&self, record: &PushActionRecord) -> bool {
        match self {
            Self::Room => true,
            Self::Main => record.thread.is_none(),
            Self::Thread(root) => record.thread.as_ref() == Some(root),
        }
    }
}

/// Marks as read, in `batch`, the user's notifications in a room at or before `up_to` (a
/// stream position) within `scope`.
pub fn mark_read(
    db: &Db,
    batch: &mut Batch,
    user: &UserId,
    room_id: &RoomId,
    up_to: u64,
    scope: &ReadScope,
) -> Result<()> {
    for row in db.scan_prefix::<PushActions, _>(&(user.to_owned(), room_id.to_owned()))?.lenient() {
        let (key, record) = row?;
        if key.2 > up_to {
            break;
        }
        // An undecodable row could never be counted right: reading past it removes it.
        if record.as_ref().is_none_or(|r| scope.covers(r)) {
            batch.delete::<PushActions>(&key);
        }
    }
    Ok(())
}

/// One entry of `GET /notifications`.
#[derive(Debug, Clone)]
pub struct Notification {
    pub pos: u64,
    pub record: NotificationRecord,
    pub read: bool,
}

/// A page of a user's notifications, newest first, from before `from` (a position; `None`: the
/// newest), at most `limit`, highlights only when `only_highlight`. Returns the page and the
/// position to continue from.
pub fn notifications(
    db: &Db,
    user: &UserId,
    from: Option<u64>,
    limit: usize,
    only_highlight: bool,
) -> Result<(Vec<Notification>, Option<u64>)> {
    use std::ops::Bound;
    let upper = (user.to_owned(), from.unwrap_or(u64::MAX));
    let upper = if from.is_some() { Bound::Excluded(&upper) } else { Bound::Included(&upper) };
    let lower = (user.to_owned(), 0);
    let mut page = Vec::new();
    let mut next = None;
    let rows =
        db.range::<Notifications>(Bound::Included(&lower), upper, hearth_storage::Direction::Backward)?;
    for row in rows.lenient() {
        let ((_, pos), record) = row?;
        let Some(record) = record else { continue };
        if only_highlight && !record.highlight {
            continue;
        }
        if page.len() == limit {
            next = page.last().map(|n: &Notification| n.pos);
            break;
        }
        let read = !db.contains::<PushActions>(&(user.to_owned(), record.room_id.clone(), pos))?;
        page.push(Notification { pos, record, read });
    }
    Ok((page, next))
}

/// How long `GET /notifications` remembers a notification (as Synapse: 30 days).
pub const KEEP_NOTIFICATIONS_MS: u64 = 30 * 24 * 60 * 60 * 1000;

/// Deletes the notification list's entries older than `before` (ms since the epoch), in
/// batches; returns how many went. Unread counts are not touched.
pub fn prune_notifications(db: &Db, before: u64) -> Result<usize> {
    const BATCH: usize = 1000;
    let mut batch = Batch::new();
    let mut pruned = 0;
    for row in db.scan_prefix_all::<Notifications>()?.lenient() {
        let (key, record) = row?;
        if record.is_none_or(|r| r.ts < before) {
            batch.delete::<Notifications>(&key);
            pruned += 1;
            if batch.len() >= BATCH {
                db.write(std::mem::take(&mut batch))?;
            }
        }
    }
    db.write(batch)?;
    Ok(pruned)
}

/// Deletes every unread notification of a user in a room, for a user who left it.
pub fn forget_room(db: &Db, batch: &mut Batch, user: &UserId, room_id: &RoomId) -> Result<()> {
    mark_read(db, batch, user, room_id, u64::MAX, &ReadScope::Room)
}

#[cfg(test)]
mod tests;
