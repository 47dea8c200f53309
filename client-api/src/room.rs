//! Creating rooms, reading single events, room aliases, and room summaries.

use hearth_core::{
    Error, ErrorCode, Homeserver,
    ratelimit::Action,
    rooms::{CreateRoom, Preset, ReportSubject},
};
use ruma::{
    OwnedRoomId, RoomAliasId,
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        room::{aliases, create_room, get_room_event, get_summary},
    },
    events::room::member::MembershipState,
    room::RoomType,
    serde::Raw,
};
use serde_json::Value;

use crate::{extract::Ruma, response::ApiResult};

/// A serde value as any ruma `Raw<T>`.
pub(crate) use hearth_core::json::raw;

pub(crate) fn json_of<T>(raw: &Raw<T>) -> Result<Value, Error> {
    serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()))
}

/// The profile fields a join or invite carries in its member event.
pub(crate) async fn member_profile(hs: &Homeserver, user: &ruma::UserId) -> Result<Value, Error> {
    hs.users.member_content(user).await
}

/// `POST /_matrix/client/v3/createRoom`
pub async fn create_room(
    hs: Homeserver,
    req: Ruma<create_room::v3::Request>,
) -> ApiResult<create_room::v3::Response> {
    let session = req.session()?.clone();
    hs.rate_limits.check_user(Action::Message, &session).await?;
    let mut body = req.body;
    if hs.shadow_ban_answer(&session)?.is_some() {
        // The room is made (the user sees it), but nobody is invited into it.
        body.invite.clear();
        body.invite_3pid.clear();
    }
    let mut create = CreateRoom::new();
    create.version = body.room_version;
    create.preset = body.preset.as_ref().map(|p| match p.as_str() {
        "public_chat" => Preset::PublicChat,
        "trusted_private_chat" => Preset::TrustedPrivateChat,
        _ => Preset::PrivateChat,
    });
    create.public = body.visibility.as_str() == "public";
    create.name = body.name;
    create.topic = body.topic;
    for invitee in body.invite.iter().filter(|u| u.server_name() == hs.server_name()) {
        create.invite_profiles.insert(invitee.clone(), member_profile(&hs, invitee).await?);
    }
    create.invite = body.invite;
    create.is_direct = body.is_direct;
    if let Some(content) = &body.creation_content {
        let Value::Object(map) = json_of(content)? else {
            return Err(Error::bad_json("creation_content must be an object").into());
        };
        if map.get("type").is_some_and(|t| t.as_str() == Some(RoomType::Space.as_str())) {
            tracing::debug!("creating a space");
        }
        create.creation_content = Some(map);
    }
    if let Some(overrides) = &body.power_level_content_override {
        let Value::Object(map) = json_of(overrides)? else {
            return Err(Error::bad_json("power_level_content_override must be an object").into());
        };
        create.power_level_override = Some(map);
    }
    for event in &body.initial_state {
        let event = json_of(event)?;
        let kind =
            event["type"].as_str().ok_or_else(|| Error::bad_json("initial_state event without type"))?;
        let key = event.get("state_key").and_then(Value::as_str).unwrap_or_default();
        create.initial_state.push((kind.to_owned(), key.to_owned(), event["content"].clone()));
    }
    let alias = match &body.room_alias_name {
        Some(name) => {
            let alias = RoomAliasId::parse(format!("#{name}:{}", hs.server_name()))
                .map_err(|e| Error::invalid_param(format!("Invalid room_alias_name: {e}")))?;
            hs.appservices.check_alias_free(&alias, session.appservice.as_deref())?;
            if hs.rooms.resolve_alias(&alias)?.is_some() {
                return Err(Error::new(hearth_core::ErrorCode::RoomInUse, "Room alias already taken").into());
            }
            create.canonical_alias = Some(alias.to_string());
            Some(alias)
        }
        None => None,
    };
    let profile = member_profile(&hs, &session.user_id).await?;
    let public = create.public;
    let is_direct = create.is_direct;
    let remote_invitees: Vec<_> =
        create.invite.iter().filter(|u| u.server_name() != hs.server_name()).cloned().collect();
    let room_id = hs.rooms.create_room(&session.user_id, profile, create).await?;
    if hs.federation.enabled() {
        for invitee in remote_invitees {
            // The room exists whatever another server says; an unreachable invitee is not a
            // reason to fail its creation.
            if let Err(error) = hs.invite_user(&room_id, &session.user_id, &invitee, None, is_direct).await {
                tracing::warn!(%room_id, %invitee, %error, "could not invite a user of another server");
            }
        }
    }
    if let Some(alias) = alias {
        hs.rooms.create_alias(&alias, &room_id, &session.user_id).await?;
    }
    if public {
        hs.rooms.set_published(&room_id, true).await?;
    }
    Ok(create_room::v3::Response::new(room_id))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
pub async fn get_room_event(
    hs: Homeserver,
    req: Ruma<get_room_event::v3::Request>,
) -> ApiResult<get_room_event::v3::Response> {
    let session = req.session()?;
    let b = &req.body;
    // A room the user may not read hides its events as if they did not exist, as Synapse
    // answers, so the endpoint does not confirm which event IDs a private room holds.
    let found = match hs.rooms.visible_event(&b.room_id, &b.event_id, &session.user_id) {
        Err(e) if e.code() == ErrorCode::Forbidden => None,
        other => other?,
    };
    let (_, record) = found.ok_or_else(|| Error::not_found("Event not found"))?;
    let event =
        hs.rooms.client_event(&b.event_id, &record, &session.user_id, session.device_id.as_deref())?;
    Ok(get_room_event::v3::Response::new(raw(&event)?))
}

/// `GET /_matrix/client/v3/directory/room/{roomAlias}`
pub async fn get_alias(
    hs: Homeserver,
    req: Ruma<get_alias::v3::Request>,
) -> ApiResult<get_alias::v3::Response> {
    let (room_id, servers) = hs.resolve_room_alias(&req.body.room_alias).await?;
    Ok(get_alias::v3::Response::new(room_id, servers))
}

/// `PUT /_matrix/client/v3/directory/room/{roomAlias}`
pub async fn create_alias(
    hs: Homeserver,
    req: Ruma<create_alias::v3::Request>,
) -> ApiResult<create_alias::v3::Response> {
    let session = req.session()?;
    let b = &req.body;
    // A service gives aliases of its namespace to any room; anyone else only to rooms they
    // are in.
    if !hs.appservice_alias_owner(session, &b.room_alias)?
        && hs.rooms.membership(&b.room_id, &session.user_id)? != Some(MembershipState::Join)
    {
        return Err(Error::forbidden("You must be in the room to give it an alias").into());
    }
    match hs.rooms.create_alias(&b.room_alias, &b.room_id, &session.user_id).await {
        // The spec's answer here (createRoom keeps M_ROOM_IN_USE, as on Synapse).
        Err(e) if e.code() == ErrorCode::RoomInUse => {
            Err(Error::new(ErrorCode::AliasExists, format!("Room alias {} already exists", b.room_alias))
                .into())
        }
        other => Ok(other.map(|()| create_alias::v3::Response::new())?),
    }
}

/// `DELETE /_matrix/client/v3/directory/room/{roomAlias}`
pub async fn delete_alias(
    hs: Homeserver,
    req: Ruma<delete_alias::v3::Request>,
) -> ApiResult<delete_alias::v3::Response> {
    let session = req.session()?;
    let alias = &req.body.room_alias;
    let owner = hs.appservice_alias_owner(session, alias)?;
    hs.rooms.delete_alias(alias, &session.user_id, owner).await?;
    Ok(delete_alias::v3::Response::new())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/aliases`
pub async fn aliases(hs: Homeserver, req: Ruma<aliases::v3::Request>) -> ApiResult<aliases::v3::Response> {
    let session = req.session()?;
    hs.rooms.read_access(&req.body.room_id, &session.user_id)?;
    Ok(aliases::v3::Response::new(hs.rooms.local_aliases(&req.body.room_id)?))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/upgrade`
pub async fn upgrade_room(
    hs: Homeserver,
    req: Ruma<ruma::api::client::room::upgrade_room::v3::Request>,
) -> ApiResult<ruma::api::client::room::upgrade_room::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    let profile = member_profile(&hs, &session.user_id).await?;
    let new_room =
        hs.rooms.upgrade(&b.room_id, &session.user_id, profile, b.new_version, b.additional_creators).await?;
    Ok(ruma::api::client::room::upgrade_room::v3::Response::new(new_room))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}`
pub async fn report_content(
    hs: Homeserver,
    req: Ruma<ruma::api::client::room::report_content::v3::Request>,
) -> ApiResult<ruma::api::client::room::report_content::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    // A reporter must be able to see what they report; otherwise it "does not exist".
    if hs.rooms.visible_event(&b.room_id, &b.event_id, &session.user_id)?.is_none() {
        return Err(Error::not_found("Event not found").into());
    }
    // Dropped from the spec's request (and ruma's), still sent by clients and shown to admins.
    let score = serde_json::from_slice::<serde_json::Value>(&req.raw_body)
        .ok()
        .and_then(|v| v["score"].as_i64())
        .filter(|s| (-100..=0).contains(s));
    hs.rooms.report(&session.user_id, ReportSubject::Event(&b.room_id, &b.event_id), b.reason, score).await?;
    Ok(ruma::api::client::room::report_content::v3::Response::new())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/report`: a room this server knows, reported to its
/// admins (the reporter need not be in it: people report rooms they were invited to).
pub async fn report_room(
    hs: Homeserver,
    req: Ruma<ruma::api::client::room::report_room::v3::Request>,
) -> ApiResult<ruma::api::client::room::report_room::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    if hs.rooms.room(&b.room_id)?.is_none() {
        return Err(Error::not_found("Room not found").into());
    }
    hs.rooms.report(&session.user_id, ReportSubject::Room(&b.room_id), Some(b.reason), None).await?;
    Ok(ruma::api::client::room::report_room::v3::Response::new())
}

/// `POST /_matrix/client/v3/users/{userId}/report`: a user of this server, or one the reporter
/// shares a room with; anyone else is unknown here.
pub async fn report_user(
    hs: Homeserver,
    req: Ruma<ruma::api::client::reporting::report_user::v3::Request>,
) -> ApiResult<ruma::api::client::reporting::report_user::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    let known = if b.user_id.server_name() == hs.server_name() {
        hs.users.account(&b.user_id)?.is_some()
    } else {
        !hs.rooms.mutual_rooms(&session.user_id, &b.user_id)?.is_empty()
    };
    if !known {
        return Err(Error::not_found("User not found").into());
    }
    hs.rooms.report(&session.user_id, ReportSubject::User(&b.user_id), Some(b.reason), None).await?;
    Ok(ruma::api::client::reporting::report_user::v3::Response::new())
}

/// `GET /_matrix/client/v1/room_summary/{roomIdOrAlias}`: what a client shows before joining
/// (a room link, a space child). Rooms elsewhere are asked of the servers in `via`; rooms no
/// server describes and rooms the caller may not see are not found alike.
pub async fn get_summary(
    hs: Homeserver,
    req: Ruma<get_summary::v1::Request>,
) -> ApiResult<get_summary::v1::Response> {
    let viewer = req.session.as_ref().map(|s| s.user_id.clone());
    let mut via = req.body.via.clone();
    let room_id = match OwnedRoomId::try_from(req.body.room_id_or_alias.clone()) {
        Ok(room_id) => room_id,
        Err(alias) => {
            let (room_id, servers) = hs.resolve_room_alias(&alias).await?;
            via.extend(servers);
            room_id
        }
    };
    let not_found = || Error::not_found("Room not found or not accessible");
    if !hs.rooms.resident(&room_id)? {
        // Another server's room: as that server describes it to us.
        let summary = hs.remote_room_summary(viewer.as_deref(), &room_id, &via).await?;
        let mut response = get_summary::v1::Response::new(summary.ok_or_else(not_found)?);
        if let Some(viewer) = &viewer {
            response.membership =
                hs.rooms.membership(&room_id, viewer)?.map(|m| MembershipState::from(m.as_str()));
        }
        return Ok(response);
    }
    let view = hs.rooms.summary_for(&room_id, viewer.as_deref())?.ok_or_else(not_found)?;
    let mut response = get_summary::v1::Response::new(view.to_summary());
    response.membership = view.membership.map(|m| MembershipState::from(m.as_str()));
    Ok(response)
}
