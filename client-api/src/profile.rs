//! User profiles.

use hearth_core::{Error, Homeserver, users::Session};
use ruma::{
    OwnedMxcUri, UserId,
    api::client::profile::{get_avatar_url, get_display_name, get_profile, set_avatar_url, set_display_name},
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
