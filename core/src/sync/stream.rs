//! The global stream: one sequence of positions for everything a client syncs (room events,
//! account data, later receipts, typing, to-device).
//!
//! Writers allocate positions concurrently and may finish out of order. Readers must never see
//! position 8 before 7 has landed, or they would skip 7 for good; so the stream publishes only
//! the highest position below which every allocated position is finished, and holds back
//! wake-ups until then.
//!
//! On a store several processes share, positions are reserved in the store instead, and what
//! may be read is the store's watermark (the highest position below which no reservation is
//! outstanding, whichever process holds it). Each process tells the others, over a
//! [`StreamBus`], the position it wrote, the users it wakes and the watermark it saw after; a
//! process also asks the store every second, which covers a lost message and releases the
//! reservations of a process that died.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, PoisonError},
};

use hearth_storage::{Batch, Db, records::StreamEntry};
use ruma::OwnedUserId;
use serde::{Deserialize, Serialize};

use super::notifier::Notifier;
use crate::{Result, users::blocking};

#[derive(Debug)]
pub struct Streams {
    state: Mutex<State>,
    notifier: Arc<Notifier>,
    /// The published position, for background readers of the whole stream (application
    /// service senders) that follow no user.
    published_tx: tokio::sync::watch::Sender<u64>,
    /// With a store several processes share.
    shared: Option<SharedStream>,
}

/// Carries one process's messages to the others (Redis pub/sub in the binary): stream news
/// and the changes of [`crate::cluster`]. Delivery is best effort: a lost message delays
/// wake-ups by up to a second, never loses an event, because readers always read the store;
/// a typing or presence change may be missed, as it may be lost on a restart. Messages must
/// reach the others in the order they were published.
pub trait StreamBus: Send + Sync + std::fmt::Debug {
    fn publish(&self, message: Vec<u8>);
}

#[derive(Debug)]
struct SharedStream {
    db: Db,
    /// The last position logged when this process started; the store's count goes on above it.
    floor: u64,
    /// This process, so that it skips its own messages.
    node: String,
    bus: Option<Arc<dyn StreamBus>>,
}

/// What a process tells the others after a write.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct News {
    pos: u64,
    /// The watermark the writer saw after its write.
    upto: u64,
    #[serde(default)]
    wake: Vec<OwnedUserId>,
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
            shared: None,
        })
    }

    /// The stream on a store several processes share: positions come from the store, and
    /// readers start at `published`, its watermark (a position another process still writes
    /// may lie below `last`, the highest one logged). Call inside a runtime: a task checks the
    /// store every second while the stream lives.
    pub fn shared(
        db: Db,
        last: u64,
        published: u64,
        notifier: Arc<Notifier>,
        bus: Option<Arc<dyn StreamBus>>,
    ) -> Arc<Self> {
        let state = State { last_allocated: last, published, ..State::default() };
        let node = crate::util::random_string(16);
        let streams = Arc::new(Self {
            state: Mutex::new(state),
            notifier,
            published_tx: tokio::sync::watch::Sender::new(published),
            shared: Some(SharedStream { db, floor: last, node, bus }),
        });
        let weak = Arc::downgrade(&streams);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(streams) = weak.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || streams.check_store()).await;
            }
        });
        streams
    }

    /// Sweeps what can no longer be claimed and publishes the store's watermark.
    fn check_store(&self) {
        let Some(shared) = &self.shared else { return };
        let Some(store) = shared.db.shared() else { return };
        let mine: Vec<u64> = self.lock().pending.iter().copied().collect();
        if let Err(error) = store.sweep(&mine) {
            tracing::warn!(%error, "sweeping stream reservations failed");
        }
        self.catch_up();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The published position after catching up with the store, for a reader holding a token
    /// from another process that has seen further (blocks on the store: call off the async
    /// threads). Alone on its store, the published position.
    pub fn catch_up(&self) -> u64 {
        if let Some(store) = self.shared.as_ref().and_then(|s| s.db.shared()) {
            match store.watermark() {
                Ok(Some(upto)) => self.advance(upto, None),
                Ok(None) => {}
                Err(error) => tracing::warn!(%error, "reading the stream's watermark failed"),
            }
        }
        self.published()
    }

    /// Whether a bus message from `node` came from this process.
    pub(crate) fn is_own(&self, node: &str) -> bool {
        self.shared.as_ref().is_none_or(|shared| shared.node == node)
    }

    /// Whether other processes share the store (and so the stream).
    pub(crate) fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Tells the other processes, over the bus, when there is one. Messages go out in the
    /// order of these calls.
    pub(crate) fn broadcast(&self, body: crate::cluster::Body) {
        let Some(shared) = &self.shared else { return };
        let Some(bus) = &shared.bus else { return };
        let envelope = crate::cluster::Envelope { node: shared.node.clone(), body };
        match serde_json::to_vec(&envelope) {
            Ok(message) => bus.publish(message),
            Err(error) => tracing::warn!(%error, "a bus message does not serialize"),
        }
    }

    /// The position a request reads up to. On a shared store the store's watermark is read
    /// first, so that a client reads its own writes, made through any process, at once: the
    /// write's own process publishes after answering, and another learns of it by message.
    pub async fn read_position(self: &Arc<Self>) -> u64 {
        if self.shared.is_none() {
            return self.published();
        }
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.catch_up()).await {
            Ok(position) => position,
            Err(_) => self.published(),
        }
    }

    /// Takes news from another process.
    pub(crate) fn receive_news(&self, news: News) {
        if self.shared.is_none() {
            return;
        }
        let wake = (!news.wake.is_empty()).then(|| (news.pos, Arc::<[OwnedUserId]>::from(news.wake)));
        self.advance(news.upto, wake);
    }

    /// Records `wake` (a position and who it wakes) and publishes up to `upto`, which must be
    /// a watermark: every position at or below it is finished.
    fn advance(&self, upto: u64, wake: Option<(u64, Arc<[OwnedUserId]>)>) {
        let (published, woken) = {
            let mut state = self.lock();
            if let Some((pos, users)) = wake {
                state.wakeups.entry(pos).or_default().push(users);
            }
            state.published = state.published.max(upto);
            let first_unpublished = state.published + 1;
            let later = state.wakeups.split_off(&first_unpublished);
            let woken: Vec<Arc<[OwnedUserId]>> =
                std::mem::replace(&mut state.wakeups, later).into_values().flatten().collect();
            (state.published, woken)
        };
        self.published_tx.send_if_modified(|p| {
            let newer = published > *p;
            *p = (*p).max(published);
            newer
        });
        if !woken.is_empty() {
            self.notifier.notify(woken.iter().flat_map(|users| users.iter()).map(AsRef::as_ref), published);
        }
    }

    /// Sees every publication from now on.
    pub fn watch_published(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published_tx.subscribe()
    }

    /// Reserves the next position. The write that uses it logs its entry with
    /// [`Batch::stream_entry`], then hands the ticket to [`Streams::finish`].
    pub fn allocate(self: &Arc<Self>) -> Result<Ticket> {
        if let Some(shared) = &self.shared {
            let store =
                shared.db.shared().ok_or_else(|| crate::Error::internal("the store is not shared"))?;
            let pos = store.reserve_position(shared.floor)?;
            let mut state = self.lock();
            state.last_allocated = state.last_allocated.max(pos);
            state.pending.insert(pos);
            return Ok(Ticket { pos, streams: self.clone(), done: false });
        }
        let mut state = self.lock();
        state.last_allocated += 1;
        let pos = state.last_allocated;
        state.pending.insert(pos);
        Ok(Ticket { pos, streams: self.clone(), done: false })
    }

    /// The position readers may read up to: everything at or below it is in storage.
    pub fn published(&self) -> u64 {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).published
    }

    /// Marks the ticket's write as durable and wakes `users` once it is published.
    pub fn finish(self: &Arc<Self>, mut ticket: Ticket, users: impl Into<Arc<[OwnedUserId]>>) {
        ticket.done = true;
        self.release(ticket.pos, users.into(), true);
    }

    fn release(self: &Arc<Self>, pos: u64, users: Arc<[OwnedUserId]>, written: bool) {
        if self.shared.is_some() {
            // The store is asked for the watermark off the async threads.
            let this = self.clone();
            let settle = move || this.settle_shared(pos, users, written);
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(settle)),
                Err(_) => settle(),
            }
            return;
        }
        // Everything below the lowest position still pending has landed (a watermark); a
        // later release may publish past it first, which `advance` allows for.
        let upto = {
            let mut state = self.lock();
            state.pending.remove(&pos);
            match state.pending.first() {
                Some(first) => first - 1,
                None => state.last_allocated,
            }
        };
        self.advance(upto, (!users.is_empty()).then_some((pos, users)));
    }
}

impl Streams {
    fn settle_shared(&self, pos: u64, users: Arc<[OwnedUserId]>, written: bool) {
        let Some(shared) = &self.shared else { return };
        let Some(store) = shared.db.shared() else { return };
        if !written && let Err(error) = store.release_position(pos) {
            // The sweep removes it within seconds; until then readers wait below it.
            tracing::warn!(%error, pos, "releasing a stream position failed");
        }
        self.lock().pending.remove(&pos);
        let upto = match store.watermark() {
            Ok(upto) => upto.unwrap_or(0),
            Err(error) => {
                // The next check of the store publishes it.
                tracing::warn!(%error, "reading the stream's watermark failed");
                0
            }
        };
        let wake = users.to_vec();
        let woken = (written && !users.is_empty()).then_some((pos, users));
        self.advance(upto, woken);
        if written {
            self.broadcast(crate::cluster::Body::News(News { pos, upto: self.published(), wake }));
        }
    }

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
        let (this, db) = (self.clone(), db.clone());
        // Reserving a position may be a round trip to a shared store: off the async threads.
        let ticket = blocking(move || {
            let ticket = this.allocate()?;
            let mut batch = Batch::new();
            let entry = build(&mut batch, ticket.pos)?;
            batch.stream_entry(ticket.pos, &entry)?;
            db.write(batch)?;
            Ok(ticket)
        })
        .await?;
        let pos = ticket.pos;
        self.finish(ticket, wake);
        Ok(pos)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            self.streams.release(self.pos, Arc::new([]), false);
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
        let a = streams.allocate().unwrap();
        let b = streams.allocate().unwrap();
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
        let failed = streams.allocate().unwrap();
        let ok = streams.allocate().unwrap();
        drop(failed);
        streams.finish(ok, vec![]);
        assert_eq!(streams.published(), 2);
    }
}
