//! Client config: account data, global and per room.

use hearth_core::{Error, Homeserver, users::Session};
use ruma::{
    UserId,
    api::client::{
        config::{
            get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data,
        },
        tag::{create_tag, delete_tag, get_tags},
    },
    serde::Raw,
};

use crate::{extract::Ruma, response::ApiResult};

fn check_self(session: &Session, user_id: &UserId) -> Result<(), Error> {
    if session.user_id != user_id {
        return Err(Error::forbidden("Cannot access another user's account data"));
    }
    Ok(())
}

fn not_found() -> Error {
    Error::not_found("Account data not found")
}

fn to_raw<T>(value: &serde_json::Value) -> Result<Raw<T>, Error> {
    let raw = serde_json::value::to_raw_value(value).map_err(Error::internal)?;
    Ok(Raw::from_json(raw))
}

fn from_raw<T>(raw: &Raw<T>) -> Result<serde_json::Value, Error> {
    serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(e.to_string()))
}

/// `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn get_global_account_data(
    hs: Homeserver,
    req: Ruma<get_global_account_data::v3::Request>,
) -> ApiResult<get_global_account_data::v3::Response> {
    check_self(req.session()?, &req.body.user_id)?;
    let content =
        hs.account_data.global(&req.body.user_id, &req.body.event_type.to_string())?.ok_or_else(not_found)?;
    Ok(get_global_account_data::v3::Response::new(to_raw(&content)?))
}

/// `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
pub async fn set_global_account_data(
    hs: Homeserver,
    req: Ruma<set_global_account_data::v3::Request>,
) -> ApiResult<set_global_account_data::v3::Response> {
    check_self(req.session()?, &req.body.user_id)?;
    let content = from_raw(&req.body.data)?;
    hs.account_data.set_global(&req.body.user_id, &req.body.event_type.to_string(), content).await?;
    Ok(set_global_account_data::v3::Response::new())
}

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn get_room_account_data(
    hs: Homeserver,
    req: Ruma<get_room_account_data::v3::Request>,
) -> ApiResult<get_room_account_data::v3::Response> {
    check_self(req.session()?, &req.body.user_id)?;
    let b = &req.body;
    let content =
        hs.account_data.room(&b.user_id, &b.room_id, &b.event_type.to_string())?.ok_or_else(not_found)?;
    Ok(get_room_account_data::v3::Response::new(to_raw(&content)?))
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
pub async fn set_room_account_data(
    hs: Homeserver,
    req: Ruma<set_room_account_data::v3::Request>,
) -> ApiResult<set_room_account_data::v3::Response> {
    check_self(req.session()?, &req.body.user_id)?;
    let b = &req.body;
    let content = from_raw(&b.data)?;
    hs.account_data.set_room(&b.user_id, &b.room_id, &b.event_type.to_string(), content).await?;
    Ok(set_room_account_data::v3::Response::new())
}

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags`
pub async fn get_tags(hs: Homeserver, req: Ruma<get_tags::v3::Request>) -> ApiResult<get_tags::v3::Response> {
    check_self(req.session()?, &req.body.user_id)?;
    let tags = hs.account_data.tags(&req.body.user_id, &req.body.room_id)?;
    // Stored tags were validated on the way in; one that no longer parses is left out.
    let tags = tags
        .into_iter()
        .filter_map(|(name, info)| Some((name.into(), serde_json::from_value(info).ok()?)))
        .collect();
    Ok(get_tags::v3::Response::new(tags))
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
pub async fn create_tag(
    hs: Homeserver,
    req: Ruma<create_tag::v3::Request>,
) -> ApiResult<create_tag::v3::Response> {
    check_self(req.session()?, &req.body.user_id)?;
    let b = req.body;
    let info = serde_json::to_value(&b.tag_info).map_err(Error::internal)?;
    hs.account_data.set_tag(&b.user_id, &b.room_id, &b.tag, info).await?;
    Ok(create_tag::v3::Response::new())
}

/// `DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
pub async fn delete_tag(
    hs: Homeserver,
    req: Ruma<delete_tag::v3::Request>,
) -> ApiResult<delete_tag::v3::Response> {
    check_self(req.session()?, &req.body.user_id)?;
    hs.account_data.delete_tag(&req.body.user_id, &req.body.room_id, &req.body.tag).await?;
    Ok(delete_tag::v3::Response::new())
}
