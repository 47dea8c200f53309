//! Spaces: the hierarchy under a space.

use hearth_core::{
    Error, Homeserver,
    federation::hierarchy::{HierarchyQuery, MAX_PAGE},
};
use ruma::api::client::space::{SpaceHierarchyRoomsChunk, get_hierarchy};

use crate::{extract::Ruma, response::ApiResult, room::raw};

/// `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`
pub async fn get_hierarchy(
    hs: Homeserver,
    req: Ruma<get_hierarchy::v1::Request>,
) -> ApiResult<get_hierarchy::v1::Response> {
    let session = req.session()?;
    let b = &req.body;
    let limit = match b.limit.map(u64::from) {
        None => MAX_PAGE,
        Some(0) => return Err(Error::invalid_param("limit must be positive").into()),
        Some(n) => usize::try_from(n).unwrap_or(MAX_PAGE),
    };
    let query = HierarchyQuery {
        suggested_only: b.suggested_only,
        max_depth: b.max_depth.map(u64::from),
        limit,
        from: b.from.clone(),
    };
    let (rooms, next_batch) = hs.space_hierarchy(&session.user_id, &b.room_id, &query).await?;
    let mut response = get_hierarchy::v1::Response::new();
    for room in rooms {
        let children = room.children_state.iter().map(raw).collect::<Result<Vec<_>, _>>()?;
        response.rooms.push(SpaceHierarchyRoomsChunk::new(room.summary, children));
    }
    response.next_batch = next_batch;
    Ok(response)
}
