//! Sending and reading room events: send, redact, and `/messages` pagination.

use hearth_core::{
    Error, Homeserver,
    events::{NewEvent, Pdu},
    rooms::{
        PageDirection, TimelineKey, Window, append::TxnEndpoint, event_passes, history_token,
        parse_history_token, relations::RelatedByFilter,
    },
};
use ruma::{
    api::{
        Direction,
        client::{
            filter::RoomEventFilter, message::get_message_events, message::send_message_event,
            redact::redact_event,
        },
    },
    events::TimelineEventType,
};

use serde_json::{Value, json};

use crate::{
    extract::Ruma,
    response::{ApiResult, Json, JsonAnswered},
    room::{json_of, raw},
};

/// `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`; with MSC4140's delay
/// parameter, the event is scheduled instead and the answer is its delay ID.
pub async fn send_message_event(
    hs: Homeserver,
    req: Ruma<JsonAnswered<send_message_event::v3::Request>>,
) -> ApiResult<Json<Value>> {
    let session = req.session()?.clone();
    let delay = crate::delayed::delay_param(&req)?;
    let ts = crate::appservice::ts_param(&req)?;
    let b = req.body.0;
    let kind = TimelineEventType::from(b.event_type.to_string());
    if kind.to_string().is_empty() {
        return Err(Error::invalid_param("Event type must not be empty").into());
    }
    let content = json_of(&b.body)?;
    if let Some(fake) = hs.shadow_ban_answer(&session)? {
        return Ok(Json(json!({ "event_id": fake })));
    }
    let txn = (session.txn_device(), b.txn_id.to_string());
    // A delayed event's transaction is kept elsewhere; scheduling one counts every time.
    let sent_txn = delay.is_none().then_some(&txn);
    hs.check_send_limit(&session, &b.room_id, TxnEndpoint::Send(&kind), sent_txn).await?;
    if let Some(delay) = delay {
        let (room, user, device) = (&b.room_id, &session.user_id, &session.txn_device());
        let txn = Some(b.txn_id.to_string());
        let delay_id =
            hs.schedule_delayed(user, device, room, kind.to_string(), None, content, delay, txn).await?;
        return Ok(Json(json!({ "delay_id": delay_id })));
    }
    let event_id = hs
        .rooms
        .append(&b.room_id, &session.user_id, NewEvent::message(kind, content).at(ts), Some(txn))
        .await?;
    Ok(Json(json!({ "event_id": event_id })))
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
pub async fn redact_event(
    hs: Homeserver,
    req: Ruma<redact_event::v3::Request>,
) -> ApiResult<redact_event::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    if let Some(fake) = hs.shadow_ban_answer(&session)? {
        return Ok(redact_event::v3::Response::new(fake));
    }
    let txn = (session.txn_device(), b.txn_id.to_string());
    hs.check_send_limit(&session, &b.room_id, TxnEndpoint::Redact(&b.event_id), Some(&txn)).await?;
    let event_id = hs.rooms.redact(&b.room_id, &session.user_id, &b.event_id, b.reason, Some(txn)).await?;
    Ok(redact_event::v3::Response::new(event_id))
}

/// Whether an event passes a `/messages` or `/context` filter: ruma's fields, and the relation
/// fields read from the filter's JSON (`related`).
fn filter_keeps(
    hs: &Homeserver,
    filter: &RoomEventFilter,
    related: &RelatedByFilter,
    pdu: &Pdu,
) -> Result<bool, Error> {
    Ok(event_passes(filter, pdu) && hs.rooms.related_by(&pdu.event_id, related)?)
}

/// The relation fields of the request's `filter` query parameter.
fn related_by<T>(req: &Ruma<T>) -> RelatedByFilter {
    req.query_param("filter").map(|json| RelatedByFilter::from_json(&json)).unwrap_or_default()
}

/// Most events one page returns.
const MAX_LIMIT: u64 = 1000;

/// `GET /_matrix/client/v3/rooms/{roomId}/messages`
pub async fn get_message_events(
    hs: Homeserver,
    req: Ruma<get_message_events::v3::Request>,
) -> ApiResult<get_message_events::v3::Response> {
    let session = req.session()?.clone();
    let related = related_by(&req);
    let b = req.body;
    let parse = |t: &Option<String>| -> Result<Option<TimelineKey>, Error> {
        t.as_deref()
            .map(|t| {
                parse_history_token(t)
                    .ok_or_else(|| Error::invalid_param(format!("Unknown pagination token {t}")))
            })
            .transpose()
    };
    let from = parse(&b.from)?;
    let to = parse(&b.to)?;
    let direction = match b.dir {
        Direction::Backward => PageDirection::Backward,
        Direction::Forward => PageDirection::Forward,
    };
    let limit = usize::try_from(u64::from(b.limit).clamp(1, MAX_LIMIT)).unwrap_or(10);
    let filter = b.filter;
    let keep = |pdu: &Pdu| filter_keeps(&hs, &filter, &related, pdu);
    let page = hs.messages_page(&b.room_id, &session.user_id, from, to, direction, limit, &keep).await?;

    let start = from.unwrap_or_else(|| match direction {
        PageDirection::Backward => page.events.first().map_or(0, |(key, ..)| *key),
        PageDirection::Forward => page.events.first().map_or(0, |(key, ..)| key.saturating_sub(1)),
    });
    let mut response = get_message_events::v3::Response::new();
    response.start = history_token(start);
    response.end = page.next.map(history_token);
    let user = &session.user_id;
    let device = session.device_id.as_deref();
    let mut window = Window::for_filter(&filter);
    for (_, pdu, record) in &page.events {
        window.add(&pdu.sender);
        response.chunk.push(raw(&hs.rooms.client_event(&pdu.event_id, record, user, device)?)?);
    }
    // The members at the chunk's first event, as Synapse reads them.
    if let Some((_, _, first)) = page.events.first() {
        let members = hs.rooms.window_members(first.state_group, &window)?;
        for (event_id, record, _) in hs.rooms.servable_state(members)? {
            response.state.push(raw(&hs.rooms.client_event(&event_id, &record, user, device)?)?);
        }
    }
    Ok(response)
}

/// `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`
pub async fn get_context(
    hs: Homeserver,
    req: ruma_ctx::Req,
) -> ApiResult<ruma::api::client::context::get_context::v3::Response> {
    use ruma::api::client::context::get_context::v3::Response;
    let session = req.session()?.clone();
    let related = related_by(&req);
    let b = req.body;
    let (pdu, record) = hs
        .rooms
        .visible_event(&b.room_id, &b.event_id, &session.user_id)?
        .ok_or_else(|| Error::not_found("Event not found"))?;
    let pos = hearth_core::rooms::timeline_key(&record).ok_or_else(|| Error::not_found("Event not found"))?;
    let limit = usize::try_from(u64::from(b.limit).min(MAX_LIMIT)).unwrap_or(10);
    // As Synapse splits it: the smaller half before, the rest after.
    let (before_limit, after_limit) = (limit / 2, limit - limit / 2);
    let filter = b.filter;
    let keep = |pdu: &Pdu| filter_keeps(&hs, &filter, &related, pdu);
    let user = &session.user_id;
    let around = hs.rooms.around(&b.room_id, user, pos, before_limit, after_limit, &keep)?;

    let device = session.device_id.as_deref();
    let mut response = Response::new();
    response.event = Some(raw(&hs.rooms.client_event(&b.event_id, &record, user, device)?)?);
    response.start = Some(around.start);
    response.end = Some(around.end);
    for (_, pdu, record) in &around.before {
        response.events_before.push(raw(&hs.rooms.client_event(&pdu.event_id, record, user, device)?)?);
    }
    for (_, pdu, record) in &around.after {
        response.events_after.push(raw(&hs.rooms.client_event(&pdu.event_id, record, user, device)?)?);
    }
    // The state at the last event returned, as the spec says, with the members of every
    // sender shown when they load lazily.
    let mut window = Window::for_filter(&filter);
    window.add(&pdu.sender);
    let mut last_group = record.state_group;
    for (_, pdu, _) in around.before.iter().chain(around.after.iter()) {
        window.add(&pdu.sender);
    }
    if let Some((_, _, last)) = around.after.last() {
        last_group = last.state_group;
    }
    let state = hs.rooms.window_state(last_group, &window, None)?;
    for (event_id, record, _) in hs.rooms.servable_state(state)? {
        response.state.push(raw(&hs.rooms.client_event(&event_id, &record, user, device)?)?);
    }
    Ok(response)
}

mod ruma_ctx {
    pub type Req = crate::extract::Ruma<ruma::api::client::context::get_context::v3::Request>;
}

/// `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`
pub async fn get_event_by_timestamp(
    hs: Homeserver,
    req: Ruma<ruma::api::client::room::get_event_by_timestamp::v1::Request>,
) -> ApiResult<ruma::api::client::room::get_event_by_timestamp::v1::Response> {
    use ruma::api::client::room::get_event_by_timestamp::v1::Response;
    let session = req.session()?;
    let b = &req.body;
    let ts = u64::from(b.ts.get());
    let forward = matches!(b.dir, Direction::Forward);
    let (event_id, found_ts) = hs
        .rooms
        .event_by_timestamp(&b.room_id, &session.user_id, ts, forward)?
        .ok_or_else(|| Error::not_found("Unable to find event in that direction"))?;
    let ts = ruma::MilliSecondsSinceUnixEpoch(ruma::UInt::new_saturating(found_ts));
    Ok(Response::new(event_id, ts))
}
