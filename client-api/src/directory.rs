//! The room directory: published rooms and each room's visibility in it.

use hearth_core::{Error, Homeserver, rooms::PublicRoom};
use ruma::{
    UInt,
    api::client::directory::{
        get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility,
    },
    api::client::room::Visibility,
    directory::PublicRoomsChunk,
    room::{JoinRuleKind, RoomType},
};

use crate::{extract::Ruma, response::ApiResult};

fn chunk(room: PublicRoom) -> PublicRoomsChunk {
    let mut chunk: PublicRoomsChunk = ruma::directory::PublicRoomsChunkInit {
        num_joined_members: UInt::new_saturating(room.joined_members),
        room_id: room.room_id,
        world_readable: room.world_readable,
        guest_can_join: room.guest_can_join,
    }
    .into();
    chunk.name = room.name;
    chunk.topic = room.topic;
    chunk.canonical_alias = room.canonical_alias.and_then(|a| a.try_into().ok());
    chunk.avatar_url = room.avatar_url.map(Into::into);
    chunk.join_rule = room.join_rule.map_or(JoinRuleKind::Public, |r| JoinRuleKind::from(r.as_str()));
    chunk.room_type = room.room_type.map(|t| RoomType::from(t.as_str()));
    chunk
}

/// One page of the directory: the rooms, the next and previous tokens, and the total.
type DirectoryPage = (Vec<PublicRoomsChunk>, Option<String>, Option<String>, UInt);

/// Pages of the directory: `since` is an offset into the ordered list.
fn page(
    hs: &Homeserver,
    search: Option<&str>,
    limit: Option<UInt>,
    since: Option<&str>,
) -> Result<DirectoryPage, Error> {
    let rooms = hs.rooms.public_rooms(search)?;
    let total = UInt::new_saturating(rooms.len() as u64);
    let offset = match since {
        Some(s) => s
            .strip_prefix('o')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Error::invalid_param("Unknown pagination token"))?,
        None => 0,
    };
    let limit = limit.map_or(usize::MAX, |l| usize::try_from(u64::from(l)).unwrap_or(usize::MAX)).max(1);
    let end = offset.saturating_add(limit).min(rooms.len());
    let next = (end < rooms.len()).then(|| format!("o{end}"));
    let prev = (offset > 0).then(|| format!("o{}", offset.saturating_sub(limit)));
    let chunks = rooms.into_iter().skip(offset).take(end.saturating_sub(offset)).map(chunk).collect();
    Ok((chunks, next, prev, total))
}

fn check_server(hs: &Homeserver, server: Option<&ruma::ServerName>) -> Result<(), Error> {
    if server.is_some_and(|s| s != hs.server_name()) {
        // Other servers' directories are read over federation, which is not built yet.
        return Err(Error::not_found("Unknown server"));
    }
    Ok(())
}

/// `GET /_matrix/client/v3/publicRooms`
pub async fn get_public_rooms(
    hs: Homeserver,
    req: Ruma<get_public_rooms::v3::Request>,
) -> ApiResult<get_public_rooms::v3::Response> {
    let b = &req.body;
    check_server(&hs, b.server.as_deref())?;
    let (chunk, next, prev, total) = page(&hs, None, b.limit, b.since.as_deref())?;
    let mut response = get_public_rooms::v3::Response::new(chunk);
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = Some(total);
    Ok(response)
}

/// `POST /_matrix/client/v3/publicRooms`
pub async fn get_public_rooms_filtered(
    hs: Homeserver,
    req: Ruma<get_public_rooms_filtered::v3::Request>,
) -> ApiResult<get_public_rooms_filtered::v3::Response> {
    let b = &req.body;
    check_server(&hs, b.server.as_deref())?;
    let search = b.filter.generic_search_term.as_deref();
    let (chunk, next, prev, total) = page(&hs, search, b.limit, b.since.as_deref())?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = chunk;
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = Some(total);
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
