//! Answering `POST /search`: the index finds candidates, the room rules decide which the
//! searcher may see, and the results come back with their context, the rooms' state and groups
//! as asked.

use std::collections::{BTreeMap, HashMap};

use hearth_storage::{
    records::{PduRecord, StreamEntry},
    schema::{Pdus, StreamLog},
    search::{SearchHit, SearchKey, SearchOrder, SearchQuery},
};
use ruma::{
    DeviceId, OwnedRoomId, OwnedUserId, UInt, UserId,
    api::client::search::search_events::v3::{
        Criteria, EventContextResult, GroupingKey, OrderBy, ResultGroup, ResultGroupMap, ResultRoomEvents,
        SearchKeys, SearchResult, UserProfile,
    },
};

use super::searchable;
use crate::{
    Error, Homeserver, Result,
    events::Pdu,
    json::raw,
    rooms::{Viewer, event_passes, servable, timeline_key},
    users::blocking,
};

pub const SEARCH_DISABLED: &str = "Search is disabled on this homeserver";

/// Results per page unless the filter's `limit` says otherwise, and the most it may ask for.
const DEFAULT_LIMIT: u64 = 10;
const MAX_LIMIT: u64 = 100;
/// Rounds of candidates a page looks through before it answers with what it found (as
/// Synapse: many matches the searcher may not see must not make one request endless).
const MAX_ROUNDS: usize = 5;
/// Most events of context on either side of a result.
const MAX_CONTEXT: u64 = 20;

/// Where the next page starts: after so many of the best matches (by rank), or below a stream
/// position (by recency); optionally within one room (a room group's `next_batch`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PageToken {
    cursor: Cursor,
    room: Option<OwnedRoomId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    Offset(usize),
    Before(u64),
}

impl PageToken {
    fn parse(token: &str) -> Result<Self> {
        let invalid = || Error::invalid_param("Invalid next_batch token");
        let (cursor, room) = match token.split_once('@') {
            Some((cursor, room)) => (cursor, Some(room.parse::<OwnedRoomId>().map_err(|_| invalid())?)),
            None => (token, None),
        };
        let cursor = if let Some(n) = cursor.strip_prefix('o') {
            Cursor::Offset(n.parse().map_err(|_| invalid())?)
        } else if let Some(n) = cursor.strip_prefix('p') {
            Cursor::Before(n.parse().map_err(|_| invalid())?)
        } else {
            return Err(invalid());
        };
        Ok(Self { cursor, room })
    }

    fn render(&self) -> String {
        let cursor = match self.cursor {
            Cursor::Offset(n) => format!("o{n}"),
            Cursor::Before(p) => format!("p{p}"),
        };
        match &self.room {
            Some(room) => format!("{cursor}@{room}"),
            None => cursor,
        }
    }
}

/// One result before it is rendered.
struct Found {
    hit: SearchHit,
    pdu: Pdu,
    record: PduRecord,
}

impl Homeserver {
    /// `search_categories.room_events` of `POST /search` for `user`. `with_context`: whether
    /// the request had an `event_context` (ruma cannot tell an absent one from the defaults).
    pub async fn search_room_events(
        &self,
        user: &UserId,
        device: &DeviceId,
        criteria: Criteria,
        with_context: bool,
        next_batch: Option<String>,
    ) -> Result<ResultRoomEvents> {
        if !self.search.enabled() {
            return Err(Error::bad_request(SEARCH_DISABLED));
        }
        self.search.caught_up(self.streams.read_position().await).await;
        let hs = self.clone();
        let (user, device) = (user.to_owned(), device.to_owned());
        blocking(move || hs.search_now(&user, &device, &criteria, with_context, next_batch.as_deref())).await
    }

    fn search_now(
        &self,
        user: &UserId,
        device: &DeviceId,
        criteria: &Criteria,
        with_context: bool,
        next_batch: Option<&str>,
    ) -> Result<ResultRoomEvents> {
        let Some(index) = self.search.index.as_deref() else {
            return Err(Error::bad_request(SEARCH_DISABLED));
        };
        let order = match &criteria.order_by {
            None | Some(OrderBy::Rank) => SearchOrder::Rank,
            Some(OrderBy::Recent) => SearchOrder::Recent,
            Some(other) => return Err(Error::invalid_param(format!("Unknown order_by: {}", other.as_str()))),
        };
        let token = next_batch.map(PageToken::parse).transpose()?;
        let mut cursor = match (order, token.as_ref().map(|t| t.cursor)) {
            (SearchOrder::Rank, None) => Cursor::Offset(0),
            (SearchOrder::Recent, None) => Cursor::Before(u64::MAX),
            (SearchOrder::Rank, Some(c @ Cursor::Offset(_)))
            | (SearchOrder::Recent, Some(c @ Cursor::Before(_))) => c,
            _ => return Err(Error::invalid_param("next_batch belongs to a search in another order")),
        };
        let keys = match &criteria.keys {
            None => vec![SearchKey::Body, SearchKey::Name, SearchKey::Topic],
            Some(keys) => keys
                .iter()
                .map(|k| match k {
                    SearchKeys::ContentBody => Ok(SearchKey::Body),
                    SearchKeys::ContentName => Ok(SearchKey::Name),
                    SearchKeys::ContentTopic => Ok(SearchKey::Topic),
                    other => Err(Error::invalid_param(format!("Unknown search key: {}", other.as_str()))),
                })
                .collect::<Result<_>>()?,
        };
        let mut group_by = Vec::new();
        for grouping in &criteria.groupings.group_by {
            match &grouping.key {
                Some(key @ (GroupingKey::RoomId | GroupingKey::Sender)) => group_by.push(key.clone()),
                Some(other) => {
                    return Err(Error::invalid_param(format!("Unknown group_by key: {}", other.as_str())));
                }
                None => return Err(Error::invalid_param("group_by needs a key")),
            }
        }
        let filter = &criteria.filter;
        let limit = filter.limit.map_or(DEFAULT_LIMIT, u64::from).clamp(1, MAX_LIMIT);
        let limit = usize::try_from(limit).unwrap_or(10);

        // The rooms the searcher is joined to (as Synapse), narrowed by the filter and the token.
        let rooms: Vec<OwnedRoomId> = self
            .rooms
            .joined_rooms(user)?
            .into_iter()
            .filter(|r| filter.rooms.as_ref().is_none_or(|wanted| wanted.contains(r)))
            .filter(|r| !filter.not_rooms.contains(r))
            .filter(|r| token.as_ref().and_then(|t| t.room.as_ref()).is_none_or(|only| only == r))
            .collect();

        let mut found: Vec<Found> = Vec::new();
        let mut viewers: HashMap<OwnedRoomId, Viewer<'_>> = HashMap::new();
        let mut count = None;
        let mut more = false;
        'rounds: for _ in 0..MAX_ROUNDS {
            let want = limit * 2;
            let query = SearchQuery {
                term: &criteria.search_term,
                rooms: &rooms,
                keys: &keys,
                senders: filter.senders.as_deref(),
                not_senders: &filter.not_senders,
                order,
                before: match cursor {
                    Cursor::Before(p) if p != u64::MAX => Some(p),
                    _ => None,
                },
                offset: match cursor {
                    Cursor::Offset(n) => n,
                    Cursor::Before(_) => 0,
                },
                limit: want,
            };
            let hits = index.search(&query)?;
            count.get_or_insert(hits.count);
            let exhausted = hits.hits.len() < want;
            let last = hits.hits.len().saturating_sub(1);
            for (at, hit) in hits.hits.into_iter().enumerate() {
                cursor = match cursor {
                    Cursor::Offset(n) => Cursor::Offset(n + 1),
                    Cursor::Before(_) => Cursor::Before(hit.pos),
                };
                if let Some(result) = self.visible_hit(hit, user, filter, &mut viewers)? {
                    found.push(result);
                    if found.len() == limit {
                        // A full page: more may follow, unless this was the last match.
                        more = !(exhausted && at == last);
                        break 'rounds;
                    }
                }
            }
            // Out of rounds with matches left unexamined, the next page goes on from here.
            more = !exhausted;
            if exhausted {
                break;
            }
        }
        drop(viewers);

        let next = more.then(|| PageToken { cursor, room: token.as_ref().and_then(|t| t.room.clone()) });
        let mut response = ResultRoomEvents::new();
        response.count = count.map(|c| UInt::try_from(c).unwrap_or(UInt::MAX));
        response.next_batch = next.as_ref().map(PageToken::render);
        let context = &criteria.event_context;
        let context_limits = with_context.then(|| {
            let clamp = |n: UInt| usize::try_from(u64::from(n).min(MAX_CONTEXT)).unwrap_or(5);
            (clamp(context.before_limit), clamp(context.after_limit))
        });
        for item in &found {
            if let Some((_, text)) = searchable(&item.pdu) {
                for word in index.highlights(&criteria.search_term, &text) {
                    if !response.highlights.contains(&word) {
                        response.highlights.push(word);
                    }
                }
            }
            let mut result = SearchResult::new();
            result.rank = (order == SearchOrder::Rank).then_some(f64::from(item.hit.score));
            let event = self.rooms.client_event(&item.pdu.event_id, &item.record, user, Some(device))?;
            result.result = Some(raw(&event)?);
            if let Some((before, after)) = context_limits {
                result.context =
                    self.search_context(item, user, device, before, after, context.include_profile)?;
            }
            response.results.push(result);
        }
        if criteria.include_state == Some(true) {
            for item in &found {
                let room = &item.record.room_id;
                if response.state.contains_key(room) {
                    continue;
                }
                let mut events = Vec::new();
                for pdu in self.rooms.current_state(room)? {
                    if let Some(record) = self.rooms.pdu_record(&pdu.event_id)? {
                        events.push(raw(&self.rooms.client_event(
                            &pdu.event_id,
                            &record,
                            user,
                            Some(device),
                        )?)?);
                    }
                }
                response.state.insert(room.clone(), events);
            }
        }
        for key in group_by {
            response.groups.insert(match key {
                GroupingKey::RoomId => ResultGroupMap::RoomId(groups(
                    &found,
                    |f| f.record.room_id.clone(),
                    |room| {
                        next.as_ref()
                            .map(|n| PageToken { cursor: n.cursor, room: Some(room.clone()) }.render())
                    },
                )),
                _ => ResultGroupMap::Sender(groups(&found, |f| f.pdu.sender.clone(), |_| None)),
            });
        }
        Ok(response)
    }

    /// The event a match names, if it is still there, passes the filter and `user` may see it.
    fn visible_hit<'a>(
        &'a self,
        hit: SearchHit,
        user: &'a UserId,
        filter: &ruma::api::client::filter::RoomEventFilter,
        viewers: &mut HashMap<OwnedRoomId, Viewer<'a>>,
    ) -> Result<Option<Found>> {
        let Some(StreamEntry::RoomEvent { room_id, event_id }) = self.db.get::<StreamLog>(&hit.pos)? else {
            return Ok(None);
        };
        let Some(record) = self.db.get::<Pdus>(&event_id)? else { return Ok(None) };
        if record.redacted_by.is_some() {
            return Ok(None);
        }
        let Some(pdu) = servable(&event_id, &record) else { return Ok(None) };
        if !event_passes(filter, &pdu) {
            return Ok(None);
        }
        let viewer = match viewers.entry(room_id) {
            std::collections::hash_map::Entry::Occupied(v) => v.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let viewer = Viewer::new(&self.rooms, v.key(), user)?;
                v.insert(viewer)
            }
        };
        Ok(viewer.can_see(&pdu, &record)?.then_some(Found { hit, pdu, record }))
    }

    /// The events around a result, as `/context` gives them, with the senders' profiles at
    /// the last of them when asked.
    fn search_context(
        &self,
        item: &Found,
        user: &UserId,
        device: &DeviceId,
        before_limit: usize,
        after_limit: usize,
        include_profile: bool,
    ) -> Result<EventContextResult> {
        let room = &item.record.room_id;
        let mut context = EventContextResult::new();
        let Some(key) = timeline_key(&item.record) else { return Ok(context) };
        let all = |_: &Pdu| -> Result<bool> { Ok(true) };
        let around = self.rooms.around(room, user, key, before_limit, after_limit, &all)?;
        context.start = Some(around.start);
        context.end = Some(around.end);
        let device = Some(device);
        for (_, pdu, record) in &around.before {
            context.events_before.push(raw(&self.rooms.client_event(
                &pdu.event_id,
                record,
                user,
                device,
            )?)?);
        }
        for (_, pdu, record) in &around.after {
            context.events_after.push(raw(&self.rooms.client_event(&pdu.event_id, record, user, device)?)?);
        }
        if include_profile {
            let last_group = around.after.last().map_or(item.record.state_group, |(_, _, r)| r.state_group);
            let senders: std::collections::BTreeSet<OwnedUserId> = around
                .before
                .iter()
                .chain(around.after.iter())
                .map(|(_, pdu, _)| pdu.sender.clone())
                .chain([item.pdu.sender.clone()])
                .collect();
            for sender in senders {
                let Some(member) = self.rooms.state_entry(last_group, "m.room.member", sender.as_str())?
                else {
                    continue;
                };
                let Some(member) = self.rooms.pdu(&member)? else { continue };
                let mut profile = UserProfile::new();
                profile.displayname = member.content_str("displayname");
                profile.avatar_url = member.content_str("avatar_url").map(Into::into);
                context.profile_info.insert(sender, profile);
            }
        }
        Ok(context)
    }
}

/// Results grouped by `key`, each group's `order` being where its first result stands.
fn groups<K: Ord + Clone>(
    found: &[Found],
    key: impl Fn(&Found) -> K,
    next_batch: impl Fn(&K) -> Option<String>,
) -> BTreeMap<K, ResultGroup> {
    let mut groups: BTreeMap<K, ResultGroup> = BTreeMap::new();
    for (at, item) in found.iter().enumerate() {
        let k = key(item);
        let next = next_batch(&k);
        let group = groups.entry(k).or_insert_with(|| {
            let mut group = ResultGroup::new();
            group.order = UInt::try_from(at + 1).ok();
            group.next_batch = next;
            group
        });
        group.results.push(item.pdu.event_id.clone());
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        for token in ["o20", "p12345", "p7@!room:example.org"] {
            assert_eq!(PageToken::parse(token).unwrap().render(), token);
        }
        for bad in ["", "x1", "o", "p-1", "o1@not-a-room", "pp"] {
            assert!(PageToken::parse(bad).is_err(), "{bad}");
        }
    }
}
