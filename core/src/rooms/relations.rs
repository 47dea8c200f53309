//! Relations between events (`m.relates_to` with a `rel_type`: threads, edits, reactions,
//! references), indexed when an event takes its place in the timeline and served by
//! `/relations`, with what the viewer may see.

use std::ops::Bound;

use hearth_storage::{
    Batch, Db, Direction,
    records::{PduRecord, RelationRecord},
    schema::{Relations, ThreadActivity, ThreadRoots},
};
use ruma::{EventId, OwnedEventId, RoomId, UserId};

use super::{PageDirection, Rooms};
use crate::{Error, Result, events::Pdu};

/// The relation type of thread replies.
const THREAD: &str = "m.thread";

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

/// The event a stored event (as stored JSON) relates to.
fn related_to(json: &str) -> Option<OwnedEventId> {
    #[derive(serde::Deserialize)]
    struct Event {
        content: Option<Box<serde_json::value::RawValue>>,
    }
    let event: Event = serde_json::from_str(json).ok()?;
    content_relation(event.content?.get()).map(|(parent, _)| parent)
}

/// Indexes the relation of an event that takes a timeline position, in its batch; a thread
/// reply also moves its thread to the front of the room's threads. Writers of one room are
/// serialized by its lock, so the thread's previous place read here is still current.
pub(super) fn index(db: &Db, batch: &mut Batch, pdu: &Pdu, record: &PduRecord) -> Result<()> {
    let (Some(pos), Some((parent, rel_type))) = (record.stream_pos, content_relation(pdu.content.get()))
    else {
        return Ok(());
    };
    if parent == pdu.event_id {
        return Ok(());
    }
    if rel_type == THREAD {
        let room = record.room_id.clone();
        if let Some(previous) = db.get::<ThreadRoots>(&(room.clone(), parent.clone()))? {
            batch.delete::<ThreadActivity>(&(room.clone(), previous));
        }
        batch.put::<ThreadRoots>(&(room.clone(), parent.clone()), &pos)?;
        batch.put::<ThreadActivity>(&(room, pos), &parent)?;
    }
    let relation = RelationRecord {
        event_id: pdu.event_id.clone(),
        sender: pdu.sender.clone(),
        rel_type,
        event_type: pdu.kind.to_string(),
    };
    batch.put::<Relations>(&(parent, pos), &relation)?;
    Ok(())
}

/// Removes a redacted event's relation from the index, in the redaction's batch.
pub(super) fn unindex(batch: &mut Batch, record: &PduRecord) {
    if let (Some(pos), Some(parent)) = (record.stream_pos, related_to(&record.json)) {
        batch.delete::<Relations>(&(parent, pos));
    }
}

/// A page of events (relations, or thread roots), in the order asked for, and where the next
/// page starts.
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

/// The event filter fields ruma's `RoomEventFilter` does not carry: only events that other
/// events relate to, by these senders and with these relation types (MSC3440, as Synapse
/// filters `/messages` and `/context`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct RelatedByFilter {
    pub related_by_senders: Option<Vec<ruma::OwnedUserId>>,
    pub related_by_rel_types: Option<Vec<String>>,
}

impl RelatedByFilter {
    /// The fields from a filter's JSON; none when it does not parse (ruma has already refused
    /// a filter that is not one).
    pub fn from_json(json: &str) -> Self {
        serde_json::from_str(json).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.related_by_senders.is_none() && self.related_by_rel_types.is_none()
    }
}

/// The annotation an event's content makes: the annotated event and the key (a reaction).
fn annotation(content: &serde_json::Value) -> Option<(OwnedEventId, &str)> {
    let relation = content.get("m.relates_to")?;
    if relation.get("rel_type")?.as_str()? != "m.annotation" {
        return None;
    }
    let target = relation.get("event_id")?.as_str()?.parse().ok()?;
    Some((target, relation.get("key")?.as_str()?))
}

impl Rooms {
    /// Whether some event relates to `event_id` as `filter` asks (any, when it asks nothing).
    pub fn related_by(&self, event_id: &EventId, filter: &RelatedByFilter) -> Result<bool> {
        if filter.is_empty() {
            return Ok(true);
        }
        Ok(self.relations_of(event_id)?.iter().any(|(_, relation)| {
            filter.related_by_rel_types.as_ref().is_none_or(|types| types.contains(&relation.rel_type))
                && filter.related_by_senders.as_ref().is_none_or(|senders| senders.contains(&relation.sender))
        }))
    }

    /// Whether `sender` already reacted to the same event with the same key (and has not
    /// redacted it): a second one is refused, as Synapse does, so reactions count once.
    pub(super) fn duplicate_annotation(
        &self,
        sender: &UserId,
        new: &crate::events::NewEvent,
    ) -> Result<bool> {
        let Some((target, key)) = annotation(&new.content) else { return Ok(false) };
        for (_, relation) in self.relations_of(&target)? {
            if relation.sender != sender || relation.rel_type != "m.annotation" {
                continue;
            }
            let Some(event) = self.pdu(&relation.event_id)? else { continue };
            if annotation(&event.content_json()).is_some_and(|(_, k)| k == key) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The relations indexed for one event, oldest first, with their positions (rows that do
    /// not decode are skipped).
    fn relations_of(&self, parent: &EventId) -> Result<Vec<(u64, RelationRecord)>> {
        let mut out = Vec::new();
        for row in self.db().scan_prefix::<Relations, _>(&parent.to_owned())?.lenient() {
            if let ((_, pos), Some(relation)) = row? {
                out.push((pos, relation));
            }
        }
        Ok(out)
    }

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
                    let found = self.relations_of(id)?;
                    next.extend(found.iter().map(|(_, r)| r.event_id.clone()));
                    all.extend(found);
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
            let mut all = self.relations_of(parent)?;
            all.retain(|(_, r)| matches(r));
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

impl Rooms {
    /// A room's thread roots, most recently active first, from before `from` (a position of
    /// activity), at most `limit`; only those the viewer took part in when `participated`.
    /// Returns the roots (whose bundled thread summary the client format adds) and the
    /// position to continue from.
    pub fn threads(
        &self,
        room_id: &RoomId,
        viewer: &UserId,
        from: Option<u64>,
        limit: usize,
        participated: bool,
    ) -> Result<RelationsPage> {
        // Refuses those who may not read the room at all, as /messages does.
        self.read_access(room_id, viewer)?;
        let upper = (room_id.to_owned(), from.unwrap_or(u64::MAX));
        let upper = if from.is_some() { Bound::Excluded(&upper) } else { Bound::Included(&upper) };
        let lower = (room_id.to_owned(), 0);
        let mut threads: Vec<(u64, (Pdu, PduRecord))> = Vec::new();
        let mut more = false;
        for row in
            self.db().range::<ThreadActivity>(Bound::Included(&lower), upper, Direction::Backward)?.lenient()
        {
            let ((_, pos), Some(root)) = row? else { continue };
            if threads.len() == limit {
                more = true;
                break;
            }
            let Some(root_event) = self.visible_event(room_id, &root, viewer)? else { continue };
            if participated && root_event.0.sender != viewer && !self.took_part(&root, viewer)? {
                continue;
            }
            threads.push((pos, root_event));
        }
        let next = if more { threads.last().map(|(pos, _)| *pos) } else { None };
        Ok(RelationsPage { events: threads.into_iter().map(|(_, t)| t).collect(), next })
    }

    /// Whether `user` replied in the thread of `root`.
    fn took_part(&self, root: &EventId, user: &UserId) -> Result<bool> {
        Ok(self.relations_of(root)?.iter().any(|(_, r)| r.rel_type == THREAD && r.sender == user))
    }
}

impl Rooms {
    /// The bundled aggregations of an event for `viewer` (`unsigned.m.relations`): the thread
    /// summary (count, the newest reply the viewer may see, whether they took part), the newest
    /// edit by the event's own sender (the content stays as sent, as the spec says since 1.7
    /// and Synapse does), and references. `None` when nothing relates to it.
    pub(super) fn bundled_aggregations(
        &self,
        event_id: &EventId,
        record: &PduRecord,
        object: &ruma::CanonicalJsonObject,
        viewer: &UserId,
    ) -> Result<Option<serde_json::Value>> {
        let relations: Vec<RelationRecord> =
            self.relations_of(event_id)?.into_iter().map(|(_, r)| r).collect();
        if relations.is_empty() {
            return Ok(None);
        }
        let field = |name: &str| object.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let (sender, kind) = (field("sender").unwrap_or_default(), field("type").unwrap_or_default());
        let room_id = &record.room_id;
        let mut out = serde_json::Map::new();

        let replies: Vec<&RelationRecord> = relations.iter().filter(|r| r.rel_type == THREAD).collect();
        if !replies.is_empty() {
            let latest = self.newest_visible(room_id, replies.iter().copied(), viewer)?;
            let participated = sender == viewer.as_str() || replies.iter().any(|r| r.sender == viewer);
            out.insert(
                THREAD.into(),
                serde_json::json!({
                    "latest_event": latest,
                    "count": replies.len(),
                    "current_user_participated": participated,
                }),
            );
        }
        // An edit counts only from the original sender and with the original's type.
        let edits = relations
            .iter()
            .filter(|r| r.rel_type == "m.replace" && r.sender.as_str() == sender && r.event_type == kind);
        if let Some(edit) = self.newest_visible(room_id, edits, viewer)? {
            out.insert("m.replace".into(), edit);
        }
        let references: Vec<serde_json::Value> = relations
            .iter()
            .filter(|r| r.rel_type == "m.reference")
            .map(|r| serde_json::json!({ "event_id": r.event_id }))
            .collect();
        if !references.is_empty() {
            out.insert("m.reference".into(), serde_json::json!({ "chunk": references }));
        }
        Ok((!out.is_empty()).then_some(serde_json::Value::Object(out)))
    }

    /// The newest of some relations (given oldest first) that the viewer may see, as a client
    /// event without aggregations of its own.
    fn newest_visible<'a>(
        &self,
        room_id: &RoomId,
        relations: impl DoubleEndedIterator<Item = &'a RelationRecord>,
        viewer: &UserId,
    ) -> Result<Option<serde_json::Value>> {
        for relation in relations.rev() {
            if let Some((_, record)) = self.visible_event(room_id, &relation.event_id, viewer)? {
                return Ok(Some(self.client_event_with(&relation.event_id, &record, viewer, None, false)?));
            }
        }
        Ok(None)
    }
}
