//! Logging in (password, login token, JWT), refreshing and logging out.

use hearth_core::{Error, Homeserver, auth::jwt::JWT_LOGIN_TYPE, ratelimit::Action};
use ruma::{
    OwnedMxcUri, OwnedUserId,
    api::{
        IncomingRequest, Metadata,
        client::{
            session::{
                get_login_types::{
                    self,
                    v3::{
                        ApplicationServiceLoginType, IdentityProvider, IdentityProviderBrand, LoginType,
                        PasswordLoginType, SsoLoginType, TokenLoginType,
                    },
                },
                login::{self, v3::LoginInfo},
                logout, logout_all, refresh_token,
            },
            uiaa::UserIdentifier,
        },
        error::DeserializationError,
    },
};

use crate::{extract::Ruma, response::ApiResult};

/// `GET /_matrix/client/v3/login`
pub async fn get_login_types(
    hs: Homeserver,
    _req: Ruma<get_login_types::v3::Request>,
) -> ApiResult<get_login_types::v3::Response> {
    let mut types = vec![LoginType::Password(PasswordLoginType::new())];
    if hs.sso.enabled() {
        let providers = hs
            .sso
            .providers()
            .into_iter()
            .map(|p| {
                let mut idp = IdentityProvider::new(p.id, p.name);
                idp.brand = p.brand.map(|b| IdentityProviderBrand::from(b.as_str()));
                idp.icon = p.icon.map(OwnedMxcUri::from);
                idp
            })
            .collect();
        let mut sso = SsoLoginType::new();
        sso.identity_providers = providers;
        types.push(LoginType::Sso(sso));
        types.push(LoginType::Token(TokenLoginType::new()));
    }
    if !hs.appservices.all().is_empty() {
        types.push(LoginType::ApplicationService(ApplicationServiceLoginType::new()));
    }
    if hs.jwt.is_some() {
        types.push(LoginType::new(JWT_LOGIN_TYPE, serde_json::Map::new()).map_err(Error::internal)?);
    }
    Ok(get_login_types::v3::Response::new(types))
}

/// The account a password login names, when the password is right.
async fn password_user(hs: &Homeserver, password: &login::v3::Password) -> Result<OwnedUserId, Error> {
    #[allow(deprecated)]
    let named = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(id)), _) => Some(id.user.as_str()),
        (None, Some(user)) => Some(user.as_str()),
        _ => None,
    };
    let Some(named) = named else {
        return Err(Error::forbidden("Invalid login identifier"));
    };
    let invalid = || Error::forbidden("Invalid username or password");
    let user_id = hs.users.resolve_login_user(named)?.ok_or_else(invalid)?;
    if hs.users.account(&user_id)?.is_some_and(|a| a.deactivated) {
        return Err(Error::user_deactivated("This account has been deactivated"));
    }
    // Guessing is what this limits: an account past its failures is refused before its
    // password is even checked, and only failures count.
    hs.rate_limits.peek(Action::LoginFailed, user_id.as_str()).await?;
    if !hs.users.check_password(&user_id, &password.password).await? {
        tracing::info!(%user_id, "failed password login");
        hs.rate_limits.check(Action::LoginFailed, user_id.as_str()).await?;
        return Err(invalid());
    }
    Ok(user_id)
}

/// ruma's login request, with the body's `type` checked first: ruma's parser panics on a body
/// without one (it indexes the object), and clients get `M_BAD_JSON` instead.
pub struct Login(login::v3::Request);

type RumaLogin = login::v3::Request;

impl Metadata for Login {
    const METHOD: axum::http::Method = <RumaLogin as Metadata>::METHOD;
    const RATE_LIMITED: bool = <RumaLogin as Metadata>::RATE_LIMITED;
    type Authentication = <RumaLogin as Metadata>::Authentication;
    type PathBuilder = <RumaLogin as Metadata>::PathBuilder;
    const PATH_BUILDER: Self::PathBuilder = <RumaLogin as Metadata>::PATH_BUILDER;
}

impl IncomingRequest for Login {
    type EndpointError = <RumaLogin as IncomingRequest>::EndpointError;
    type OutgoingResponse = login::v3::Response;

    fn try_from_http_request_inner(
        request: axum::http::Request<&[u8]>,
        path_args: &[&str],
    ) -> Result<Self, DeserializationError> {
        #[derive(serde::Deserialize)]
        struct Typed<'a> {
            #[serde(rename = "type", borrow)]
            _type: std::borrow::Cow<'a, str>,
        }
        serde_json::from_slice::<Typed<'_>>(request.body()).map_err(DeserializationError::Json)?;
        RumaLogin::try_from_http_request_inner(request, path_args).map(Self)
    }
}

/// `POST /_matrix/client/v3/login`
pub async fn login(hs: Homeserver, req: Ruma<Login>) -> ApiResult<login::v3::Response> {
    let body = req.body.0;
    // Services log their users in as they need to, like Synapse lets them.
    if !matches!(body.login_info, LoginInfo::ApplicationService(_)) {
        hs.rate_limits.check(Action::LoginAddress, &crate::extract::address(req.client_ip)).await?;
    }
    let user_id = match &body.login_info {
        LoginInfo::ApplicationService(info) => {
            let service = hs.acting_appservice(req.session.as_ref(), req.unknown_appservice_token)?;
            #[allow(deprecated)]
            let named = match (&info.identifier, &info.user) {
                (Some(UserIdentifier::Matrix(id)), _) => id.user.clone(),
                (None, Some(user)) => user.clone(),
                _ => return Err(Error::invalid_param("Invalid login identifier").into()),
            };
            hs.appservice_login_user(&service, &named)?
        }
        LoginInfo::Password(password) => password_user(&hs, password).await?,
        LoginInfo::Token(token) => hs.users.redeem_login_token(&token.token).await?,
        info if info.login_type() == JWT_LOGIN_TYPE => {
            let data = info.data();
            let token = data
                .get("token")
                .and_then(serde_json::Value::as_str)
                .ok_or_else(|| Error::forbidden("Token field for JWT is missing"))?;
            hs.jwt_login_user(token).await?
        }
        _ => return Err(Error::bad_request("Unknown login type").into()),
    };
    let account = hs.users.account(&user_id)?.ok_or_else(|| Error::forbidden("Invalid login"))?;
    if account.deactivated {
        return Err(Error::user_deactivated("This account has been deactivated").into());
    }
    if account.locked {
        return Err(Error::user_locked("User account has been locked").into());
    }
    if !matches!(body.login_info, LoginInfo::ApplicationService(_)) {
        hs.rate_limits.check(Action::LoginAccount, user_id.as_str()).await?;
    }
    let session = hs
        .users
        .create_session(
            &user_id,
            body.device_id,
            body.initial_device_display_name,
            account.is_guest,
            body.refresh_token,
        )
        .await?;
    tracing::info!(%user_id, device_id = %session.device_id, login_type = body.login_info.login_type(), "logged in");
    let mut response = login::v3::Response::new(user_id, session.access_token, session.device_id);
    response.refresh_token = session.refresh_token;
    response.expires_in = session.expires_in;
    Ok(response)
}

/// `POST /_matrix/client/v3/refresh`
pub async fn refresh_token(
    hs: Homeserver,
    req: Ruma<refresh_token::v3::Request>,
) -> ApiResult<refresh_token::v3::Response> {
    let session = hs.users.refresh(&req.body.refresh_token).await?;
    let mut response = refresh_token::v3::Response::new(session.access_token);
    response.refresh_token = session.refresh_token;
    response.expires_in_ms = session.expires_in;
    Ok(response)
}

/// `POST /_matrix/client/v3/logout`
pub async fn logout(hs: Homeserver, req: Ruma<logout::v3::Request>) -> ApiResult<logout::v3::Response> {
    let session = req.session()?;
    hs.users.delete_devices(&session.user_id, &[session.device()?.to_owned()]).await?;
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

/// `POST /_matrix/client/v1/login/get_token`: signing in a new device from an existing session
/// (MSC3882) is not offered (`m.get_login_token` is off in `/capabilities`), so it is refused
/// rather than left unknown.
pub async fn get_login_token(
    _hs: Homeserver,
    req: Ruma<ruma::api::client::session::get_login_token::v1::Request>,
) -> ApiResult<ruma::api::client::session::get_login_token::v1::Response> {
    req.session()?;
    Err(Error::forbidden("Signing in with a token from an existing session is not enabled on this server")
        .into())
}
