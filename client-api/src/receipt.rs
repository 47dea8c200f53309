//! Typing notifications, read receipts, read markers.

use ruma::events::room::member::MembershipState;
use std::time::Duration;

use hearth_core::{Error, Homeserver};
use ruma::api::client::{
    read_marker::set_read_marker,
    receipt::create_receipt::{self, v3::ReceiptType},
    typing::create_typing_event::{self, v3::Typing},
};
use serde_json::json;

use crate::{extract::Ruma, response::ApiResult};

/// `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
pub async fn create_typing_event(
    hs: Homeserver,
    req: Ruma<create_typing_event::v3::Request>,
) -> ApiResult<create_typing_event::v3::Response> {
    let session = req.session()?;
    if session.user_id != req.body.user_id {
        return Err(Error::forbidden("Cannot set another user's typing state").into());
    }
    let timeout = match req.body.state {
        Typing::Yes(info) => Some(info.timeout.max(Duration::from_secs(1))),
        _ => None,
    };
    hs.rooms.set_typing(&req.body.room_id, &session.user_id, timeout).await?;
    Ok(create_typing_event::v3::Response::new())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
pub async fn create_receipt(
    hs: Homeserver,
    req: Ruma<create_receipt::v3::Request>,
) -> ApiResult<create_receipt::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    let thread = b.thread.as_str().unwrap_or_default().to_owned();
    match b.receipt_type {
        ReceiptType::FullyRead => {
            let content = json!({"event_id": b.event_id});
            hs.account_data.set_room_managed(&session.user_id, &b.room_id, "m.fully_read", content).await?;
        }
        ReceiptType::Read | ReceiptType::ReadPrivate => {
            let kind = b.receipt_type.to_string();
            hs.rooms.set_receipt(&b.room_id, &session.user_id, &kind, &b.event_id, &thread).await?;
        }
        other => return Err(Error::invalid_param(format!("Unknown receipt type {other}")).into()),
    }
    Ok(create_receipt::v3::Response::new())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
pub async fn set_read_marker(
    hs: Homeserver,
    req: Ruma<set_read_marker::v3::Request>,
) -> ApiResult<set_read_marker::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    if let Some(event_id) = &b.fully_read {
        if hs.rooms.membership(&b.room_id, &session.user_id)? != Some(MembershipState::Join) {
            return Err(Error::forbidden("You are not joined to this room").into());
        }
        let content = json!({"event_id": event_id});
        hs.account_data.set_room_managed(&session.user_id, &b.room_id, "m.fully_read", content).await?;
    }
    if let Some(event_id) = &b.read_receipt {
        hs.rooms.set_receipt(&b.room_id, &session.user_id, "m.read", event_id, "").await?;
    }
    if let Some(event_id) = &b.private_read_receipt {
        hs.rooms.set_receipt(&b.room_id, &session.user_id, "m.read.private", event_id, "").await?;
    }
    Ok(set_read_marker::v3::Response::new())
}
