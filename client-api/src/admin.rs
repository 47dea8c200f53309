//! Synapse's shared-secret registration (`/_synapse/admin/v1/register`), which provisioning
//! scripts, bridges and test suites use to create users, admins included. The endpoints are not
//! in the Matrix spec, so they are declared here against ruma's endpoint traits.

use hearth_core::{Error, Homeserver, users::SharedSecretRegistration};

use crate::{extract::Ruma, response::ApiResult};

/// The endpoint types implement ruma's request and response traits by hand: they are not in the
/// spec, so ruma does not define them, and the route table treats them like any other endpoint.
mod endpoint {
    use axum::http::{self, Method};
    use ruma::api::{
        IncomingRequest, Metadata,
        auth_scheme::NoAccessToken,
        error::{DeserializationError, Error as MatrixError},
        path_builder::SinglePath,
    };
    use serde::{Serialize, de::DeserializeOwned};

    pub use crate::response::Json;

    pub const REGISTER_PATH: &str = "/_synapse/admin/v1/register";

    /// `GET /_synapse/admin/v1/register`
    pub struct GetNonce;

    impl Metadata for GetNonce {
        const METHOD: Method = Method::GET;
        const RATE_LIMITED: bool = true;
        type Authentication = NoAccessToken;
        type PathBuilder = SinglePath;
        const PATH_BUILDER: SinglePath = SinglePath::new(REGISTER_PATH);
    }

    #[derive(Debug, Serialize)]
    pub struct Nonce {
        pub nonce: String,
    }

    impl IncomingRequest for GetNonce {
        type EndpointError = MatrixError;
        type OutgoingResponse = Json<Nonce>;

        fn try_from_http_request_inner(
            _request: http::Request<&[u8]>,
            _path_args: &[&str],
        ) -> Result<Self, DeserializationError> {
            Ok(Self)
        }
    }

    /// `POST /_synapse/admin/v1/register`
    #[derive(Debug, serde::Deserialize)]
    pub struct Register {
        pub nonce: String,
        pub username: String,
        #[serde(default)]
        pub displayname: Option<String>,
        pub password: String,
        #[serde(default)]
        pub admin: bool,
        #[serde(default)]
        pub user_type: Option<String>,
        pub mac: String,
    }

    impl Metadata for Register {
        const METHOD: Method = Method::POST;
        const RATE_LIMITED: bool = true;
        type Authentication = NoAccessToken;
        type PathBuilder = SinglePath;
        const PATH_BUILDER: SinglePath = SinglePath::new(REGISTER_PATH);
    }

    #[derive(Debug, Serialize)]
    pub struct Registered {
        pub access_token: String,
        pub user_id: ruma::OwnedUserId,
        pub home_server: ruma::OwnedServerName,
        pub device_id: ruma::OwnedDeviceId,
    }

    fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, DeserializationError> {
        Ok(serde_json::from_slice(body)?)
    }

    impl IncomingRequest for Register {
        type EndpointError = MatrixError;
        type OutgoingResponse = Json<Registered>;

        fn try_from_http_request_inner(
            request: http::Request<&[u8]>,
            _path_args: &[&str],
        ) -> Result<Self, DeserializationError> {
            from_json(request.body())
        }
    }
}

pub use endpoint::{GetNonce, Register};
use endpoint::{Json, Nonce, Registered};

fn shared_secret(hs: &Homeserver) -> Result<&str, Error> {
    hs.config
        .registration
        .shared_secret
        .as_deref()
        .ok_or_else(|| Error::bad_request("Shared secret registration is not enabled"))
}

/// `GET /_synapse/admin/v1/register`
pub async fn get_registration_nonce(hs: Homeserver, _req: Ruma<GetNonce>) -> ApiResult<Json<Nonce>> {
    shared_secret(&hs)?;
    Ok(Json(Nonce { nonce: hs.users.new_registration_nonce().await? }))
}

/// `POST /_synapse/admin/v1/register`
pub async fn shared_secret_register(hs: Homeserver, req: Ruma<Register>) -> ApiResult<Json<Registered>> {
    let secret = shared_secret(&hs)?;
    let b = req.body;
    let registered = hs
        .users
        .register_with_shared_secret(
            secret,
            SharedSecretRegistration {
                nonce: b.nonce,
                username: b.username,
                displayname: b.displayname,
                password: b.password,
                admin: b.admin,
                user_type: b.user_type,
                mac: b.mac,
            },
        )
        .await?;
    let login =
        registered.login.ok_or_else(|| Error::internal("shared-secret registration did not log in"))?;
    Ok(Json(Registered {
        access_token: login.access_token,
        home_server: registered.user_id.server_name().to_owned(),
        user_id: registered.user_id,
        device_id: login.device_id,
    }))
}
