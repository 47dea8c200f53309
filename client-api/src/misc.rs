//! Start-up lookups: TURN servers, the user directory; and the legacy
//! peeking calls (`/rooms/{roomId}/initialSync`, `/events`).

use std::time::Duration;

use hearth_core::{Error, Homeserver, rooms::PageDirection};
use ruma::api::{
    IncomingRequest, Metadata,
    client::{
        peeking::{get_current_state, listen_to_new_events},
        user_directory::search_users,
        voip::get_turn_server_info,
    },
};

use crate::{extract::Ruma, response::ApiResult, room::raw};
use hearth_core::rooms::view::{parse_position_token, position_token as page_token, sync_token};

/// `GET /_matrix/client/v3/voip/turnServer`
pub async fn get_turn_server_info(
    hs: Homeserver,
    req: Ruma<get_turn_server_info::v3::Request>,
) -> ApiResult<get_turn_server_info::v3::Response> {
    let session = req.session()?;
    Ok(match hs.turn_credentials(&session.user_id) {
        Some(c) => get_turn_server_info::v3::Response::new(
            c.username,
            c.password,
            c.uris,
            Duration::from_secs(c.ttl_secs),
        ),
        // No TURN server configured: no URIs, and clients fall back to direct connections.
        None => {
            get_turn_server_info::v3::Response::new(String::new(), String::new(), Vec::new(), Duration::ZERO)
        }
    })
}

/// `POST /_matrix/client/v3/user_directory/search`
pub async fn search_users(
    hs: Homeserver,
    req: Ruma<search_users::v3::Request>,
) -> ApiResult<search_users::v3::Response> {
    let session = req.session()?;
    let limit = usize::try_from(u64::from(req.body.limit)).unwrap_or(10).clamp(1, 100);
    let (matches, limited) = hs.search_users(&session.user_id, &req.body.search_term, limit)?;
    let results = matches
        .into_iter()
        .map(|m| {
            let mut user = search_users::v3::User::new(m.user_id);
            user.display_name = m.displayname;
            user.avatar_url = m.avatar_url.map(Into::into);
            user
        })
        .collect();
    Ok(search_users::v3::Response::new(results, limited))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/initialSync`
pub async fn get_current_state(
    hs: Homeserver,
    req: Ruma<get_current_state::v3::Request>,
) -> ApiResult<get_current_state::v3::Response> {
    let session = req.session()?.clone();
    let room_id = req.body.room_id;
    let horizon = hs.rooms.read_access(&room_id, &session.user_id)?;
    let user = &session.user_id;
    let device = session.device_id.as_deref();
    let mut response = get_current_state::v3::Response::new(room_id.clone());
    response.membership = hs.rooms.membership(&room_id, user)?.map(|m| m.as_str().into());
    let page =
        hs.rooms.page(&room_id, user, Some(horizon), None, PageDirection::Backward, 10, &|_| Ok(true))?;
    let end = page.events.first().map_or(0, |(pos, ..)| *pos);
    let start = page.events.last().map_or(0, |(pos, ..)| pos.saturating_sub(1));
    let mut chunk = Vec::new();
    for (_, pdu, record) in page.events.iter().rev() {
        chunk.push(raw(&hs.rooms.client_event(&pdu.event_id, record, user, device)?)?);
    }
    let mut messages = get_current_state::v3::PaginationChunk::new(chunk, page_token(end));
    messages.start = Some(page_token(start));
    response.messages = Some(messages);
    for (event_id, record, _) in hs.rooms.state_at_position(&room_id, horizon)? {
        response.state.push(raw(&hs.rooms.client_event(&event_id, &record, user, device)?)?);
    }
    response.visibility = Some(if hs.rooms.is_published(&room_id)? {
        ruma::api::client::room::Visibility::Public
    } else {
        ruma::api::client::room::Visibility::Private
    });
    Ok(response)
}

/// `GET /_matrix/client/v3/events`: ruma's endpoint requires `room_id`, but the older global
/// form without one (every joined room) is what Element and older clients call, so the query is
/// read here and checked in the handler.
pub struct ListenToNewEvents {
    from: Option<String>,
    room_id: Option<String>,
    timeout: Option<String>,
}

type RumaEvents = listen_to_new_events::v3::Request;

impl Metadata for ListenToNewEvents {
    const METHOD: axum::http::Method = <RumaEvents as Metadata>::METHOD;
    const RATE_LIMITED: bool = <RumaEvents as Metadata>::RATE_LIMITED;
    type Authentication = <RumaEvents as Metadata>::Authentication;
    type PathBuilder = <RumaEvents as Metadata>::PathBuilder;
    const PATH_BUILDER: Self::PathBuilder = <RumaEvents as Metadata>::PATH_BUILDER;
}

impl IncomingRequest for ListenToNewEvents {
    type EndpointError = ruma::api::error::Error;
    type OutgoingResponse = listen_to_new_events::v3::Response;

    fn try_from_http_request_inner(
        request: axum::http::Request<&[u8]>,
        _path_args: &[&str],
    ) -> Result<Self, ruma::api::error::DeserializationError> {
        let mut this = Self { from: None, room_id: None, timeout: None };
        let query = request.uri().query().unwrap_or_default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match name.as_ref() {
                "from" => &mut this.from,
                "room_id" => &mut this.room_id,
                "timeout" => &mut this.timeout,
                _ => continue,
            };
            *slot = Some(value.into_owned());
        }
        Ok(this)
    }
}

/// Events per answer at most.
const EVENTS_LIMIT: usize = 100;

/// Long-polls one readable room (`room_id`), or every joined room, for new events.
pub async fn listen_to_new_events(
    hs: Homeserver,
    req: Ruma<ListenToNewEvents>,
) -> ApiResult<listen_to_new_events::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    let room = match &b.room_id {
        Some(room) => {
            let room = ruma::OwnedRoomId::try_from(room.as_str())
                .map_err(|e| Error::invalid_param(format!("Invalid room_id: {e}")))?;
            hs.rooms.read_access(&room, &session.user_id)?;
            Some(room)
        }
        None => None,
    };
    let parse =
        |t: &str| parse_position_token(t).ok_or_else(|| Error::invalid_param(format!("Unknown token {t}")));
    let from = match b.from.as_deref().map(parse).transpose()? {
        Some(from) => from,
        None => hs.streams.read_position().await,
    };
    let timeout = match b.timeout.as_deref() {
        Some(ms) => Duration::from_millis(
            ms.parse().map_err(|_| Error::invalid_param("timeout must be a number of milliseconds"))?,
        ),
        None => Duration::ZERO,
    };
    let timeout = timeout.min(Duration::from_secs(300));
    let mut rx = hs.notifier.subscribe(&session.user_id);
    let deadline = tokio::time::Instant::now() + timeout;
    // The first read catches up with the store (a shared one); wake-ups carry the rest.
    let mut now = hs.streams.read_position().await;
    loop {
        let rooms = match &room {
            Some(room) => vec![room.clone()],
            None => hs.rooms.joined_rooms(&session.user_id)?,
        };
        let mut events = Vec::new();
        let mut end = now;
        for room in &rooms {
            let page = hs.rooms.page(
                room,
                &session.user_id,
                Some(from),
                Some(now),
                PageDirection::Forward,
                EVENTS_LIMIT,
                &|_| Ok(true),
            )?;
            // A room with more than fits stops the answer at its last event, so the next one
            // (from `end`) misses nothing of it.
            if page.events.len() >= EVENTS_LIMIT
                && let Some((pos, ..)) = page.events.last()
            {
                end = end.min(*pos);
            }
            events.extend(page.events);
        }
        events.retain(|(pos, ..)| *pos <= end);
        events.sort_by_key(|(pos, ..)| *pos);
        if events.len() > EVENTS_LIMIT {
            events.truncate(EVENTS_LIMIT);
        }
        if !events.is_empty() || tokio::time::Instant::now() >= deadline {
            let device = session.device_id.as_deref();
            let mut response = listen_to_new_events::v3::Response::new();
            for (_, pdu, record) in &events {
                response.chunk.push(raw(&hs.rooms.client_event(
                    &pdu.event_id,
                    record,
                    &session.user_id,
                    device,
                )?)?);
            }
            let end = events.last().map_or(now, |(pos, ..)| *pos);
            response.start = Some(sync_token(from));
            response.end = Some(sync_token(end));
            return Ok(response);
        }
        let woke =
            tokio::time::timeout_at(deadline, rx.wait_for(|p| *p > now)).await.is_ok_and(|r| r.is_ok());
        if !woke && tokio::time::Instant::now() < deadline {
            return Err(Error::internal("notifier closed").into());
        }
        now = hs.streams.published();
    }
}
