//! Lookups other servers make: profiles, room aliases, the public room directory, space
//! hierarchies, and whose an OpenID token is (asked by third parties, unsigned).

use hearth_core::Homeserver;
use ruma::api::federation::{
    directory::{get_public_rooms, get_public_rooms_filtered},
    openid::get_openid_userinfo,
    query::{get_profile_information, get_room_information},
    space::get_hierarchy,
};

use crate::server::{Fed, FedResult};

/// `GET /_matrix/federation/v1/query/profile`
pub async fn get_profile_information(
    hs: Homeserver,
    req: Fed<get_profile_information::v1::Request>,
) -> FedResult<get_profile_information::v1::Response> {
    req.origin()?;
    let b = &req.body;
    let field = b.field.as_ref().map(|f| f.as_str().to_owned());
    let profile = hs.profile_for_server(&b.user_id, field.as_deref())?;
    Ok(profile.into_iter().collect())
}

/// `GET /_matrix/federation/v1/query/directory`
pub async fn get_room_information(
    hs: Homeserver,
    req: Fed<get_room_information::v1::Request>,
) -> FedResult<get_room_information::v1::Response> {
    req.origin()?;
    let (room_id, servers) = hs.directory_for_server(&req.body.room_alias).await?;
    Ok(get_room_information::v1::Response::new(room_id, servers))
}

/// `GET /_matrix/federation/v1/publicRooms`
pub async fn get_public_rooms(
    hs: Homeserver,
    req: Fed<get_public_rooms::v1::Request>,
) -> FedResult<get_public_rooms::v1::Response> {
    req.origin()?;
    let b = &req.body;
    let page = hs.public_rooms_page(None, &b.room_network, b.limit, b.since.as_deref())?;
    let mut response = get_public_rooms::v1::Response::new();
    (response.chunk, response.next_batch, response.prev_batch, response.total_room_count_estimate) =
        page.into_parts();
    Ok(response)
}

/// `POST /_matrix/federation/v1/publicRooms`
pub async fn get_public_rooms_filtered(
    hs: Homeserver,
    req: Fed<get_public_rooms_filtered::v1::Request>,
) -> FedResult<get_public_rooms_filtered::v1::Response> {
    req.origin()?;
    let b = &req.body;
    let search = b.filter.generic_search_term.as_deref();
    let page = hs.public_rooms_page(search, &b.room_network, b.limit, b.since.as_deref())?;
    let mut response = get_public_rooms_filtered::v1::Response::new();
    (response.chunk, response.next_batch, response.prev_batch, response.total_room_count_estimate) =
        page.into_parts();
    Ok(response)
}

/// `GET /_matrix/federation/v1/hierarchy/{roomId}`
pub async fn get_hierarchy(
    hs: Homeserver,
    req: Fed<get_hierarchy::v1::Request>,
) -> FedResult<get_hierarchy::v1::Response> {
    let origin = req.origin()?;
    Ok(hs.hierarchy_for_server(origin, &req.body.room_id, req.body.suggested_only)?)
}

/// `GET /_matrix/federation/v1/openid/userinfo`: whose an OpenID token is. Asked by whoever
/// the user gave the token to, so it carries no server signature.
pub async fn get_openid_userinfo(
    hs: Homeserver,
    req: Fed<get_openid_userinfo::v1::Request>,
) -> FedResult<get_openid_userinfo::v1::Response> {
    let user = hs.users.openid_user(&req.body.access_token).await?;
    Ok(get_openid_userinfo::v1::Response::new(user))
}
