//! [`Ruma<T>`]: the extractor every handler takes. It reads the body (bounded in size and
//! nesting), authenticates
//! the caller as the endpoint's ruma metadata demands, and parses the ruma request type.

use std::net::{IpAddr, SocketAddr};

use axum::{
    body::Body,
    extract::{ConnectInfo, FromRequest, RawPathParams},
    http::{HeaderMap, Method, Request, header},
};
use hearth_core::{Error, ErrorCode, Homeserver, users::Session};
use ruma::api::{
    IncomingRequest, IncomingRequestExt,
    auth_scheme::{
        AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken,
        NoAuthentication,
    },
    error::{DeserializationError, FromHttpRequestError},
};
use serde::{Deserialize, Serialize};

use crate::response::ApiError;

/// `[client_api]` in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientApiConfig {
    /// Largest request body accepted, in bytes; larger ones get 413 `M_TOO_LARGE`.
    pub max_request_bytes: usize,
    /// Behind a reverse proxy: the client's address is the last one in `X-Forwarded-For`
    /// (the one the proxy added), not the connection's. Only turn it on when every request
    /// comes through the proxy, or clients choose their own address for rate limits.
    pub x_forwarded: bool,
}

impl Default for ClientApiConfig {
    fn default() -> Self {
        Self { max_request_bytes: 1024 * 1024, x_forwarded: false }
    }
}

/// Whether an endpoint wants an access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPolicy {
    Required,
    Optional,
    /// `/register` and `/login`: a token there can only be an application service's, and
    /// says which service acts (never as whom: the body names the user).
    Appservice,
    Ignored,
}

/// Maps ruma's authentication schemes to what the extractor does.
pub trait AuthPolicy {
    const POLICY: TokenPolicy;
}

macro_rules! auth_policy {
    ($($scheme:ty => $policy:ident),* $(,)?) => {
        $(impl AuthPolicy for $scheme { const POLICY: TokenPolicy = TokenPolicy::$policy; })*
    };
}
auth_policy! {
    AccessToken => Required,
    AccessTokenOptional => Optional,
    // Endpoints only an application service calls: its `as_token` is an access token here.
    AppserviceToken => Required,
    AppserviceTokenOptional => Appservice,
    NoAccessToken => Ignored,
    NoAuthentication => Ignored,
}

/// Set on the extra routes of an endpoint whose last path parameter (a state key) may be
/// empty: the router matches `.../state/m.room.name` and `.../state/m.room.name/`, and the
/// extractor supplies the empty parameter ruma expects.
#[derive(Debug, Clone, Copy)]
pub struct EmptyLastParam;

/// Set on the routes of endpoints whose body is the whole point (a profile field, event
/// content): there a missing body is `M_NOT_JSON`, as Synapse answers, not an empty object.
#[derive(Debug, Clone, Copy)]
pub struct BodyRequired;

/// Set per route: whether guest accounts may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestAccess(pub bool);

/// A parsed ruma request and who sent it.
#[derive(Debug)]
pub struct Ruma<T> {
    pub body: T,
    pub session: Option<Session>,
    /// The JSON body as sent, for the few questions ruma's types cannot answer (whether an
    /// optional object with defaults was given at all).
    pub raw_body: axum::body::Bytes,
    /// The query string as sent, for parameters of unstable extensions that ruma's request
    /// types for the same path do not carry (a delayed event's delay on `/send` and `/state`).
    pub query: Option<String>,
    /// On `/register` and `/login`: a token was sent that is no application service's.
    pub unknown_appservice_token: bool,
    /// The client's address (see [`ClientApiConfig::x_forwarded`]).
    pub client_ip: Option<IpAddr>,
}

impl<T> Ruma<T> {
    /// The caller's session; only absent on endpoints whose token is optional or ignored.
    pub fn session(&self) -> Result<&Session, ApiError> {
        self.session.as_ref().ok_or_else(|| ApiError(Error::missing_token("Missing access token")))
    }

    /// A query parameter by name (the first, percent-decoded).
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query.as_deref()?;
        url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }
}

fn access_token<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Result<Option<&'a str>, Error> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| Error::missing_token("Invalid Authorization header"))?;
        let token = value
            .strip_prefix("Bearer ")
            .ok_or_else(|| Error::missing_token("Invalid Authorization header"))?;
        return Ok(Some(token.trim()));
    }
    // The deprecated query parameter is still sent by older clients and bridges.
    Ok(query.and_then(|q| {
        q.split('&').find_map(|pair| pair.strip_prefix("access_token=")).filter(|t| !t.is_empty())
    }))
}

fn parse_error(e: FromHttpRequestError) -> Error {
    match e {
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => {
            Error::bad_json(format!("Invalid request body: {e}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Ident(e)) => {
            Error::invalid_param(format!("Invalid identifier: {e}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Query(e)) => {
            Error::invalid_param(format!("Invalid query parameters: {e}"))
        }
        FromHttpRequestError::Deserialization(e) => Error::bad_json(format!("Invalid request: {e}")),
        FromHttpRequestError::MethodMismatch { .. } => {
            Error::new(ErrorCode::MethodNotAllowed, "Method not allowed")
        }
        other => Error::bad_json(other.to_string()),
    }
}

/// Runs ruma's parser. Some of ruma's hand-written deserializers index into the JSON object
/// and panic on a missing field (a login body without `type`), so a panic here is a malformed
/// body, answered like any other, and never reaches the catch-all as a 500.
fn parse_request<T: IncomingRequest>(request: Request<&[u8]>, path_args: &[&str]) -> Result<T, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| T::try_from_http_request(request, path_args)))
        .map_err(|_| {
            // Worth fixing where it happens (as the login body's `type` is checked first).
            tracing::warn!(endpoint = std::any::type_name::<T>(), "the request parser panicked");
            Error::bad_json("Invalid request body: a required field is missing or malformed")
        })?
        .map_err(parse_error)
}

/// The client's address: the connection's, or behind a trusted proxy the last address in
/// `X-Forwarded-For`.
pub fn client_ip(parts: &axum::http::request::Parts) -> Option<IpAddr> {
    let forwarded = parts.extensions.get::<ClientApiConfig>().is_some_and(|c| c.x_forwarded);
    if forwarded {
        let last = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|v| v.trim().parse().ok());
        if last.is_some() {
            return last;
        }
    }
    parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// The key of per-address rate limits: a request without a known address (not over TCP) is
/// limited with the others that lack one.
pub fn address(ip: Option<IpAddr>) -> String {
    ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
}

/// What every extractor does before the body: path parameters, the access token as the
/// endpoint's auth scheme demands, guest gating, device activity.
async fn prepare(
    parts: &mut axum::http::request::Parts,
    hs: &Homeserver,
    policy: TokenPolicy,
    allow_locked: bool,
) -> Result<Prepared, Error> {
    let guests_allowed = parts.extensions.get::<GuestAccess>().is_some_and(|g| g.0);
    let path_params =
        <RawPathParams as axum::extract::FromRequestParts<Homeserver>>::from_request_parts(parts, hs)
            .await
            .map_err(|e| Error::invalid_param(format!("Invalid path: {e}")))?;
    let mut path_args: Vec<String> = path_params.iter().map(|(_, v)| v.to_owned()).collect();
    if parts.extensions.get::<EmptyLastParam>().is_some() {
        path_args.push(String::new());
    }

    let mut unknown_appservice_token = false;
    let session = match policy {
        TokenPolicy::Ignored => None,
        TokenPolicy::Appservice => match access_token(&parts.headers, parts.uri.query())? {
            Some(token) => {
                let session = hs.appservice_session(token);
                unknown_appservice_token = session.is_none();
                session
            }
            None => None,
        },
        policy => match access_token(&parts.headers, parts.uri.query())? {
            Some(token) => Some(hs.authenticate(token, parts.uri.query())?),
            None if policy == TokenPolicy::Required => {
                return Err(Error::missing_token("Missing access token"));
            }
            None => None,
        },
    };
    if let Some(session) = &session {
        if session.is_guest && !guests_allowed {
            return Err(Error::guest_access_forbidden("Guest access not allowed"));
        }
        if !allow_locked {
            hs.users.check_not_locked(&session.user_id)?;
        }
        let ip = client_ip(parts).map(|ip| ip.to_string());
        // Bounded: a header is the client's to fill, the record is ours to keep.
        let agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(512).collect::<String>());
        // Inline rather than spawned: it writes at most once per device every few minutes, and
        // a detached task would outlive the server's shutdown holding the database open.
        if let Some(device) = &session.device_id
            && let Err(error) = hs.users.touch_device(&session.user_id, device, ip, agent).await
        {
            tracing::warn!(%error, "could not record device activity");
        }
    }
    Ok(Prepared { path_args, session, unknown_appservice_token })
}

struct Prepared {
    path_args: Vec<String>,
    session: Option<Session>,
    unknown_appservice_token: bool,
}

/// Endpoints a locked account may still call: signing out.
fn allowed_when_locked<T: 'static>() -> bool {
    use ruma::api::client::session::{logout, logout_all};
    use std::any::TypeId;
    let id = TypeId::of::<T>();
    id == TypeId::of::<logout::v3::Request>() || id == TypeId::of::<logout_all::v3::Request>()
}

impl<T> FromRequest<Homeserver> for Ruma<T>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: AuthPolicy,
{
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, hs: &Homeserver) -> Result<Self, ApiError> {
        let (mut parts, body) = req.into_parts();
        let limit = parts.extensions.get::<ClientApiConfig>().cloned().unwrap_or_default().max_request_bytes;

        let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
            let too_large = std::error::Error::source(&e)
                .is_some_and(<dyn std::error::Error + 'static>::is::<http_body_util::LengthLimitError>);
            if too_large {
                Error::too_large(format!("Request body is larger than {limit} bytes"))
            } else {
                Error::bad_json(format!("Could not read the request body: {e}"))
            }
        })?;
        // JSON is UTF-8 (RFC 8259), and skipping over a string does not check its bytes.
        if !bytes.is_empty()
            && (std::str::from_utf8(&bytes).is_err()
                || serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err())
        {
            return Err(Error::not_json("Content not JSON.").into());
        }
        // The one nesting limit, checked where every JSON body enters: what passes stays
        // readable inside every envelope it is later served in.
        hearth_core::json::check_depth(&bytes, hearth_core::json::MAX_DEPTH)?;
        let body_required = parts.extensions.get::<BodyRequired>().is_some();
        let Prepared { path_args, session, unknown_appservice_token } =
            prepare(&mut parts, hs, T::Authentication::POLICY, allowed_when_locked::<T>()).await?;

        // Clients (matrix-nio's join, for one) send no body where an empty object is meant;
        // Synapse reads that as `{}`, and so do we, except where the body is the whole point.
        let bytes = if bytes.is_empty() && matches!(parts.method, Method::POST | Method::PUT) {
            if body_required {
                return Err(Error::not_json("Content not JSON.").into());
            }
            axum::body::Bytes::from_static(b"{}")
        } else {
            bytes
        };
        let path_args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        let query = parts.uri.query().map(str::to_owned);
        let client_ip = client_ip(&parts);
        let http_request = Request::from_parts(parts, bytes.as_ref());
        Ok(Self {
            body: parse_request::<T>(http_request, &path_args)?,
            session,
            raw_body: bytes,
            query,
            unknown_appservice_token,
            client_ip,
        })
    }
}

/// An upload: the ruma request parsed from everything but the body (its `file` stays empty),
/// and the body as a stream, so that media of any size goes to disk without passing through
/// memory or the JSON size limit.
#[derive(Debug)]
pub struct Upload<T> {
    pub body: T,
    pub session: Session,
    pub stream: Body,
    /// The declared length, when the client sent one.
    pub content_length: Option<u64>,
}

impl<T> FromRequest<Homeserver> for Upload<T>
where
    T: IncomingRequest + Send,
    T::Authentication: AuthPolicy,
{
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, hs: &Homeserver) -> Result<Self, ApiError> {
        let (mut parts, stream) = req.into_parts();
        let Prepared { path_args, session, .. } =
            prepare(&mut parts, hs, T::Authentication::POLICY, false).await?;
        let session = session.ok_or_else(|| Error::missing_token("Missing access token"))?;
        let content_length = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let path_args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        let empty: &[u8] = &[];
        let body = parse_request::<T>(Request::from_parts(parts, empty), &path_args)?;
        Ok(Self { body, session, stream, content_length })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{Method, Request};
    use hearth_core::ErrorCode;
    use ruma::api::{
        IncomingRequest, Metadata,
        auth_scheme::NoAuthentication,
        error::{DeserializationError, Error as MatrixError},
        path_builder::SinglePath,
    };

    use super::parse_request;
    use crate::response::Json;

    /// An endpoint whose parser panics, as ruma's login parser did on a body without `type`.
    #[derive(Debug)]
    struct Panicky;

    impl Metadata for Panicky {
        const METHOD: Method = Method::POST;
        const RATE_LIMITED: bool = false;
        type Authentication = NoAuthentication;
        type PathBuilder = SinglePath;
        const PATH_BUILDER: SinglePath = SinglePath::new("/_matrix/client/v3/panicky");
    }

    impl IncomingRequest for Panicky {
        type EndpointError = MatrixError;
        type OutgoingResponse = Json<()>;

        fn try_from_http_request_inner(
            _request: Request<&[u8]>,
            _path_args: &[&str],
        ) -> Result<Self, DeserializationError> {
            panic!("no entry found for key");
        }
    }

    #[test]
    fn a_panicking_parser_is_a_malformed_body() {
        let request = Request::builder().method(Method::POST).uri("/_matrix/client/v3/panicky");
        let body: &[u8] = b"{}";
        let error = parse_request::<Panicky>(request.body(body).unwrap(), &[]).unwrap_err();
        assert_eq!(error.code(), ErrorCode::BadJson);
    }
}
