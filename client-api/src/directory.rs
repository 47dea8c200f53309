//! The room directory: published rooms and each room's visibility in it.

use hearth_core::{Error, Homeserver};
use ruma::{
    api::client::{
        directory::{get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility},
        room::Visibility,
    },
    directory::{PublicRoomsChunk, RoomNetwork},
    events::StateEventType,
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
    // ruma's GET request lacks the network parameters the POST body has; Synapse reads them.
    let network = match (req.query_param("third_party_instance_id"), req.query_param("include_all_networks"))
    {
        (Some(instance), _) => RoomNetwork::ThirdParty(instance),
        (None, Some(all)) if all == "true" => RoomNetwork::All,
        _ => RoomNetwork::Matrix,
    };
    let b = &req.body.0;
    let page = hs.public_rooms_of(b.server.as_deref(), b.limit, b.since.as_deref(), None, network).await?;
    let (chunk, next_batch, prev_batch, total) = page.into_parts();
    with_join_rules(chunk, next_batch, prev_batch, total)
}

/// `POST /_matrix/client/v3/publicRooms`: this server's directory, or another server's.
pub async fn get_public_rooms_filtered(
    hs: Homeserver,
    req: Ruma<JsonAnswered<get_public_rooms_filtered::v3::Request>>,
) -> ApiResult<Json<Value>> {
    let b = req.body.0;
    let page = hs
        .public_rooms_of(b.server.as_deref(), b.limit, b.since.as_deref(), Some(b.filter), b.room_network)
        .await?;
    let (chunk, next_batch, prev_batch, total) = page.into_parts();
    with_join_rules(chunk, next_batch, prev_batch, total)
}

/// `PUT /_matrix/client/v3/directory/list/appservice/{networkId}/{roomId}`: an application
/// service publishes a room in its network's directory, which clients list by the network's
/// third-party instance ID (`<service>|<network>`) or with `include_all_networks`.
pub async fn set_room_visibility_for_network(
    hs: Homeserver,
    req: Ruma<ruma::api::client::appservice::set_room_visibility::v3::Request>,
) -> ApiResult<ruma::api::client::appservice::set_room_visibility::v3::Response> {
    let session = req.session()?;
    let Some(service) = session.appservice.as_deref() else {
        return Err(
            Error::forbidden("Only an application service publishes rooms in a network's directory").into()
        );
    };
    let b = &req.body;
    if !hs.rooms.exists(&b.room_id)? {
        return Err(Error::not_found("Unknown room").into());
    }
    let instance = format!("{service}|{}", b.network_id);
    hs.rooms.set_published_in_network(&instance, &b.room_id, b.visibility == Visibility::Public).await?;
    Ok(ruma::api::client::appservice::set_room_visibility::v3::Response::new())
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
    let levels = hs.rooms.power_levels(room_id)?;
    if !levels.user_can_send_state(&session.user_id, StateEventType::RoomCanonicalAlias) {
        return Err(Error::forbidden("You do not have the power to publish this room").into());
    }
    hs.rooms.set_published(room_id, req.body.visibility == Visibility::Public).await?;
    Ok(set_room_visibility::v3::Response::new())
}
