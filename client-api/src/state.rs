//! Room state: read and set state events.

use hearth_core::{Error, Homeserver, events::NewEvent};
use ruma::{
    api::client::state::{get_state_event_for_key, get_state_events, send_state_event},
    events::TimelineEventType,
};

use crate::{
    extract::Ruma,
    response::ApiResult,
    room::{json_of, raw},
};

/// `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
pub async fn send_state_event(
    hs: Homeserver,
    req: Ruma<send_state_event::v3::Request>,
) -> ApiResult<send_state_event::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    let content = json_of(&b.body)?;
    let kind = TimelineEventType::from(b.event_type.to_string());
    if kind == TimelineEventType::RoomMember {
        // Membership has its own endpoints, which check what a raw state event would not.
        if b.state_key != session.user_id.as_str()
            && content.get("membership").and_then(|m| m.as_str()) == Some("join")
        {
            return Err(Error::forbidden("You cannot join on behalf of another user").into());
        }
    }
    if kind == TimelineEventType::RoomCanonicalAlias {
        check_canonical_alias(&hs, &b.room_id, &content)?;
    }
    // Like Synapse, the same state again from the same member is not a new event.
    if kind != TimelineEventType::RoomMember
        && hs.rooms.membership(&b.room_id, &session.user_id)?.as_deref() == Some("join")
        && let Some(existing) = hs.rooms.current_state_event(&b.room_id, &kind.to_string(), &b.state_key)?
        && existing.sender == session.user_id
        && serde_json::from_str::<serde_json::Value>(existing.content.get()).ok().as_ref() == Some(&content)
    {
        return Ok(send_state_event::v3::Response::new(existing.event_id));
    }
    let event_id = hs
        .rooms
        .append(&b.room_id, &session.user_id, NewEvent::state(kind, b.state_key, content), None)
        .await?;
    Ok(send_state_event::v3::Response::new(event_id))
}

/// A canonical alias must point at this room (for local aliases, which this server can check).
fn check_canonical_alias(
    hs: &Homeserver,
    room_id: &ruma::RoomId,
    content: &serde_json::Value,
) -> Result<(), Error> {
    let mut aliases: Vec<&str> = Vec::new();
    if let Some(alias) = content.get("alias").and_then(|a| a.as_str()) {
        aliases.push(alias);
    }
    if let Some(alt) = content.get("alt_aliases").and_then(|a| a.as_array()) {
        aliases.extend(alt.iter().filter_map(|a| a.as_str()));
    }
    for alias in aliases {
        let parsed = ruma::RoomAliasId::parse(alias)
            .map_err(|_| Error::new(hearth_core::ErrorCode::BadAlias, format!("Invalid alias {alias}")))?;
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
        hs.rooms.client_event(&event_id, &record, &session.user_id, Some(&session.device_id))?
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
        let event = hs.rooms.client_event(&event_id, &record, &session.user_id, Some(&session.device_id))?;
        state.push(raw(&event)?);
    }
    Ok(get_state_events::v3::Response::new(state))
}
