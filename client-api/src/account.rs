//! Registration and account management.

use hearth_core::{Error, ErrorCode, Homeserver, ratelimit::Action, users::NewAccount};
use ruma::api::client::{
    account::{
        ThirdPartyIdRemovalStatus, add_3pid, bind_3pid, change_password, check_registration_token_validity,
        deactivate, delete_3pid, get_3pids, get_username_availability, register,
        register::{LoginType, RegistrationKind},
        request_3pid_management_token_via_email, request_3pid_management_token_via_msisdn,
        request_openid_token, unbind_3pid, whoami,
    },
    uiaa::AuthType,
};

use crate::{extract::Ruma, response::ApiResult};

/// `POST /_matrix/client/v3/register`
pub async fn register(hs: Homeserver, req: Ruma<register::v3::Request>) -> ApiResult<register::v3::Response> {
    let body = req.body;
    if body.login_type == Some(LoginType::ApplicationService) {
        let service = hs.acting_appservice(req.session.as_ref(), req.unknown_appservice_token)?;
        let new = NewAccount {
            localpart: body.username,
            device_id: body.device_id,
            device_display_name: body.initial_device_display_name,
            inhibit_login: body.inhibit_login,
            refresh_token: body.refresh_token,
            ..Default::default()
        };
        return Ok(registered_response(hs.register_appservice_user(&service, new).await?));
    }
    // Only completed registrations count: a UIA dance is several requests for one account.
    let address = crate::extract::address(req.client_ip);
    hs.rate_limits.peek(Action::Registration, &address).await?;
    let config = &hs.config.registration;
    let mut registration_token = None;
    let is_guest = match body.kind {
        RegistrationKind::Guest => {
            if !config.allow_guests {
                return Err(Error::guest_access_forbidden("Guest access is disabled").into());
            }
            true
        }
        _ => {
            if !config.enabled {
                return Err(Error::forbidden("Registration has been disabled").into());
            }
            // Name problems are reported before any auth stage, so a client can fix them first.
            if let Some(username) = &body.username {
                let user_id = hs.users.user_id_for_new_localpart(username)?;
                hs.appservices.check_user_free(&user_id, None)?;
                if hs.users.exists(&user_id)? {
                    return Err(Error::user_in_use("User ID already taken.").into());
                }
            }
            let flow = if config.token.is_some() || config.requires_token {
                AuthType::RegistrationToken
            } else {
                AuthType::Dummy
            };
            let completed = hs.uiaa.authenticate(body.auth.as_ref(), &[vec![flow]], "register", None).await?;
            registration_token = completed.registration_token;
            false
        }
    };

    // Held until the registration is known to be made: a failure, or a request dropped halfway
    // (a client gone, a shutdown), frees the token's use again.
    let held = registration_token.map(|token| HeldTokenUse { hs: hs.clone(), token: Some(token) });
    let registered = hs
        .users
        .register(NewAccount {
            // Guests always get a generated ID; a username they send is ignored, as on Synapse.
            localpart: if is_guest { None } else { body.username },
            password: if is_guest { None } else { body.password },
            is_guest,
            device_id: body.device_id,
            device_display_name: body.initial_device_display_name,
            inhibit_login: body.inhibit_login,
            refresh_token: body.refresh_token,
            ..Default::default()
        })
        .await;
    let registered = registered?;
    if let Some(mut held) = held
        && let Some(token) = held.token.take()
    {
        hs.registration_tokens.complete_use(&token)?;
    }
    count_done(hs.rate_limits.check(Action::Registration, &address).await);
    Ok(registered_response(registered))
}

/// A use of an admin-issued registration token, released unless the registration completes.
struct HeldTokenUse {
    hs: Homeserver,
    token: Option<String>,
}

impl Drop for HeldTokenUse {
    fn drop(&mut self) {
        if let Some(token) = self.token.take()
            && let Err(error) = self.hs.registration_tokens.release_use(&token)
        {
            tracing::warn!(%error, "could not release a registration token's use");
        }
    }
}

/// Counting an action that already happened: going over the limit with it is expected (the
/// next attempt is refused), and a failure to count must not hide that it happened.
fn count_done(counted: Result<(), Error>) {
    if let Err(error) = counted
        && error.code() != ErrorCode::LimitExceeded
    {
        tracing::warn!(%error, "could not count an action against its rate limit");
    }
}

fn registered_response(registered: hearth_core::users::Registered) -> register::v3::Response {
    let mut response = register::v3::Response::new(registered.user_id);
    if let Some(login) = registered.login {
        response.device_id = Some(login.device_id);
        response.access_token = Some(login.access_token);
        response.refresh_token = login.refresh_token;
        response.expires_in = login.expires_in;
    }
    response
}

/// `GET /_matrix/client/v3/register/available`
pub async fn get_username_availability(
    hs: Homeserver,
    req: Ruma<get_username_availability::v3::Request>,
) -> ApiResult<get_username_availability::v3::Response> {
    if !hs.config.registration.enabled {
        return Err(Error::forbidden("Registration has been disabled").into());
    }
    let user_id = hs.users.user_id_for_new_localpart(&req.body.username)?;
    hs.appservices.check_user_free(&user_id, None)?;
    if hs.users.exists(&user_id)? {
        return Err(Error::user_in_use("User ID already taken.").into());
    }
    Ok(get_username_availability::v3::Response::new(true))
}

/// `GET /_matrix/client/v1/register/m.login.registration_token/validity`
pub async fn check_registration_token_validity(
    hs: Homeserver,
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> ApiResult<check_registration_token_validity::v1::Response> {
    let config = &hs.config.registration;
    if !config.enabled {
        return Err(Error::forbidden("Registration has been disabled").into());
    }
    let given = req.body.token.as_bytes();
    let configured =
        config.token.as_ref().is_some_and(|t| hearth_core::util::constant_time_eq(given, t.as_bytes()));
    let valid = configured || hs.registration_tokens.is_usable(&req.body.token)?;
    Ok(check_registration_token_validity::v1::Response::new(valid))
}

/// `GET /_matrix/client/v3/account/whoami`
pub async fn whoami(_hs: Homeserver, req: Ruma<whoami::v3::Request>) -> ApiResult<whoami::v3::Response> {
    let session = req.session()?;
    let mut response = whoami::v3::Response::new(session.user_id.clone(), session.is_guest);
    response.device_id = session.device_id.clone();
    Ok(response)
}

/// `POST /_matrix/client/v3/account/password`
pub async fn change_password(
    hs: Homeserver,
    req: Ruma<change_password::v3::Request>,
) -> ApiResult<change_password::v3::Response> {
    let session = req.session()?.clone();
    let body = req.body;
    hs.rate_limits.peek_user(Action::PasswordChange, &session).await?;
    hs.uiaa
        .authenticate(
            body.auth.as_ref(),
            &hs.reauth_flows(&session.user_id)?,
            "change_password",
            Some(&session.user_id),
        )
        .await?;
    hs.users
        .set_password(&session.user_id, &body.new_password, body.logout_devices, session.device_id.as_deref())
        .await?;
    count_done(hs.rate_limits.check_user(Action::PasswordChange, &session).await);
    Ok(change_password::v3::Response::new())
}

/// `POST /_matrix/client/v3/account/deactivate`
pub async fn deactivate(
    hs: Homeserver,
    req: Ruma<deactivate::v3::Request>,
) -> ApiResult<deactivate::v3::Response> {
    let session = req.session()?.clone();
    hs.uiaa
        .authenticate(
            req.body.auth.as_ref(),
            &hs.reauth_flows(&session.user_id)?,
            "deactivate",
            Some(&session.user_id),
        )
        .await?;
    hs.deactivate_account(&session.user_id, req.body.erase).await?;
    // No identity server binding is ever made, so there is nothing to unbind.
    Ok(deactivate::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport))
}

/// `POST /_matrix/client/v3/user/{userId}/openid/request_token`: a token that lets a third
/// party learn who the user is (through the federation API's `openid/userinfo`), nothing more.
pub async fn request_openid_token(
    hs: Homeserver,
    req: Ruma<request_openid_token::v3::Request>,
) -> ApiResult<request_openid_token::v3::Response> {
    let session = req.session()?;
    if session.user_id != req.body.user_id {
        return Err(Error::forbidden("Cannot request an OpenID token for another user").into());
    }
    let token = hs.users.issue_openid_token(&session.user_id).await?;
    Ok(request_openid_token::v3::Response::new(
        token,
        ruma::authentication::TokenType::Bearer,
        hs.server_name().to_owned(),
        hearth_core::users::OPENID_TOKEN_TTL,
    ))
}

/// Hearth keeps no e-mail addresses or phone numbers on accounts (notification e-mails go to
/// the address an e-mail pusher names): there is nothing to list, and no address can be
/// verified for adding, which clients learn from MSC4178's errcode, as from Synapse without
/// an e-mail configuration.
fn no_threepids() -> Error {
    Error::new(
        ErrorCode::ThreepidMediumNotSupported,
        "Adding third-party identifiers is not supported on this server",
    )
}

/// `GET /_matrix/client/v3/account/3pid`
pub async fn get_3pids(
    _hs: Homeserver,
    req: Ruma<get_3pids::v3::Request>,
) -> ApiResult<get_3pids::v3::Response> {
    req.session()?;
    Ok(get_3pids::v3::Response::new(Vec::new()))
}

/// `POST /_matrix/client/v3/account/3pid/email/requestToken`
pub async fn request_3pid_management_token_via_email(
    _hs: Homeserver,
    _req: Ruma<request_3pid_management_token_via_email::v3::Request>,
) -> ApiResult<request_3pid_management_token_via_email::v3::Response> {
    Err(no_threepids().into())
}

/// `POST /_matrix/client/v3/account/3pid/msisdn/requestToken`
pub async fn request_3pid_management_token_via_msisdn(
    _hs: Homeserver,
    _req: Ruma<request_3pid_management_token_via_msisdn::v3::Request>,
) -> ApiResult<request_3pid_management_token_via_msisdn::v3::Response> {
    Err(no_threepids().into())
}

/// `POST /_matrix/client/v3/account/3pid/add`: no validation session can exist here.
pub async fn add_3pid(
    _hs: Homeserver,
    req: Ruma<add_3pid::v3::Request>,
) -> ApiResult<add_3pid::v3::Response> {
    req.session()?;
    Err(Error::new(ErrorCode::ThreepidAuthFailed, "No validated third-party identifier session matches")
        .into())
}

/// `POST /_matrix/client/v3/account/3pid/bind`: publishing an identifier on an identity server
/// goes through the homeserver, and this one talks to no identity server.
pub async fn bind_3pid(
    _hs: Homeserver,
    req: Ruma<bind_3pid::v3::Request>,
) -> ApiResult<bind_3pid::v3::Response> {
    req.session()?;
    Err(Error::new(ErrorCode::ServerNotTrusted, "This server does not bind identifiers on identity servers")
        .into())
}

/// `POST /_matrix/client/v3/account/3pid/unbind`: nothing was bound through this server, so
/// there is nothing to unbind, which the answer says.
pub async fn unbind_3pid(
    _hs: Homeserver,
    req: Ruma<unbind_3pid::v3::Request>,
) -> ApiResult<unbind_3pid::v3::Response> {
    req.session()?;
    Ok(unbind_3pid::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport))
}

/// `POST /_matrix/client/v3/account/3pid/delete`: the account has none, so none is left after.
pub async fn delete_3pid(
    _hs: Homeserver,
    req: Ruma<delete_3pid::v3::Request>,
) -> ApiResult<delete_3pid::v3::Response> {
    req.session()?;
    Ok(delete_3pid::v3::Response::new(ThirdPartyIdRemovalStatus::NoSupport))
}
