//! User profiles.

use hearth_core::{Error, Homeserver, users::Session};
use ruma::{
    OwnedMxcUri, UserId,
    api::client::profile::{
        delete_profile_field, get_avatar_url, get_display_name, get_profile, get_profile_field,
        set_avatar_url, set_display_name, set_profile_field,
    },
    profile::ProfileFieldValue,
};

use crate::{extract::Ruma, response::ApiResult};

/// Profiles are only ever changed by their owner.
fn check_owner(session: &Session, user_id: &UserId) -> Result<(), Error> {
    if session.user_id != user_id {
        return Err(Error::forbidden("Cannot set another user's profile"));
    }
    Ok(())
}

/// `GET /_matrix/client/v3/profile/{userId}`: local profiles from storage, other servers'
/// asked of them.
pub async fn get_profile(
    hs: Homeserver,
    req: Ruma<get_profile::v3::Request>,
) -> ApiResult<get_profile::v3::Response> {
    let profile = hs.profile_of(&req.body.user_id).await?;
    let mut response = get_profile::v3::Response::new();
    for (field, value) in profile {
        response.set(field, value);
    }
    Ok(response)
}

/// `GET /_matrix/client/v3/profile/{userId}/displayname`
pub async fn get_display_name(
    hs: Homeserver,
    req: Ruma<get_display_name::v3::Request>,
) -> ApiResult<get_display_name::v3::Response> {
    let mut profile = hs.profile_of(&req.body.user_id).await?;
    let name = profile.remove("displayname");
    Ok(get_display_name::v3::Response::new(name.and_then(|v| v.as_str().map(ToOwned::to_owned))))
}

/// `PUT /_matrix/client/v3/profile/{userId}/displayname`
pub async fn set_display_name(
    hs: Homeserver,
    req: Ruma<set_display_name::v3::Request>,
) -> ApiResult<set_display_name::v3::Response> {
    let session = req.session()?;
    check_owner(session, &req.body.user_id)?;
    let value = req.body.displayname.filter(|n| !n.is_empty()).map(serde_json::Value::String);
    hs.users.set_profile_field(&req.body.user_id, "displayname", value.clone()).await?;
    hs.rooms.propagate_profile_field(&req.body.user_id, "displayname", value.as_ref()).await?;
    Ok(set_display_name::v3::Response::new())
}

/// `GET /_matrix/client/v3/profile/{userId}/avatar_url`
pub async fn get_avatar_url(
    hs: Homeserver,
    req: Ruma<get_avatar_url::v3::Request>,
) -> ApiResult<get_avatar_url::v3::Response> {
    let mut profile = hs.profile_of(&req.body.user_id).await?;
    let url: Option<OwnedMxcUri> = profile.remove("avatar_url").and_then(|v| v.as_str().map(Into::into));
    Ok(get_avatar_url::v3::Response::new(url))
}

/// `PUT /_matrix/client/v3/profile/{userId}/avatar_url`
pub async fn set_avatar_url(
    hs: Homeserver,
    req: Ruma<set_avatar_url::v3::Request>,
) -> ApiResult<set_avatar_url::v3::Response> {
    let session = req.session()?;
    check_owner(session, &req.body.user_id)?;
    let value = req.body.avatar_url.map(|u| serde_json::Value::String(u.to_string()));
    hs.users.set_profile_field(&req.body.user_id, "avatar_url", value.clone()).await?;
    hs.rooms.propagate_profile_field(&req.body.user_id, "avatar_url", value.as_ref()).await?;
    Ok(set_avatar_url::v3::Response::new())
}

/// Fields whose changes also go into the user's member events.
const IN_MEMBER_EVENTS: &[&str] = &["displayname", "avatar_url"];

/// Sets or removes one profile field of the requester, carrying the member-event fields into
/// their rooms.
async fn change_field(
    hs: &Homeserver,
    session: &Session,
    user_id: &UserId,
    field: &str,
    value: Option<serde_json::Value>,
) -> Result<(), Error> {
    check_owner(session, user_id)?;
    hs.users.set_profile_field(user_id, field, value.clone()).await?;
    if IN_MEMBER_EVENTS.contains(&field) {
        hs.rooms.propagate_profile_field(user_id, field, value.as_ref()).await?;
    }
    Ok(())
}

/// `GET /_matrix/client/v3/profile/{userId}/{keyName}` (spec v1.16): any field, `m.tz` and
/// custom ones included.
pub async fn get_profile_field(
    hs: Homeserver,
    req: Ruma<get_profile_field::v3::Request>,
) -> ApiResult<get_profile_field::v3::Response> {
    let field = req.body.field.as_str().to_owned();
    let mut profile = hs.profile_of(&req.body.user_id).await?;
    let value = profile.remove(&field).ok_or_else(|| Error::not_found("Profile field not found"))?;
    let value = ProfileFieldValue::new(&field, value).map_err(Error::internal)?;
    Ok(get_profile_field::v3::Response::new(value))
}

/// `PUT /_matrix/client/v3/profile/{userId}/{keyName}` (spec v1.16)
pub async fn set_profile_field(
    hs: Homeserver,
    req: Ruma<set_profile_field::v3::Request>,
) -> ApiResult<set_profile_field::v3::Response> {
    let session = req.session()?.clone();
    let field = req.body.value.field_name().as_str().to_owned();
    let value = req.body.value.value().into_owned();
    change_field(&hs, &session, &req.body.user_id, &field, Some(value)).await?;
    Ok(set_profile_field::v3::Response::new())
}

/// `DELETE /_matrix/client/v3/profile/{userId}/{keyName}` (spec v1.16)
pub async fn delete_profile_field(
    hs: Homeserver,
    req: Ruma<delete_profile_field::v3::Request>,
) -> ApiResult<delete_profile_field::v3::Response> {
    let session = req.session()?.clone();
    change_field(&hs, &session, &req.body.user_id, req.body.field.as_str(), None).await?;
    Ok(delete_profile_field::v3::Response::new())
}
