//! What unit tests across core set up the same way: local users and a room they share.

use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde_json::json;

use crate::{Homeserver, rooms::CreateRoom, users::NewAccount};

/// A local user with no session.
pub(crate) async fn user(hs: &Homeserver, name: &str) -> OwnedUserId {
    let new = NewAccount { localpart: Some(name.into()), inhibit_login: true, ..Default::default() };
    hs.users.register(new).await.unwrap().user_id
}

/// A public room `creator` made (default version) that each of `joiners` joined.
pub(crate) async fn shared_room(hs: &Homeserver, creator: &UserId, joiners: &[&UserId]) -> OwnedRoomId {
    let mut create = CreateRoom::new();
    create.public = true;
    let room_id = hs.rooms.create_room(creator, json!({}), create).await.unwrap();
    for joiner in joiners {
        hs.rooms.join(&room_id, joiner, json!({}), None).await.unwrap();
    }
    room_id
}
