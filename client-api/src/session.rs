//! Logging in and out.

use hearth_core::{Error, Homeserver};
use ruma::api::client::{
    session::{
        get_login_types::{
            self,
            v3::{LoginType, PasswordLoginType},
        },
        login::{self, v3::LoginInfo},
        logout, logout_all,
    },
    uiaa::UserIdentifier,
};

use crate::{extract::Ruma, response::ApiResult};

/// `GET /_matrix/client/v3/login`
pub async fn get_login_types(
    _hs: Homeserver,
    _req: Ruma<get_login_types::v3::Request>,
) -> ApiResult<get_login_types::v3::Response> {
    Ok(get_login_types::v3::Response::new(vec![LoginType::Password(PasswordLoginType::new())]))
}

/// `POST /_matrix/client/v3/login`
pub async fn login(hs: Homeserver, req: Ruma<login::v3::Request>) -> ApiResult<login::v3::Response> {
    let body = req.body;
    let LoginInfo::Password(password) = &body.login_info else {
        return Err(Error::bad_request("Unknown login type").into());
    };
    #[allow(deprecated)]
    let named = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(id)), _) => Some(id.user.as_str()),
        (None, Some(user)) => Some(user.as_str()),
        _ => None,
    };
    let Some(named) = named else {
        return Err(Error::forbidden("Invalid login identifier").into());
    };
    let invalid = || Error::forbidden("Invalid username or password");
    let user_id = hs.users.resolve_login_user(named)?.ok_or_else(invalid)?;
    let account = hs.users.account(&user_id)?.ok_or_else(invalid)?;
    if account.deactivated {
        return Err(Error::user_deactivated("This account has been deactivated").into());
    }
    if !hs.users.check_password(&user_id, &password.password).await? {
        tracing::info!(%user_id, "failed password login");
        return Err(invalid().into());
    }
    let (device_id, access_token) = hs
        .users
        .create_session(&user_id, body.device_id, body.initial_device_display_name, account.is_guest)
        .await?;
    tracing::info!(%user_id, %device_id, "logged in");
    Ok(login::v3::Response::new(user_id, access_token, device_id))
}

/// `POST /_matrix/client/v3/logout`
pub async fn logout(hs: Homeserver, req: Ruma<logout::v3::Request>) -> ApiResult<logout::v3::Response> {
    let session = req.session()?;
    hs.users.delete_devices(&session.user_id, std::slice::from_ref(&session.device_id)).await?;
    Ok(logout::v3::Response::new())
}

/// `POST /_matrix/client/v3/logout/all`
pub async fn logout_all(
    hs: Homeserver,
    req: Ruma<logout_all::v3::Request>,
) -> ApiResult<logout_all::v3::Response> {
    let session = req.session()?;
    let devices: Vec<_> = hs.users.devices(&session.user_id)?.into_iter().map(|d| d.device_id).collect();
    hs.users.delete_devices(&session.user_id, &devices).await?;
    Ok(logout_all::v3::Response::new())
}
