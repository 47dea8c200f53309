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

mod tokens {
    use hearth_core::auth::registration_tokens::RegistrationTokenRecord;
    use hearth_core::{Error, Homeserver};
    use serde_json::{Value, json};

    use crate::{
        admin::{Admin, AdminResult, Reply, admin, admin_paths},
        extract::Ruma,
    };

    admin_paths! {
        ListTokens: GET "/_synapse/admin/v1/registration_tokens";
        NewToken: POST "/_synapse/admin/v1/registration_tokens/new";
        GetToken: GET "/_synapse/admin/v1/registration_tokens/{token}";
        PutToken: PUT "/_synapse/admin/v1/registration_tokens/{token}";
        DeleteToken: DELETE "/_synapse/admin/v1/registration_tokens/{token}";
    }

    fn token_json(token: &str, r: &RegistrationTokenRecord) -> Value {
        json!({
            "token": token,
            "uses_allowed": r.uses_allowed,
            "pending": r.pending,
            "completed": r.completed,
            "expiry_time": r.expiry_time,
        })
    }

    /// A field that may be a non-negative integer or null: `Some(None)` for null.
    fn nullable_int(body: &Value, name: &str, message: &'static str) -> Result<Option<Option<u64>>, Error> {
        match body.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => v.as_u64().map(|n| Some(Some(n))).ok_or_else(|| Error::invalid_param(message)),
        }
    }

    fn uses_allowed(body: &Value) -> Result<Option<Option<u64>>, Error> {
        nullable_int(body, "uses_allowed", "uses_allowed must be a non-negative integer or null")
    }

    fn expiry_time(body: &Value) -> Result<Option<Option<u64>>, Error> {
        nullable_int(body, "expiry_time", "expiry_time must be an integer or null")
    }

    /// `GET /_synapse/admin/v1/registration_tokens[?valid=true|false]`
    pub async fn list_registration_tokens(hs: Homeserver, req: Ruma<Admin<ListTokens>>) -> AdminResult {
        admin(&hs, &req)?;
        let valid = req.body.boolean("valid")?;
        let tokens: Vec<Value> =
            hs.registration_tokens.list(valid)?.iter().map(|(t, r)| token_json(t, r)).collect();
        Ok(Reply::ok(json!({ "registration_tokens": tokens }))?)
    }

    /// `POST /_synapse/admin/v1/registration_tokens/new`
    pub async fn new_registration_token(hs: Homeserver, req: Ruma<Admin<NewToken>>) -> AdminResult {
        admin(&hs, &req)?;
        let body: Value = req.body.json_required()?;
        let token = match body.get("token") {
            None => None,
            Some(Value::String(t)) => Some(t.clone()),
            Some(_) => return Err(Error::invalid_param("token must be a string").into()),
        };
        let length = match body.get("length") {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| Error::invalid_param("length must be an integer"))?),
        };
        let (token, record) = hs.registration_tokens.create(
            token,
            length,
            uses_allowed(&body)?.flatten(),
            expiry_time(&body)?.flatten(),
        )?;
        Ok(Reply::ok(token_json(&token, &record))?)
    }

    fn not_found(token: &str) -> Error {
        Error::not_found(format!("No such registration token: {token}"))
    }

    /// `GET /_synapse/admin/v1/registration_tokens/{token}`
    pub async fn get_registration_token(hs: Homeserver, req: Ruma<Admin<GetToken>>) -> AdminResult {
        admin(&hs, &req)?;
        let token = req.body.arg(0)?;
        let record = hs.registration_tokens.get(token)?.ok_or_else(|| not_found(token))?;
        Ok(Reply::ok(token_json(token, &record))?)
    }

    /// `PUT /_synapse/admin/v1/registration_tokens/{token}`: `uses_allowed` and `expiry_time`.
    pub async fn put_registration_token(hs: Homeserver, req: Ruma<Admin<PutToken>>) -> AdminResult {
        admin(&hs, &req)?;
        let token = req.body.arg(0)?;
        let body: Value = req.body.json_required()?;
        let record = hs.registration_tokens.update(token, uses_allowed(&body)?, expiry_time(&body)?)?;
        Ok(Reply::ok(token_json(token, &record))?)
    }

    /// `DELETE /_synapse/admin/v1/registration_tokens/{token}`
    pub async fn delete_registration_token(hs: Homeserver, req: Ruma<Admin<DeleteToken>>) -> AdminResult {
        admin(&hs, &req)?;
        hs.registration_tokens.delete(req.body.arg(0)?)?;
        Ok(Reply::empty())
    }
}

pub use tokens::*;
