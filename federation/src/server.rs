//! The endpoints other servers call. Every request but the key endpoints carries an X-Matrix
//! signature, checked against the origin's published keys before the handler runs; the route
//! table comes from ruma's metadata.

use std::{collections::BTreeSet, future::Future};

use axum::{
    Router,
    body::Body,
    extract::{FromRequest, RawPathParams, Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{MethodFilter, on},
};
use hearth_core::{Error, ErrorCode, Homeserver, ratelimit::Action};
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerName, UInt,
    api::{
        IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt,
        auth_scheme::NoAuthentication,
        error::StandardErrorBody,
        federation::{
            authenticated_media::{get_content, get_content_thumbnail},
            authentication::{ServerSignatures, XMatrix},
            authorization::get_event_authorization,
            backfill::get_backfill,
            directory::{get_public_rooms, get_public_rooms_filtered},
            discovery::{
                get_remote_server_keys, get_remote_server_keys_batch, get_server_keys, get_server_version,
            },
            event::get_room_state,
            event::{get_event, get_missing_events, get_room_state_ids},
            membership::{
                create_invite, create_join_event, create_knock_event, create_leave_event, prepare_join_event,
                prepare_knock_event, prepare_leave_event,
            },
            query::{get_profile_information, get_room_information},
            transactions::send_transaction_message,
        },
        path_builder::PathBuilder,
    },
    signatures::PublicKeyMap,
};
use serde_json::value::RawValue;

use crate::members;

/// Largest request body accepted: a full transaction of large PDUs.
const MAX_BODY: usize = 20 * 1024 * 1024;

/// What a handler may fail with: core's error, rendered as a Matrix error.
pub struct FedError(Error);

impl<E: Into<Error>> From<E> for FedError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for FedError {
    fn into_response(self) -> Response {
        let (status, kind) = self.0.status_and_kind();
        let message = if self.0.is_internal() {
            tracing::error!(error = %self.0, "federation request failed with an internal error");
            "Internal server error".to_owned()
        } else {
            self.0.to_string()
        };
        let body = serde_json::to_vec(&StandardErrorBody::new(kind, message)).unwrap_or_default();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        if let Some(secs) = self.0.retry_after_header()
            && let Ok(value) = header::HeaderValue::from_str(&secs)
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

struct Reply<T>(T);

impl<T: OutgoingResponse> IntoResponse for Reply<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<Vec<u8>>() {
            Ok(mut response) => {
                crate::media::close_multipart(&mut response);
                response.map(Body::from)
            }
            Err(e) => FedError(Error::internal(format!("serializing a response: {e}"))).into_response(),
        }
    }
}

pub(crate) type FedResult<T> = Result<T, FedError>;

/// Whether an endpoint needs an X-Matrix signature.
pub trait ServerAuth {
    const SIGNED: bool;
}

impl ServerAuth for ServerSignatures {
    const SIGNED: bool = true;
}

impl ServerAuth for NoAuthentication {
    const SIGNED: bool = false;
}

/// A parsed request and, for signed endpoints, the server that provably sent it.
pub struct Fed<T> {
    pub body: T,
    origin: Option<OwnedServerName>,
}

impl<T> Fed<T> {
    pub(crate) fn origin(&self) -> FedResult<&OwnedServerName> {
        self.origin.as_ref().ok_or_else(|| FedError(Error::new(ErrorCode::Unauthorized, "Unsigned request")))
    }
}

fn unauthorized(message: impl Into<String>) -> FedError {
    FedError(Error::new(ErrorCode::Unauthorized, message.into()))
}

impl<T> FromRequest<Homeserver> for Fed<T>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: ServerAuth,
{
    type Rejection = FedError;

    async fn from_request(req: Request, hs: &Homeserver) -> Result<Self, FedError> {
        let (mut parts, body) = req.into_parts();
        let params = <RawPathParams as axum::extract::FromRequestParts<Homeserver>>::from_request_parts(
            &mut parts, hs,
        )
        .await
        .map_err(|e| Error::invalid_param(format!("Invalid path: {e}")))?;
        let args: Vec<String> = params.iter().map(|(_, v)| v.to_owned()).collect();
        let bytes = axum::body::to_bytes(body, MAX_BODY)
            .await
            .map_err(|e| Error::too_large(format!("Could not read the request body: {e}")))?;
        // A transaction is checked PDU by PDU and EDU by EDU (`receive_transaction`), so that one
        // item too deep costs its sender that item, not the whole transaction.
        if std::any::TypeId::of::<T>() != std::any::TypeId::of::<send_transaction_message::v1::Request>() {
            hearth_core::json::check_depth(&bytes, hearth_core::json::MAX_FEDERATION_BODY_DEPTH)?;
        }
        let request = http::Request::from_parts(parts, bytes.as_ref());
        let origin = if T::Authentication::SIGNED {
            let xmatrix = XMatrix::extract_from_http_headers(request.headers())
                .map_err(|e| unauthorized(format!("Missing or malformed X-Matrix authorization: {e}")))?;
            let keys = hs
                .verify_keys(&xmatrix.origin, &[xmatrix.key.to_string()])
                .await
                .map_err(|e| unauthorized(format!("Cannot get the keys of {}: {e}", xmatrix.origin)))?;
            let map = PublicKeyMap::from([(xmatrix.origin.to_string(), keys)]);
            xmatrix
                .verify_http_request(&request, hs.server_name(), &map)
                .map_err(|e| unauthorized(format!("Invalid X-Matrix signature: {e}")))?;
            // After the signature, so that nobody spends another server's allowance.
            hs.rate_limits.check(Action::Federation, xmatrix.origin.as_str()).await?;
            // The peer is evidently up: anything queued for it goes now rather than after backoff.
            hs.federation.poke([xmatrix.origin.as_ref()]);
            Some(xmatrix.origin)
        } else {
            None
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let body = T::try_from_http_request(request, &args)
            .map_err(|e| Error::bad_json(format!("Invalid request: {e}")))?;
        Ok(Self { body, origin })
    }
}

trait RouterExt {
    fn fed<T, H, F>(self, handler: H) -> Self
    where
        T: IncomingRequest + Send + 'static,
        T::Authentication: ServerAuth,
        T::OutgoingResponse: Send,
        H: Fn(Homeserver, Fed<T>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = FedResult<T::OutgoingResponse>> + Send + 'static;
}

impl RouterExt for Router<Homeserver> {
    fn fed<T, H, F>(self, handler: H) -> Self
    where
        T: IncomingRequest + Send + 'static,
        T::Authentication: ServerAuth,
        T::OutgoingResponse: Send,
        H: Fn(Homeserver, Fed<T>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = FedResult<T::OutgoingResponse>> + Send + 'static,
    {
        let filter = MethodFilter::try_from(T::METHOD).expect("ruma endpoints use standard methods");
        let paths: BTreeSet<&'static str> = T::PATH_BUILDER.all_paths().collect();
        paths.into_iter().fold(self, |router, path| {
            let handler = handler.clone();
            router.route(
                path,
                on(filter, move |State(hs): State<Homeserver>, req: Fed<T>| async move {
                    handler(hs, req).await.map(Reply)
                }),
            )
        })
    }
}

/// The Server-Server API and the key endpoints.
pub fn router(hs: Homeserver) -> Router {
    Router::new()
        .fed::<get_server_keys::v2::Request, _, _>(get_server_keys)
        .fed::<get_server_version::v1::Request, _, _>(get_server_version)
        .fed::<get_remote_server_keys::v2::Request, _, _>(crate::notary::get_remote_server_keys)
        .fed::<get_remote_server_keys_batch::v2::Request, _, _>(crate::notary::get_remote_server_keys_batch)
        .fed::<send_transaction_message::v1::Request, _, _>(send_transaction_message)
        .fed::<prepare_join_event::v1::Request, _, _>(prepare_join_event)
        .fed::<create_join_event::v2::Request, _, _>(create_join_event)
        .fed::<crate::legacy::SendJoinV1, _, _>(crate::legacy::create_join_event_v1)
        .fed::<crate::legacy::SendLeaveV1, _, _>(crate::legacy::create_leave_event_v1)
        .fed::<get_event::v1::Request, _, _>(get_event)
        .fed::<get_missing_events::v1::Request, _, _>(get_missing_events)
        .fed::<get_room_state_ids::v1::Request, _, _>(get_room_state_ids)
        .fed::<create_invite::v2::Request, _, _>(members::create_invite)
        .fed::<prepare_leave_event::v1::Request, _, _>(members::prepare_leave_event)
        .fed::<create_leave_event::v2::Request, _, _>(members::create_leave_event)
        .fed::<prepare_knock_event::v1::Request, _, _>(members::prepare_knock_event)
        .fed::<create_knock_event::v1::Request, _, _>(members::create_knock_event)
        .fed::<ruma::api::federation::device::get_devices::v1::Request, _, _>(crate::devices::get_devices)
        .fed::<ruma::api::federation::keys::get_keys::v1::Request, _, _>(crate::devices::get_keys)
        .fed::<ruma::api::federation::keys::claim_keys::v1::Request, _, _>(crate::devices::claim_keys)
        .fed::<get_backfill::v1::Request, _, _>(crate::history::get_backfill)
        .fed::<get_event_authorization::v1::Request, _, _>(crate::history::get_event_authorization)
        .fed::<get_room_state::v1::Request, _, _>(crate::history::get_room_state)
        .fed::<get_profile_information::v1::Request, _, _>(crate::query::get_profile_information)
        .fed::<get_content::v1::Request, _, _>(crate::media::get_content)
        .fed::<get_content_thumbnail::v1::Request, _, _>(crate::media::get_content_thumbnail)
        .fed::<get_room_information::v1::Request, _, _>(crate::query::get_room_information)
        .fed::<ruma::api::federation::space::get_hierarchy::v1::Request, _, _>(crate::query::get_hierarchy)
        .fed::<get_public_rooms::v1::Request, _, _>(crate::query::get_public_rooms)
        .fed::<ruma::api::federation::openid::get_openid_userinfo::v1::Request, _, _>(
            crate::query::get_openid_userinfo,
        )
        .fed::<get_public_rooms_filtered::v1::Request, _, _>(crate::query::get_public_rooms_filtered)
        .fallback(|| async { FedError(Error::new(ErrorCode::Unrecognized, "Unrecognized request")) })
        .method_not_allowed_fallback(|| async {
            FedError(Error::new(ErrorCode::MethodNotAllowed, "Method not allowed"))
        })
        .with_state(hs)
}

/// `GET /_matrix/key/v2/server`
async fn get_server_keys(
    hs: Homeserver,
    _req: Fed<get_server_keys::v2::Request>,
) -> FedResult<get_server_keys::v2::Response> {
    let keys = hs.server_keys_response()?;
    Ok(get_server_keys::v2::Response::new(keys.cast_unchecked()))
}

/// `GET /_matrix/federation/v1/version`
async fn get_server_version(
    _hs: Homeserver,
    _req: Fed<get_server_version::v1::Request>,
) -> FedResult<get_server_version::v1::Response> {
    let mut server = get_server_version::v1::Server::new();
    server.name = Some("Hearth".to_owned());
    server.version = Some(env!("CARGO_PKG_VERSION").to_owned());
    let mut response = get_server_version::v1::Response::new();
    response.server = Some(server);
    Ok(response)
}

/// `PUT /_matrix/federation/v1/send/{txnId}`
async fn send_transaction_message(
    hs: Homeserver,
    req: Fed<send_transaction_message::v1::Request>,
) -> FedResult<send_transaction_message::v1::Response> {
    let origin = req.origin()?.clone();
    let body = req.body;
    if body.origin != origin {
        return Err(unauthorized("The transaction's origin is not the signing server"));
    }
    let results = hs.receive_transaction(&origin, body.transaction_id.as_str(), body.pdus, body.edus).await?;
    Ok(send_transaction_message::v1::Response::new(results))
}

/// `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
async fn prepare_join_event(
    hs: Homeserver,
    req: Fed<prepare_join_event::v1::Request>,
) -> FedResult<prepare_join_event::v1::Response> {
    let origin = req.origin()?.clone();
    let b = &req.body;
    let supported = if b.ver.is_empty() { vec![ruma::RoomVersionId::V1] } else { b.ver.clone() };
    let (version, event) = hs.make_join(&origin, &b.room_id, &b.user_id, &supported)?;
    let mut response = prepare_join_event::v1::Response::new(event);
    response.room_version = Some(version);
    Ok(response)
}

/// `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`
async fn create_join_event(
    hs: Homeserver,
    req: Fed<create_join_event::v2::Request>,
) -> FedResult<create_join_event::v2::Response> {
    let origin = req.origin()?.clone();
    let b = &req.body;
    let state = hs.send_join(&origin, &b.room_id, &b.event_id, &b.pdu).await?;
    Ok(create_join_event::v2::Response::new(state))
}

pub(crate) fn raw(json: String) -> FedResult<Box<RawValue>> {
    RawValue::from_string(json).map_err(|e| FedError(Error::internal(e)))
}

/// `GET /_matrix/federation/v1/event/{eventId}`
async fn get_event(hs: Homeserver, req: Fed<get_event::v1::Request>) -> FedResult<get_event::v1::Response> {
    let origin = req.origin()?.clone();
    let json = hs.event_for_server(&origin, &req.body.event_id)?;
    Ok(get_event::v1::Response::new(
        hs.server_name().to_owned(),
        MilliSecondsSinceUnixEpoch::now(),
        raw(json)?,
    ))
}

/// `POST /_matrix/federation/v1/get_missing_events/{roomId}`
async fn get_missing_events(
    hs: Homeserver,
    req: Fed<get_missing_events::v1::Request>,
) -> FedResult<get_missing_events::v1::Response> {
    let origin = req.origin()?.clone();
    let b = &req.body;
    let limit = usize::try_from(u64::from(b.limit.min(UInt::from(50u32)))).unwrap_or(50);
    let events = hs.missing_events(&origin, &b.room_id, &b.earliest_events, &b.latest_events, limit)?;
    Ok(get_missing_events::v1::Response::new(events.into_iter().map(raw).collect::<FedResult<_>>()?))
}

/// `GET /_matrix/federation/v1/state_ids/{roomId}`
async fn get_room_state_ids(
    hs: Homeserver,
    req: Fed<get_room_state_ids::v1::Request>,
) -> FedResult<get_room_state_ids::v1::Response> {
    let origin = req.origin()?.clone();
    let (chain, ids) = hs.state_ids_for_server(&origin, &req.body.room_id, &req.body.event_id)?;
    Ok(get_room_state_ids::v1::Response::new(chain, ids))
}
