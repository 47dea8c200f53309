//! The room directory: published rooms and each room's visibility in it.

use hearth_core::{Error, Homeserver};
use ruma::{
    api::client::directory::{
        get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
    },
    api::client::room::Visibility,
};

use crate::{extract::Ruma, response::ApiResult};

/// `GET /_matrix/client/v3/publicRooms`: this server's directory, or another server's.
pub async fn get_public_rooms(
    hs: Homeserver,
    req: Ruma<get_public_rooms::v3::Request>,
) -> ApiResult<get_public_rooms::v3::Response> {
    let b = &req.body;
    let page = hs.public_rooms_of(b.server.as_deref(), b.limit, b.since.as_deref(), None).await?;
    let (chunk, next_batch, prev_batch, total) = page.into_parts();
    let mut response = get_public_rooms::v3::Response::new(chunk);
    (response.next_batch, response.prev_batch, response.total_room_count_estimate) =
        (next_batch, prev_batch, total);
    Ok(response)
}

/// `POST /_matrix/client/v3/publicRooms`: this server's directory, or another server's.
pub async fn get_public_rooms_filtered(
    hs: Homeserver,
    req: Ruma<get_public_rooms_filtered::v3::Request>,
) -> ApiResult<get_public_rooms_filtered::v3::Response> {
    let b = req.body;
    let page = hs.public_rooms_of(b.server.as_deref(), b.limit, b.since.as_deref(), Some(b.filter)).await?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    (response.chunk, response.next_batch, response.prev_batch, response.total_room_count_estimate) =
        page.into_parts();
    Ok(response)
}

/// `GET /_matrix/client/v3/directory/list/room/{roomId}`
pub async fn get_room_visibility(
    hs: Homeserver,
    req: Ruma<get_room_visibility::v3::Request>,
) -> ApiResult<get_room_visibility::v3::Response> {
    if !hs.rooms.exists(&req.body.room_id)? {
        return Err(Error::not_found("Unknown room").into());
    }
    let visibility =
        if hs.rooms.is_published(&req.body.room_id)? { Visibility::Public } else { Visibility::Private };
    Ok(get_room_visibility::v3::Response::new(visibility))
}

/// `PUT /_matrix/client/v3/directory/list/room/{roomId}`
pub async fn set_room_visibility(
    hs: Homeserver,
    req: Ruma<set_room_visibility::v3::Request>,
) -> ApiResult<set_room_visibility::v3::Response> {
    let session = req.session()?;
    let room_id = &req.body.room_id;
    if !hs.rooms.exists(room_id)? {
        return Err(Error::not_found("Unknown room").into());
    }
    // Like Synapse: publishing needs the power to change the room's canonical alias.
    let needed = hs.rooms.required_level(room_id, "state_default", 50)?;
    if hs.rooms.power_level(room_id, &session.user_id)? < needed {
        return Err(Error::forbidden("You do not have the power to publish this room").into());
    }
    hs.rooms.set_published(room_id, req.body.visibility == Visibility::Public).await?;
    Ok(set_room_visibility::v3::Response::new())
}
