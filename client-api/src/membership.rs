//! Room membership: join, leave, invite, kick, ban, unban, forget, and member lists.

use hearth_core::{Error, Homeserver, ratelimit::Action, rooms::MembershipAction};
use ruma::events::room::member::MembershipState;
use ruma::{
    OwnedRoomId, OwnedServerName, RoomId,
    api::client::membership::{
        ban_user, forget_room, get_member_events, invite_user, invite_user::v3::InvitationRecipient,
        join_room_by_id, join_room_by_id_or_alias, joined_members, joined_rooms, kick_user, leave_room,
        unban_user,
    },
    api::{IncomingRequest, Metadata, error::DeserializationError},
};

use serde_json::{Value, json};

use crate::{
    extract::Ruma,
    response::{ApiResult, Json, JsonAnswered},
    room::{member_profile, raw},
};

/// A room ID, or the room an alias names (another server's asked of it) with servers that can
/// get us in.
async fn resolve(
    hs: &Homeserver,
    target: &ruma::RoomOrAliasId,
) -> Result<(OwnedRoomId, Vec<OwnedServerName>), Error> {
    match <&RoomId>::try_from(target) {
        Ok(room_id) => Ok((room_id.to_owned(), Vec::new())),
        Err(alias) => hs.resolve_room_alias(alias).await,
    }
}

/// Guests join only rooms whose `m.room.guest_access` is `can_join`.
fn check_guest_access(
    hs: &Homeserver,
    room_id: &RoomId,
    session: &hearth_core::users::Session,
) -> Result<(), Error> {
    if !session.is_guest {
        return Ok(());
    }
    let access = hs
        .rooms
        .current_state_event(room_id, "m.room.guest_access", "")?
        .and_then(|p| p.content_str("guest_access"));
    if access.as_deref() != Some("can_join") {
        return Err(Error::guest_access_forbidden("Guest access is not allowed in this room"));
    }
    Ok(())
}

/// A join request and the rest of its body: fields the endpoint does not define go into the
/// member event's content, as Synapse puts them there (a per-room display name, for one).
pub struct JoinWithContent<R> {
    request: R,
    content: serde_json::Map<String, Value>,
}

impl<R: Metadata> Metadata for JoinWithContent<R> {
    const METHOD: axum::http::Method = R::METHOD;
    const RATE_LIMITED: bool = R::RATE_LIMITED;
    type Authentication = R::Authentication;
    type PathBuilder = R::PathBuilder;
    const PATH_BUILDER: Self::PathBuilder = R::PATH_BUILDER;
}

impl<R: IncomingRequest> IncomingRequest for JoinWithContent<R> {
    type EndpointError = R::EndpointError;
    type OutgoingResponse = R::OutgoingResponse;

    fn try_from_http_request_inner(
        request: axum::http::Request<&[u8]>,
        path_args: &[&str],
    ) -> Result<Self, DeserializationError> {
        let content = serde_json::from_slice(request.body()).map_err(DeserializationError::Json)?;
        Ok(Self { request: R::try_from_http_request_inner(request, path_args)?, content })
    }
}

/// The join's member content: the body's own fields, then the profile where the body sets
/// none. What the endpoint defines (and what the server sets) is not content.
fn join_content(mut content: serde_json::Map<String, Value>, profile: Value) -> Value {
    for field in ["reason", "third_party_signed", "membership", "join_authorised_via_users_server"] {
        content.remove(field);
    }
    if let Value::Object(profile) = profile {
        for (field, value) in profile {
            content.entry(field).or_insert(value);
        }
    }
    Value::Object(content)
}

/// `POST /_matrix/client/v3/rooms/{roomId}/join`
pub async fn join_room_by_id(
    hs: Homeserver,
    req: Ruma<JoinWithContent<join_room_by_id::v3::Request>>,
) -> ApiResult<join_room_by_id::v3::Response> {
    let session = req.session()?.clone();
    let JoinWithContent { request, content } = req.body;
    hs.rate_limits.check_user(Action::Join, &session).await?;
    check_guest_access(&hs, &request.room_id, &session)?;
    let content = join_content(content, member_profile(&hs, &session.user_id).await?);
    hs.join_room(&request.room_id, &session.user_id, content, request.reason, &[]).await?;
    Ok(join_room_by_id::v3::Response::new(request.room_id))
}

/// `POST /_matrix/client/v3/join/{roomIdOrAlias}`
pub async fn join_room_by_id_or_alias(
    hs: Homeserver,
    req: Ruma<JoinWithContent<join_room_by_id_or_alias::v3::Request>>,
) -> ApiResult<join_room_by_id_or_alias::v3::Response> {
    let session = req.session()?.clone();
    let JoinWithContent { request, content } = req.body;
    hs.rate_limits.check_user(Action::Join, &session).await?;
    let (room_id, servers) = resolve(&hs, &request.room_id_or_alias).await?;
    check_guest_access(&hs, &room_id, &session)?;
    let content = join_content(content, member_profile(&hs, &session.user_id).await?);
    let mut via = request.via;
    via.extend(servers.into_iter().filter(|s| s != hs.server_name()));
    hs.join_room(&room_id, &session.user_id, content, request.reason, &via).await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room_id))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/leave`
pub async fn leave_room(
    hs: Homeserver,
    req: Ruma<leave_room::v3::Request>,
) -> ApiResult<leave_room::v3::Response> {
    let session = req.session()?.clone();
    hs.leave_room(&req.body.room_id, &session.user_id, req.body.reason).await?;
    Ok(leave_room::v3::Response::new())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/forget`
pub async fn forget_room(
    hs: Homeserver,
    req: Ruma<forget_room::v3::Request>,
) -> ApiResult<forget_room::v3::Response> {
    let session = req.session()?.clone();
    hs.rooms.forget(&req.body.room_id, &session.user_id).await?;
    Ok(forget_room::v3::Response::new())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/invite`
pub async fn invite_user(
    hs: Homeserver,
    req: Ruma<invite_user::v3::Request>,
) -> ApiResult<invite_user::v3::Response> {
    let session = req.session()?.clone();
    let InvitationRecipient::UserId(invitee) = req.body.recipient else {
        return Err(Error::bad_request("Third-party invites are not supported").into());
    };
    hs.rate_limits.check_user(Action::Invite, &session).await?;
    if hs.shadow_ban_answer(&session)?.is_some() {
        return Ok(invite_user::v3::Response::new());
    }
    hs.invite_user(&req.body.room_id, &session.user_id, &invitee.user_id, invitee.reason, false).await?;
    Ok(invite_user::v3::Response::new())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/kick`
pub async fn kick_user(
    hs: Homeserver,
    req: Ruma<kick_user::v3::Request>,
) -> ApiResult<kick_user::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    hs.rooms
        .change_membership(&b.room_id, &session.user_id, &b.user_id, MembershipAction::Kick, b.reason, false)
        .await?;
    Ok(kick_user::v3::Response::new())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/ban`
pub async fn ban_user(hs: Homeserver, req: Ruma<ban_user::v3::Request>) -> ApiResult<ban_user::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    hs.rooms
        .change_membership(&b.room_id, &session.user_id, &b.user_id, MembershipAction::Ban, b.reason, false)
        .await?;
    Ok(ban_user::v3::Response::new())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/unban`
pub async fn unban_user(
    hs: Homeserver,
    req: Ruma<unban_user::v3::Request>,
) -> ApiResult<unban_user::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    hs.rooms
        .change_membership(&b.room_id, &session.user_id, &b.user_id, MembershipAction::Unban, b.reason, false)
        .await?;
    Ok(unban_user::v3::Response::new())
}

/// `GET /_matrix/client/v3/joined_rooms`
pub async fn joined_rooms(
    hs: Homeserver,
    req: Ruma<joined_rooms::v3::Request>,
) -> ApiResult<joined_rooms::v3::Response> {
    let session = req.session()?;
    Ok(joined_rooms::v3::Response::new(hs.rooms.joined_rooms(&session.user_id)?))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
pub async fn joined_members(
    hs: Homeserver,
    req: Ruma<JsonAnswered<joined_members::v3::Request>>,
) -> ApiResult<Json<Value>> {
    let session = req.session()?;
    let room_id = &req.body.0.room_id;
    if hs.rooms.membership(room_id, &session.user_id)? != Some(MembershipState::Join) {
        return Err(Error::forbidden("You are not joined to this room").into());
    }
    let mut joined = serde_json::Map::new();
    for user in hs.rooms.members_with(room_id, &MembershipState::Join)? {
        let event = hs.rooms.current_state_event(room_id, "m.room.member", user.as_str())?;
        let content = event.map(|e| e.content_json()).unwrap_or_default();
        let field = |name: &str| content.get(name).filter(|v| v.is_string()).cloned().unwrap_or(Value::Null);
        // Both keys always, null when unset, as Synapse answers: clients read them unchecked.
        let member = json!({"display_name": field("displayname"), "avatar_url": field("avatar_url")});
        joined.insert(user.to_string(), member);
    }
    Ok(Json(json!({ "joined": joined })))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/members`
pub async fn get_member_events(
    hs: Homeserver,
    req: Ruma<get_member_events::v3::Request>,
) -> ApiResult<get_member_events::v3::Response> {
    let session = req.session()?;
    let b = &req.body;
    let horizon = hs.rooms.read_access(&b.room_id, &session.user_id)?;
    // `at` (a sync token) and a departed member's view both select an older state.
    let at =
        b.at.as_deref()
            .and_then(hearth_core::rooms::view::parse_position_token)
            .unwrap_or(u64::MAX)
            .min(horizon);
    let state = hs.rooms.state_at_position(&b.room_id, at)?;
    let mut chunk = Vec::new();
    for (event_id, record, pdu) in state {
        if pdu.kind.to_string() != "m.room.member" {
            continue;
        }
        let membership = pdu.content_str("membership").unwrap_or_default();
        if b.membership.as_ref().is_some_and(|m| m.as_str() != membership) {
            continue;
        }
        if b.not_membership.as_ref().is_some_and(|m| m.as_str() == membership) {
            continue;
        }
        let event =
            hs.rooms.client_event(&event_id, &record, &session.user_id, session.device_id.as_deref())?;
        chunk.push(raw(&event)?);
    }
    Ok(get_member_events::v3::Response::new(chunk))
}

/// `POST /_matrix/client/v3/knock/{roomIdOrAlias}`
pub async fn knock_room(
    hs: Homeserver,
    req: Ruma<ruma::api::client::knock::knock_room::v3::Request>,
) -> ApiResult<ruma::api::client::knock::knock_room::v3::Response> {
    let session = req.session()?.clone();
    hs.rate_limits.check_user(Action::Join, &session).await?;
    let (room_id, servers) = resolve(&hs, &req.body.room_id_or_alias).await?;
    let profile = member_profile(&hs, &session.user_id).await?;
    let b = req.body;
    let mut via = b.via;
    via.extend(servers.into_iter().filter(|s| s != hs.server_name()));
    hs.knock_room(&room_id, &session.user_id, profile, b.reason, &via).await?;
    Ok(ruma::api::client::knock::knock_room::v3::Response::new(room_id))
}

/// The rooms the requester shares with another user (MSC2666, spec v1.19). All at once: one
/// user's rooms fit in a page.
fn mutual_rooms(
    hs: &Homeserver,
    me: &ruma::UserId,
    other: &ruma::UserId,
) -> Result<Vec<ruma::OwnedRoomId>, Error> {
    if me == other {
        return Err(Error::invalid_param("You cannot ask which rooms you share with yourself"));
    }
    hs.rooms.mutual_rooms(me, other)
}

/// `GET /_matrix/client/v1/mutual_rooms`
pub async fn get_mutual_rooms(
    hs: Homeserver,
    req: Ruma<ruma::api::client::membership::get_mutual_rooms::v1::Request>,
) -> ApiResult<ruma::api::client::membership::get_mutual_rooms::v1::Response> {
    let me = req.session()?.user_id.clone();
    let joined = mutual_rooms(&hs, &me, &req.body.user_id)?;
    let count = ruma::UInt::try_from(joined.len()).unwrap_or(ruma::UInt::MAX);
    Ok(ruma::api::client::membership::get_mutual_rooms::v1::Response::new(count, joined))
}

/// `GET /_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms`
pub async fn get_mutual_rooms_unstable(
    hs: Homeserver,
    req: Ruma<ruma::api::client::membership::get_mutual_rooms::unstable::Request>,
) -> ApiResult<ruma::api::client::membership::get_mutual_rooms::unstable::Response> {
    let me = req.session()?.user_id.clone();
    let joined = mutual_rooms(&hs, &me, &req.body.user_id)?;
    Ok(ruma::api::client::membership::get_mutual_rooms::unstable::Response::new(joined))
}
