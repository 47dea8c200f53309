//! `/relations`: the events that relate to an event (thread replies, edits, reactions,
//! references), with what the requester may see; and `/threads`, a room's threads.

use hearth_core::{
    Error, Homeserver,
    rooms::{
        PageDirection,
        relations::{MAX_RECURSION_DEPTH, RelationsQuery},
    },
};
use ruma::{
    EventId, OwnedRoomId, UInt, UserId,
    api::{
        Direction,
        client::{
            relations::{
                get_relating_events, get_relating_events_with_rel_type,
                get_relating_events_with_rel_type_and_event_type,
            },
            threads::get_threads::{self, v1::IncludeThreads},
        },
    },
    events::AnyMessageLikeEvent,
    serde::Raw,
};

use crate::{extract::Ruma, response::ApiResult, room::raw};

/// Events per page when the client does not say, and the most it may ask for.
const DEFAULT_LIMIT: u64 = 50;
const MAX_LIMIT: u64 = 100;

/// A position from a token: ours (`r<pos>`), or a `/sync` (`s<pos>`) or `/messages`
/// (`t<pos>`) token, which the spec lets clients pass here too.
fn position(token: Option<&str>) -> Result<Option<u64>, Error> {
    let Some(token) = token.filter(|t| !t.is_empty()) else { return Ok(None) };
    let digits = token.strip_prefix(['r', 's', 't']).unwrap_or(token);
    digits.parse().map(Some).map_err(|_| Error::invalid_param("Invalid pagination token"))
}

/// What every `/relations` variant returns.
struct Relations {
    chunk: Vec<Raw<AnyMessageLikeEvent>>,
    next_batch: Option<String>,
    recursion_depth: Option<UInt>,
}

struct Params<'a> {
    room_id: &'a OwnedRoomId,
    event_id: &'a EventId,
    rel_type: Option<String>,
    event_type: Option<String>,
    from: Option<&'a str>,
    to: Option<&'a str>,
    dir: Direction,
    limit: Option<UInt>,
    recurse: bool,
}

fn relations(hs: &Homeserver, user: &UserId, p: Params<'_>) -> Result<Relations, Error> {
    let limit = p.limit.map_or(DEFAULT_LIMIT, u64::from).clamp(1, MAX_LIMIT);
    let query = RelationsQuery {
        rel_type: p.rel_type,
        event_type: p.event_type,
        from: position(p.from)?,
        to: position(p.to)?,
        direction: match p.dir {
            Direction::Backward => PageDirection::Backward,
            Direction::Forward => PageDirection::Forward,
        },
        limit: usize::try_from(limit).unwrap_or(50),
        recurse: p.recurse,
    };
    let page = hs.rooms.relations(p.room_id, p.event_id, user, &query)?;
    let mut chunk = Vec::with_capacity(page.events.len());
    for (pdu, record) in &page.events {
        chunk.push(raw(&hs.rooms.client_event(&pdu.event_id, record, user, None)?)?);
    }
    Ok(Relations {
        chunk,
        next_batch: page.next.map(|pos| format!("r{pos}")),
        recursion_depth: p.recurse.then(|| UInt::new_saturating(MAX_RECURSION_DEPTH as u64)),
    })
}

/// The answer of one `/relations` variant, in its own response type.
macro_rules! answer {
    ($endpoint:ident, $found:expr) => {{
        let found = $found;
        let mut response = $endpoint::v1::Response::new(found.chunk);
        response.next_batch = found.next_batch;
        response.recursion_depth = found.recursion_depth;
        Ok(response)
    }};
}

/// The parameters every variant shares, from its request.
macro_rules! params {
    ($b:expr, $rel_type:expr, $event_type:expr) => {
        Params {
            room_id: &$b.room_id,
            event_id: &$b.event_id,
            rel_type: $rel_type,
            event_type: $event_type,
            from: $b.from.as_deref(),
            to: $b.to.as_deref(),
            dir: $b.dir,
            limit: $b.limit,
            recurse: $b.recurse,
        }
    };
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}`
pub async fn get_relating_events(
    hs: Homeserver,
    req: Ruma<get_relating_events::v1::Request>,
) -> ApiResult<get_relating_events::v1::Response> {
    let user = req.session()?.user_id.clone();
    answer!(get_relating_events, relations(&hs, &user, params!(req.body, None, None))?)
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}`
pub async fn get_relating_events_with_rel_type(
    hs: Homeserver,
    req: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> ApiResult<get_relating_events_with_rel_type::v1::Response> {
    let user = req.session()?.user_id.clone();
    let rel_type = Some(req.body.rel_type.to_string());
    answer!(get_relating_events_with_rel_type, relations(&hs, &user, params!(req.body, rel_type, None))?)
}

/// `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}`
pub async fn get_relating_events_with_rel_type_and_event_type(
    hs: Homeserver,
    req: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> ApiResult<get_relating_events_with_rel_type_and_event_type::v1::Response> {
    let user = req.session()?.user_id.clone();
    let (rel_type, event_type) = (Some(req.body.rel_type.to_string()), Some(req.body.event_type.to_string()));
    let params = params!(req.body, rel_type, event_type);
    answer!(get_relating_events_with_rel_type_and_event_type, relations(&hs, &user, params)?)
}

/// `GET /_matrix/client/v1/rooms/{roomId}/threads`: threads by latest activity, each root with
/// its thread summary (`unsigned.m.relations.m.thread`).
pub async fn get_threads(
    hs: Homeserver,
    req: Ruma<get_threads::v1::Request>,
) -> ApiResult<get_threads::v1::Response> {
    let user = req.session()?.user_id.clone();
    let b = req.body;
    let limit = usize::try_from(b.limit.map_or(DEFAULT_LIMIT, u64::from).clamp(1, MAX_LIMIT)).unwrap_or(50);
    let participated = matches!(b.include, IncludeThreads::Participated);
    let page = hs.rooms.threads(&b.room_id, &user, position(b.from.as_deref())?, limit, participated)?;
    let mut chunk = Vec::with_capacity(page.events.len());
    for (pdu, record) in &page.events {
        chunk.push(raw(&hs.rooms.client_event(&pdu.event_id, record, &user, None)?)?);
    }
    let mut response = get_threads::v1::Response::new(chunk);
    response.next_batch = page.next.map(|pos| format!("r{pos}"));
    Ok(response)
}
