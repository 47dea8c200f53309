//! Server-side search of room events (`POST /search`).
//!
//! The full-text index ([`SearchIndex`]) follows the stream: one indexer task reads the stream
//! log past the position the index covers, indexes the searchable text of each new event
//! (message bodies, room names and topics; encrypted events have none), drops what redactions
//! remove, and commits with the position reached. A search waits (briefly) for the index to
//! reach the stream position the request started at, so a message is found as soon as its send
//! is acknowledged. Queries run against the rooms the searcher is joined to, and every match is
//! checked against the same visibility rules as `/messages` before it is returned.

mod query;

use std::{ops::Bound, sync::Arc, time::Duration};

use hearth_storage::{
    Db, Direction,
    records::StreamEntry,
    schema::{Pdus, StreamLog},
    search::{SearchDoc, SearchIndex, SearchKey},
};
use ruma::events::TimelineEventType;
use tokio::sync::{Notify, watch};

pub use self::query::SEARCH_DISABLED;
use crate::{Homeserver, Result, rooms::servable, users::blocking};

/// Most stream positions one indexing round reads; a round commits once.
const ROUND: usize = 2000;
/// How often the indexer looks for new events when no search asks for them sooner.
const POLL: Duration = Duration::from_secs(1);
/// How long a search waits for the index to catch up with the stream before it answers from
/// what is indexed (only while the index is being rebuilt is it that far behind).
const FRESHNESS_WAIT: Duration = Duration::from_secs(3);
/// Pause after a failed round before the next.
const RETRY: Duration = Duration::from_secs(5);

/// The search service: the index, and how searches and the indexer meet.
pub struct Search {
    index: Option<Arc<SearchIndex>>,
    /// Wakes the indexer before its next poll (a search is waiting).
    kick: Notify,
    /// The position the index covers, for searches waiting on it.
    indexed: watch::Sender<u64>,
}

impl Search {
    /// `None`: search is turned off.
    pub fn new(index: Option<Arc<SearchIndex>>) -> Self {
        let indexed = index.as_ref().map_or(0, |i| i.indexed_up_to());
        Self { index, kick: Notify::new(), indexed: watch::Sender::new(indexed) }
    }

    pub fn enabled(&self) -> bool {
        self.index.is_some()
    }

    /// Waits until the index covers `pos`, or for [`FRESHNESS_WAIT`].
    async fn caught_up(&self, pos: u64) {
        if *self.indexed.borrow() >= pos {
            return;
        }
        self.kick.notify_one();
        let mut rx = self.indexed.subscribe();
        let _ = tokio::time::timeout(FRESHNESS_WAIT, rx.wait_for(|at| *at >= pos)).await;
    }
}

impl std::fmt::Debug for Search {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Search").field("enabled", &self.enabled()).finish_non_exhaustive()
    }
}

/// The searchable text of an event, and which key it is under.
fn searchable(pdu: &crate::events::Pdu) -> Option<(SearchKey, String)> {
    let (key, field) = match pdu.kind {
        TimelineEventType::RoomMessage => (SearchKey::Body, "body"),
        TimelineEventType::RoomName => (SearchKey::Name, "name"),
        TimelineEventType::RoomTopic => (SearchKey::Topic, "topic"),
        _ => return None,
    };
    let text = pdu.content_str(field).filter(|t| !t.trim().is_empty())?;
    Some((key, text))
}

/// Indexes the stream log from the position the index covers up to `published`, at most
/// [`ROUND`] positions. Returns whether positions remain.
fn index_round(db: &Db, index: &SearchIndex, published: u64) -> Result<bool> {
    let from = index.indexed_up_to();
    if from >= published {
        return Ok(false);
    }
    let mut docs = Vec::new();
    let mut remove = Vec::new();
    let mut reached = from;
    let mut scanned = 0;
    let rows =
        db.range::<StreamLog>(Bound::Excluded(&from), Bound::Included(&published), Direction::Forward)?;
    for row in rows.lenient() {
        let (pos, entry) = row?;
        reached = pos;
        scanned += 1;
        if let Some(StreamEntry::RoomEvent { room_id, event_id }) = entry
            && let Some(record) = db.get::<Pdus>(&event_id)?
            && record.redacted_by.is_none()
            && let Some(pdu) = servable(&event_id, &record)
        {
            if pdu.kind == TimelineEventType::RoomRedaction {
                let target = pdu.redacts.as_ref().map(|t| db.get::<Pdus>(t)).transpose()?.flatten();
                if let Some(at) = target.and_then(|t| t.stream_pos) {
                    remove.push(at);
                }
            } else if let Some((key, text)) = searchable(&pdu) {
                docs.push(SearchDoc { pos, room_id, sender: pdu.sender.clone(), key, text });
            }
        }
        if scanned >= ROUND {
            break;
        }
    }
    let more = scanned >= ROUND && reached < published;
    let up_to = if more { reached } else { published };
    index.apply(&docs, &remove, up_to)?;
    Ok(more)
}

impl Homeserver {
    /// Keeps the search index in step with the stream until `stop` completes.
    pub async fn run_search_indexer(&self, stop: impl std::future::Future<Output = ()>) {
        let Some(index) = self.search.index.clone() else { return };
        let mut stop = std::pin::pin!(stop);
        if index.indexed_up_to() == 0 && self.streams.published() > 0 {
            tracing::info!("building the search index from the stored events");
        }
        loop {
            let (db, idx, published) = (self.db.clone(), index.clone(), self.streams.published());
            let pause = match blocking(move || index_round(&db, &idx, published)).await {
                Ok(more) => {
                    self.search.indexed.send_replace(index.indexed_up_to());
                    if more {
                        continue;
                    }
                    POLL
                }
                Err(error) => {
                    tracing::warn!(%error, "indexing events for search failed; retrying");
                    RETRY
                }
            };
            tokio::select! {
                () = &mut stop => return,
                () = self.search.kick.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
