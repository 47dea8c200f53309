//! The room directory: published rooms and each room's visibility in it.

use hearth_core::{Error, Homeserver};
use ruma::{
    api::client::{
        directory::{get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility},
        room::Visibility,
    },
    directory::PublicRoomsChunk,
};
use serde_json::Value;

use crate::{
    extract::Ruma,
    response::{ApiResult, Json, JsonAnswered},
};

/// The page as JSON, each entry with its `join_rule`: ruma leaves out the default, `public`,
/// but clients (and Synapse, which always sends it) expect it.
fn with_join_rules(
    chunk: Vec<PublicRoomsChunk>,
    next_batch: Option<String>,
    prev_batch: Option<String>,
    total: Option<ruma::UInt>,
) -> ApiResult<Json<Value>> {
    let mut entries = Vec::new();
    for room in chunk {
        let join_rule = room.join_rule.as_str().to_owned();
        let mut entry = serde_json::to_value(room).map_err(Error::internal)?;
        entry["join_rule"] = Value::String(join_rule);
        entries.push(entry);
    }
    let mut body = serde_json::json!({ "chunk": entries });
    if let Some(next) = next_batch {
        body["next_batch"] = Value::String(next);
    }
    if let Some(prev) = prev_batch {
        body["prev_batch"] = Value::String(prev);
    }
    if let Some(total) = total {
        body["total_room_count_estimate"] = Value::from(u64::from(total));
    }
    Ok(Json(body))
}

/// `GET /_matrix/client/v3/publicRooms`: this server's directory, or another server's.
pub async fn get_public_rooms(
    hs: Homeserver,
    req: Ruma<JsonAnswered<get_public_rooms::v3::Request>>,
) -> ApiResult<Json<Value>> {
    let b = &req.body.0;
    let page = hs.public_rooms_of(b.server.as_deref(), b.limit, b.since.as_deref(), None).await?;
    let (chunk, next_batch, prev_batch, total) = page.into_parts();
    with_join_rules(chunk, next_batch, prev_batch, total)
}

/// `POST /_matrix/client/v3/publicRooms`: this server's directory, or another server's.
pub async fn get_public_rooms_filtered(
    hs: Homeserver,
    req: Ruma<JsonAnswered<get_public_rooms_filtered::v3::Request>>,
) -> ApiResult<Json<Value>> {
    let b = req.body.0;
    let page = hs.public_rooms_of(b.server.as_deref(), b.limit, b.since.as_deref(), Some(b.filter)).await?;
    let (chunk, next_batch, prev_batch, total) = page.into_parts();
    with_join_rules(chunk, next_batch, prev_batch, total)
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
