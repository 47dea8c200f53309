//! Synapse's admin API (`/_synapse/admin`), with the paths, shapes and errors that
//! synapse-admin, moderation bots and provisioning scripts call. None of it is in the Matrix
//! spec, so ruma has no types for it: each endpoint is a marker type naming Synapse's method
//! and path, and its handler reads path arguments, query and body with the checks (and errors)
//! Synapse applies. Every endpoint but `server_version` and shared-secret registration needs
//! an admin's access token.

mod media;
mod register;
mod rooms;
mod server;
mod users;

use std::marker::PhantomData;

use axum::http::{self, Method, StatusCode};
use hearth_core::{Error, Homeserver, admin::Page, users::Session};
use ruma::{
    OwnedRoomId, OwnedUserId,
    api::{
        IncomingRequest, Metadata, OutgoingResponse,
        auth_scheme::AccessTokenOptional,
        error::{DeserializationError, Error as MatrixError, IntoHttpError},
        path_builder::SinglePath,
    },
};
use serde::{Serialize, de::DeserializeOwned};

pub use self::{media::*, register::*, rooms::*, server::*, users::*};
use crate::{extract::Ruma, response::JsonBody};

/// An admin endpoint: Synapse's method and path (with `{param}` segments).
pub trait AdminPath: Send + 'static {
    const METHOD: Method;
    const PATH: &'static str;
}

/// Declares marker types of admin endpoints.
macro_rules! admin_paths {
    ($($(#[$doc:meta])* $name:ident: $method:ident $path:literal;)*) => {
        $(
            $(#[$doc])*
            #[derive(Debug)]
            pub struct $name;

            impl $crate::admin::AdminPath for $name {
                const METHOD: axum::http::Method = axum::http::Method::$method;
                const PATH: &'static str = $path;
            }
        )*
    };
}
pub(crate) use admin_paths;

/// An admin request, kept as sent: the handler reads what it needs.
#[derive(Debug)]
pub struct Admin<P> {
    args: Vec<String>,
    query: Vec<(String, String)>,
    body: Vec<u8>,
    _path: PhantomData<P>,
}

impl<P: AdminPath> Metadata for Admin<P> {
    const METHOD: Method = P::METHOD;
    const RATE_LIMITED: bool = false;
    /// Optional so that the handler answers a missing token (401) or a non-admin (403) itself,
    /// and `server_version` needs none.
    type Authentication = AccessTokenOptional;
    type PathBuilder = SinglePath;
    const PATH_BUILDER: SinglePath = SinglePath::new(P::PATH);
}

impl<P: AdminPath> IncomingRequest for Admin<P> {
    type EndpointError = MatrixError;
    type OutgoingResponse = Reply;

    fn try_from_http_request_inner(
        request: http::Request<&[u8]>,
        path_args: &[&str],
    ) -> Result<Self, DeserializationError> {
        let query = request
            .uri()
            .query()
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        Ok(Self {
            args: path_args.iter().map(|a| (*a).to_owned()).collect(),
            query,
            body: request.body().to_vec(),
            _path: PhantomData,
        })
    }
}

impl<P> Admin<P> {
    /// A path argument, percent-decoded.
    fn arg(&self, index: usize) -> Result<&str, Error> {
        self.args.get(index).map(String::as_str).ok_or_else(|| Error::internal("admin path argument missing"))
    }

    fn user_arg(&self, index: usize) -> Result<OwnedUserId, Error> {
        let raw = self.arg(index)?;
        OwnedUserId::try_from(raw).map_err(|e| Error::invalid_param(format!("Invalid user ID {raw}: {e}")))
    }

    fn room_arg(&self, index: usize) -> Result<OwnedRoomId, Error> {
        let raw = self.arg(index)?;
        OwnedRoomId::try_from(raw).map_err(|_| Error::bad_request(format!("{raw} is not a legal room ID")))
    }

    /// The first value of a query parameter.
    fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn int(&self, name: &str) -> Result<Option<u64>, Error> {
        self.param(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    Error::invalid_param(format!("Query parameter {name} must be a positive integer."))
                })
            })
            .transpose()
    }

    fn boolean(&self, name: &str) -> Result<Option<bool>, Error> {
        self.param(name)
            .map(|v| match v {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(Error::invalid_param(format!(
                    "Boolean query parameter '{name}' must be one of ['true', 'false']"
                ))),
            })
            .transpose()
    }

    /// `dir`: whether the list runs backwards (`b`); `default` when absent.
    fn backwards(&self, default: bool) -> Result<bool, Error> {
        match self.param("dir") {
            None => Ok(default),
            Some("f") => Ok(false),
            Some("b") => Ok(true),
            Some(_) => Err(Error::invalid_param("Query parameter 'dir' must be one of ['b', 'f']")),
        }
    }

    fn page(&self) -> Result<Page, Error> {
        let to_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Ok(Page {
            from: self.int("from")?.map_or(0, to_usize),
            limit: self.int("limit")?.map_or(100, to_usize),
        })
    }

    /// The JSON body; an empty one reads as `{}`.
    fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let body: &[u8] = if self.body.is_empty() { b"{}" } else { &self.body };
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|_| Error::not_json("Content not JSON."))?;
        if !value.is_object() {
            return Err(Error::bad_json("Content must be a JSON object."));
        }
        serde_json::from_value(value).map_err(|e| Error::bad_json(format!("Invalid request body: {e}")))
    }

    /// The JSON body, which must be there.
    fn json_required<T: DeserializeOwned>(&self) -> Result<T, Error> {
        if self.body.is_empty() {
            return Err(Error::not_json("Content not JSON."));
        }
        self.json()
    }
}

/// The admin's session, or why there is none.
/// `true`, for body fields Synapse defaults to on.
fn yes() -> bool {
    true
}

fn admin<'a, P>(hs: &Homeserver, req: &'a Ruma<Admin<P>>) -> Result<&'a Session, Error> {
    let session = req.session.as_ref().ok_or_else(|| Error::missing_token("Missing access token"))?;
    hs.require_admin(session)?;
    Ok(session)
}

/// An admin response: a status and a JSON body.
#[derive(Debug)]
pub struct Reply {
    status: StatusCode,
    body: serde_json::Value,
}

impl Reply {
    fn ok(body: impl Serialize) -> Result<Self, Error> {
        Self::with_status(StatusCode::OK, body)
    }

    fn with_status(status: StatusCode, body: impl Serialize) -> Result<Self, Error> {
        Ok(Self { status, body: serde_json::to_value(body).map_err(Error::internal)? })
    }

    fn empty() -> Self {
        Self { status: StatusCode::OK, body: serde_json::json!({}) }
    }
}

impl OutgoingResponse for Reply {
    type Body = JsonBody;

    fn try_into_http_response_inner(self) -> Result<http::Response<JsonBody>, IntoHttpError> {
        let mut response = http::Response::new(JsonBody::new(serde_json::to_vec(&self.body)?));
        *response.status_mut() = self.status;
        Ok(response)
    }
}

/// The result type of admin handlers.
type AdminResult = crate::response::ApiResult<Reply>;
