//! Presence.

use std::time::Duration;

use hearth_core::{Error, Homeserver, presence::PresenceState};
use ruma::api::client::presence::{get_presence, set_presence};

use crate::{extract::Ruma, response::ApiResult};

/// `PUT /_matrix/client/v3/presence/{userId}/status`
pub async fn set_presence(
    hs: Homeserver,
    req: Ruma<set_presence::v3::Request>,
) -> ApiResult<set_presence::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    if session.user_id != b.user_id {
        return Err(Error::forbidden("Cannot set another user's presence").into());
    }
    if b.status_msg.as_ref().is_some_and(|m| m.chars().count() > 1024) {
        return Err(Error::invalid_param("status_msg is too long (max 1024)").into());
    }
    let state = PresenceState::parse(b.presence.as_str())?;
    hs.set_presence(&session.user_id, state, Some(b.status_msg)).await?;
    Ok(set_presence::v3::Response::new())
}

/// `GET /_matrix/client/v3/presence/{userId}/status`
pub async fn get_presence(
    hs: Homeserver,
    req: Ruma<get_presence::v3::Request>,
) -> ApiResult<get_presence::v3::Response> {
    let session = req.session()?;
    let target = &req.body.user_id;
    if !hs.users_sharing_rooms(&session.user_id)?.contains(target) {
        return Err(Error::forbidden("You are not allowed to see their presence").into());
    }
    let view = hs.load_presence(target).await;
    let mut response = get_presence::v3::Response::new(view.state.as_str().into());
    response.status_msg = view.status_msg;
    response.currently_active = Some(view.currently_active);
    response.last_active_ago = view.last_active_ago_ms.map(Duration::from_millis);
    Ok(response)
}
