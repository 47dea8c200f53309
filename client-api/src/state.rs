//! Room state: read and set state events.

use hearth_core::{Error, Homeserver, events::NewEvent, ratelimit::Action};
use ruma::events::room::member::MembershipState;
use ruma::{
    api::client::state::{get_state_event_for_key, get_state_events, send_state_event},
    events::TimelineEventType,
};

use serde_json::{Value, json};

use crate::{
    extract::Ruma,
    response::{ApiResult, Json, JsonAnswered},
    room::{json_of, raw},
};

/// `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
pub async fn send_state_event(
    hs: Homeserver,
    req: Ruma<JsonAnswered<send_state_event::v3::Request>>,
) -> ApiResult<Json<Value>> {
    let session = req.session()?.clone();
    let delay = crate::delayed::delay_param(&req)?;
    let ts = crate::appservice::ts_param(&req)?;
    let b = req.body.0;
    let content = json_of(&b.body)?;
    let kind = TimelineEventType::from(b.event_type.to_string());
    if kind == TimelineEventType::RoomMember {
        // Membership has its own endpoints, which check what a raw state event would not.
        if b.state_key != session.user_id.as_str()
            && content.get("membership").and_then(|m| m.as_str()).map(MembershipState::from)
                == Some(MembershipState::Join)
        {
            return Err(Error::forbidden("You cannot join on behalf of another user").into());
        }
    }
    if kind == TimelineEventType::RoomCanonicalAlias {
        check_canonical_alias(&hs, &b.room_id, &content)?;
    }
    if let Some(fake) = hs.shadow_ban_answer(&session)? {
        return Ok(Json(json!({ "event_id": fake })));
    }
    hs.rate_limits.check_user(Action::Message, &session).await?;
    if let Some(delay) = delay {
        let (room, user, device) = (&b.room_id, &session.user_id, &session.txn_device());
        let key = Some(b.state_key.clone());
        let delay_id =
            hs.schedule_delayed(user, device, room, kind.to_string(), key, content, delay, None).await?;
        return Ok(Json(json!({ "delay_id": delay_id })));
    }
    // Setting what is already set, by the one who set it, is the same event again (as on
    // Synapse): a client retrying or re-applying settings does not fill the timeline.
    if let Some(current) = hs.rooms.current_state_event(&b.room_id, &kind.to_string(), &b.state_key)?
        && current.sender == session.user_id
        && current.content_json() == content
        && hs.rooms.membership(&b.room_id, &session.user_id)? == Some(MembershipState::Join)
    {
        return Ok(Json(json!({ "event_id": current.event_id })));
    }
    let event_id = hs
        .rooms
        .append(&b.room_id, &session.user_id, NewEvent::state(kind, b.state_key, content).at(ts), None)
        .await?;
    Ok(Json(json!({ "event_id": event_id })))
}

/// A canonical alias must point at this room (for local aliases, which this server can check).
fn check_canonical_alias(
    hs: &Homeserver,
    room_id: &ruma::RoomId,
    content: &serde_json::Value,
) -> Result<(), Error> {
    // Synapse's split, which clients and the suite rely on: a malformed alias is
    // M_INVALID_PARAM, a well-formed one that does not lead here M_BAD_ALIAS.
    let invalid = |what: &str| Error::invalid_param(format!("Invalid alias {what}"));
    let mut aliases: Vec<&serde_json::Value> = Vec::new();
    // No alias (absent, null or empty, as clients clear it) has nothing to check.
    if let Some(alias) = content.get("alias").filter(|a| !a.is_null() && a.as_str() != Some("")) {
        aliases.push(alias);
    }
    if let Some(alt) = content.get("alt_aliases") {
        aliases.extend(alt.as_array().ok_or_else(|| invalid("list: alt_aliases must be an array"))?);
    }
    for alias in aliases {
        let alias = alias.as_str().ok_or_else(|| invalid(&alias.to_string()))?;
        let parsed = ruma::RoomAliasId::parse(alias).map_err(|_| invalid(alias))?;
        if parsed.server_name() == hs.server_name()
            && hs.rooms.resolve_alias(&parsed)?.as_deref() != Some(room_id)
        {
            return Err(Error::new(
                hearth_core::ErrorCode::BadAlias,
                format!("{alias} does not point to this room"),
            ));
        }
    }
    Ok(())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
pub async fn get_state_event_for_key(
    hs: Homeserver,
    req: Ruma<get_state_event_for_key::v3::Request>,
) -> ApiResult<get_state_event_for_key::v3::Response> {
    let session = req.session()?;
    let b = &req.body;
    let horizon = hs.rooms.read_access(&b.room_id, &session.user_id)?;
    let kind = b.event_type.to_string();
    let found = hs.rooms.state_at_position(&b.room_id, horizon)?.into_iter().find(|(_, _, pdu)| {
        pdu.kind.to_string() == kind && pdu.state_key.as_deref() == Some(b.state_key.as_str())
    });
    let (event_id, record, pdu) = found.ok_or_else(|| Error::not_found("Event not found"))?;
    let body = if matches!(b.format, get_state_event_for_key::v3::StateEventFormat::Event) {
        hs.rooms.client_event(&event_id, &record, &session.user_id, session.device_id.as_deref())?
    } else {
        pdu.content_json()
    };
    let raw_body = serde_json::value::to_raw_value(&body).map_err(Error::internal)?;
    Ok(get_state_event_for_key::v3::Response::new(raw_body))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state`
pub async fn get_state_events(
    hs: Homeserver,
    req: Ruma<get_state_events::v3::Request>,
) -> ApiResult<get_state_events::v3::Response> {
    let session = req.session()?;
    let room_id = &req.body.room_id;
    let horizon = hs.rooms.read_access(room_id, &session.user_id)?;
    let mut state = Vec::new();
    for (event_id, record, _) in hs.rooms.state_at_position(room_id, horizon)? {
        let event =
            hs.rooms.client_event(&event_id, &record, &session.user_id, session.device_id.as_deref())?;
        state.push(raw(&event)?);
    }
    Ok(get_state_events::v3::Response::new(state))
}
