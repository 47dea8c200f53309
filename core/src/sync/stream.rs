//! The global stream: one sequence of positions for everything a client syncs (room events,
//! account data, later receipts, typing, to-device).
//!
//! Writers allocate positions concurrently and may finish out of order. Readers must never see
//! position 8 before 7 has landed, or they would skip 7 for good; so the stream publishes only
//! the highest position below which every allocated position is finished, and holds back
//! wake-ups until then.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, PoisonError},
};

use hearth_storage::{Batch, Db, records::StreamEntry, schema::StreamLog};
use ruma::OwnedUserId;

use super::notifier::Notifier;
use crate::{Result, users::blocking};

#[derive(Debug)]
pub struct Streams {
    state: Mutex<State>,
    notifier: Arc<Notifier>,
    /// The published position, for background readers of the whole stream (application
    /// service senders) that follow no user.
    published_tx: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    last_allocated: u64,
    pending: BTreeSet<u64>,
    published: u64,
    /// Wake-ups waiting for their position to be published (shared lists: a room's members
    /// are woken from its cached member list, not a copy of it).
    wakeups: BTreeMap<u64, Vec<Arc<[OwnedUserId]>>>,
}

/// A reserved position. Dropping it without [`Streams::finish`] (a failed write) releases it.
#[derive(Debug)]
pub struct Ticket {
    pub pos: u64,
    streams: Arc<Streams>,
    done: bool,
}

impl Streams {
    /// Resumes after `last`, the highest position found in storage.
    pub fn new(last: u64, notifier: Arc<Notifier>) -> Arc<Self> {
        let state = State { last_allocated: last, published: last, ..State::default() };
        Arc::new(Self {
            state: Mutex::new(state),
            notifier,
            published_tx: tokio::sync::watch::Sender::new(last),
        })
    }

    /// Sees every publication from now on.
    pub fn watch_published(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published_tx.subscribe()
    }

    pub fn allocate(self: &Arc<Self>) -> Ticket {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.last_allocated += 1;
        let pos = state.last_allocated;
        state.pending.insert(pos);
        Ticket { pos, streams: self.clone(), done: false }
    }

    /// The position readers may read up to: everything at or below it is in storage.
    pub fn published(&self) -> u64 {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).published
    }

    /// Marks the ticket's write as durable and wakes `users` once it is published.
    pub fn finish(&self, mut ticket: Ticket, users: impl Into<Arc<[OwnedUserId]>>) {
        ticket.done = true;
        self.release(ticket.pos, users.into());
    }

    fn release(&self, pos: u64, users: Arc<[OwnedUserId]>) {
        let (published, wake) = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.pending.remove(&pos);
            if !users.is_empty() {
                state.wakeups.entry(pos).or_default().push(users);
            }
            let published = match state.pending.first() {
                Some(first) => first - 1,
                None => state.last_allocated,
            };
            state.published = state.published.max(published);
            let first_unpublished = state.published + 1;
            let later = state.wakeups.split_off(&first_unpublished);
            let wake: Vec<Arc<[OwnedUserId]>> =
                std::mem::replace(&mut state.wakeups, later).into_values().flatten().collect();
            (state.published, wake)
        };
        self.published_tx.send_if_modified(|p| {
            let newer = published > *p;
            *p = (*p).max(published);
            newer
        });
        if !wake.is_empty() {
            self.notifier.notify(wake.iter().flat_map(|users| users.iter()).map(AsRef::as_ref), published);
        }
    }
}

impl Streams {
    /// The usual write at a new position: `build` fills a batch for the position and names its
    /// stream log entry; the batch lands atomically with that entry, then the position is
    /// published and `wake` woken.
    pub async fn write<F>(
        self: &Arc<Self>,
        db: &Db,
        wake: impl Into<Arc<[OwnedUserId]>>,
        build: F,
    ) -> Result<u64>
    where
        F: FnOnce(&mut Batch, u64) -> Result<StreamEntry> + Send + 'static,
    {
        let ticket = self.allocate();
        let pos = ticket.pos;
        let db = db.clone();
        blocking(move || {
            let mut batch = Batch::new();
            let entry = build(&mut batch, pos)?;
            batch.put::<StreamLog>(&pos, &entry)?;
            Ok(db.write(batch)?)
        })
        .await?;
        self.finish(ticket, wake);
        Ok(pos)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            self.streams.release(self.pos, Arc::new([]));
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma::user_id;

    use super::*;

    #[test]
    fn out_of_order_finishes_publish_only_contiguous_positions() {
        let notifier = Arc::new(Notifier::new(0));
        let streams = Streams::new(10, notifier.clone());
        let alice = user_id!("@alice:x");
        let rx = notifier.subscribe(alice);
        let a = streams.allocate();
        let b = streams.allocate();
        assert_eq!((a.pos, b.pos), (11, 12));
        streams.finish(b, vec![alice.to_owned()]);
        assert_eq!(streams.published(), 10, "12 must wait for 11");
        assert_eq!(*rx.borrow(), 0, "no wake-up before publication");
        streams.finish(a, vec![]);
        assert_eq!(streams.published(), 12);
        assert_eq!(*rx.borrow(), 12, "the held-back wake-up is delivered");
    }

    #[test]
    fn a_dropped_ticket_does_not_block_the_stream() {
        let streams = Streams::new(0, Arc::new(Notifier::new(0)));
        let failed = streams.allocate();
        let ok = streams.allocate();
        drop(failed);
        streams.finish(ok, vec![]);
        assert_eq!(streams.published(), 2);
    }
}
