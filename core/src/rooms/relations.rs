//! Relations between events (`m.relates_to` with a `rel_type`: threads, edits, reactions,
//! references), indexed when an event takes its place in the timeline and served by
//! `/relations`, with what the viewer may see.

use hearth_storage::{
    Batch,
    records::{PduRecord, RelationRecord},
    schema::Relations,
};
use ruma::{EventId, OwnedEventId, RoomId, UserId};

use super::{PageDirection, Rooms};
use crate::{Error, Result, events::Pdu};

/// How deep `recurse` follows relations of relations (as Synapse).
pub const MAX_RECURSION_DEPTH: usize = 3;
/// The most relations one recursive walk collects before paging.
const MAX_RECURSIVE: usize = 1000;

/// The relation an event's content declares: the related-to event and the relation type
/// (`m.relates_to` with a `rel_type`; a plain reply's `m.in_reply_to` is none).
pub fn content_relation(content: &str) -> Option<(OwnedEventId, String)> {
    #[derive(serde::Deserialize)]
    struct Content {
        #[serde(rename = "m.relates_to")]
        relates_to: Option<Relation>,
    }
    #[derive(serde::Deserialize)]
    struct Relation {
        rel_type: Option<String>,
        event_id: Option<OwnedEventId>,
    }
    let relation = serde_json::from_str::<Content>(content).ok()?.relates_to?;
    Some((relation.event_id?, relation.rel_type.filter(|t| !t.is_empty())?))
}

/// The relation a stored event declares, and the event's type.
fn relation_of(json: &str) -> Option<(OwnedEventId, String, String)> {
    #[derive(serde::Deserialize)]
    struct Event {
        #[serde(rename = "type")]
        kind: String,
        content: Option<Box<serde_json::value::RawValue>>,
    }
    let event: Event = serde_json::from_str(json).ok()?;
    let (parent, rel_type) = content_relation(event.content?.get())?;
    Some((parent, rel_type, event.kind))
}

/// Indexes the relation of an event that takes a timeline position, in its batch.
pub(super) fn index(batch: &mut Batch, event_id: &EventId, record: &PduRecord) -> Result<()> {
    let (Some(pos), Some((parent, rel_type, event_type))) = (record.stream_pos, relation_of(&record.json))
    else {
        return Ok(());
    };
    if parent == event_id {
        return Ok(());
    }
    let relation = RelationRecord { event_id: event_id.to_owned(), rel_type, event_type };
    batch.put::<Relations>(&(parent, pos), &relation)?;
    Ok(())
}

/// Removes a redacted event's relation from the index, in the redaction's batch.
pub(super) fn unindex(batch: &mut Batch, record: &PduRecord) {
    if let (Some(pos), Some((parent, ..))) = (record.stream_pos, relation_of(&record.json)) {
        batch.delete::<Relations>(&(parent, pos));
    }
}

/// A page of relations, in the order asked for, and where the next page starts.
#[derive(Debug)]
pub struct RelationsPage {
    pub events: Vec<(Pdu, PduRecord)>,
    /// The position to continue from, when more may follow.
    pub next: Option<u64>,
}

/// What `/relations` asks for.
#[derive(Debug, Clone)]
pub struct RelationsQuery {
    pub rel_type: Option<String>,
    pub event_type: Option<String>,
    /// Continue after (in `direction`) this position; `None`: from the newest or oldest end.
    pub from: Option<u64>,
    /// Stop at this position.
    pub to: Option<u64>,
    pub direction: PageDirection,
    pub limit: usize,
    pub recurse: bool,
}

impl Rooms {
    /// The events relating to `parent` that `viewer` may see, filtered and paged. The parent
    /// itself must be visible to the viewer, or the answer is "not found".
    pub fn relations(
        &self,
        room_id: &RoomId,
        parent: &EventId,
        viewer: &UserId,
        query: &RelationsQuery,
    ) -> Result<RelationsPage> {
        if self.visible_event(room_id, parent, viewer)?.is_none() {
            return Err(Error::not_found("Event not found"));
        }
        let matches = |r: &RelationRecord| {
            query.rel_type.as_deref().is_none_or(|t| t == r.rel_type)
                && query.event_type.as_deref().is_none_or(|t| t == r.event_type)
        };
        // Candidates in position order, from the bound in the page's direction.
        let mut candidates: Vec<(u64, RelationRecord)> = if query.recurse {
            let mut all = Vec::new();
            let mut level = vec![parent.to_owned()];
            for _ in 0..MAX_RECURSION_DEPTH {
                let mut next = Vec::new();
                for id in &level {
                    for row in self.db().scan_prefix::<Relations, _>(id)?.lenient() {
                        let ((_, pos), Some(relation)) = row? else { continue };
                        next.push(relation.event_id.clone());
                        all.push((pos, relation));
                    }
                }
                if all.len() >= MAX_RECURSIVE || next.is_empty() {
                    break;
                }
                level = next;
            }
            all.retain(|(_, r)| matches(r));
            all.sort_by_key(|(pos, _)| *pos);
            all
        } else {
            let mut all = Vec::new();
            for row in self.db().scan_prefix::<Relations, _>(&parent.to_owned())?.lenient() {
                let ((_, pos), Some(relation)) = row? else { continue };
                if matches(&relation) {
                    all.push((pos, relation));
                }
            }
            all
        };
        if query.direction == PageDirection::Backward {
            candidates.reverse();
        }
        let in_range = |pos: u64| {
            let after_from = match (query.from, query.direction) {
                (None, _) => true,
                (Some(from), PageDirection::Backward) => pos < from,
                (Some(from), PageDirection::Forward) => pos > from,
            };
            let before_to = match (query.to, query.direction) {
                (None, _) => true,
                (Some(to), PageDirection::Backward) => pos >= to,
                (Some(to), PageDirection::Forward) => pos <= to,
            };
            after_from && before_to
        };
        let mut events = Vec::new();
        let mut next = None;
        for (pos, relation) in candidates.into_iter().filter(|(pos, _)| in_range(*pos)) {
            if events.len() == query.limit {
                next = Some(pos);
                break;
            }
            if let Some(found) = self.visible_event(room_id, &relation.event_id, viewer)? {
                events.push(found);
            }
        }
        // The token names the last event returned: the next page starts after it.
        let next = next.and(events.last().and_then(|(_, record): &(Pdu, PduRecord)| record.stream_pos));
        Ok(RelationsPage { events, next })
    }
}
