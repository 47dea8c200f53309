//! `send_join` and `send_leave` v1: deprecated, but still in the spec and still sent by older
//! servers. Ruma 0.17 no longer defines them, so they are declared here against ruma's endpoint
//! traits (their requests are the v2 ones under another path) and registered like any other
//! endpoint. Their answers carry the v1 body, `[200, {...}]`.

use hearth_core::Homeserver;
use http::{HeaderValue, Method, header};
use ruma::{
    OwnedEventId, OwnedRoomId,
    api::{
        IncomingRequest, Metadata, OutgoingResponse,
        error::{DeserializationError, Error as MatrixError, IntoHttpError},
        federation::{
            authentication::ServerSignatures,
            membership::{create_join_event, create_leave_event},
        },
        path_builder::SinglePath,
    },
};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::server::{Fed, FedResult};

/// A v1 answer: the status code, then the body, as one JSON array.
pub struct V1Reply<T>(pub T);

impl<T: Serialize> OutgoingResponse for V1Reply<T> {
    type Body = ruma::api::BytesBody;

    fn try_into_http_response_inner(self) -> Result<http::Response<Self::Body>, IntoHttpError> {
        let body = serde_json::to_vec(&(200, &self.0))?;
        let mut response = http::Response::new(ruma::api::BytesBody(body));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(response)
    }
}

/// `PUT /_matrix/federation/v1/send_join/{roomId}/{eventId}`
pub struct SendJoinV1 {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub pdu: Box<RawValue>,
}

impl Metadata for SendJoinV1 {
    const METHOD: Method = Method::PUT;
    const RATE_LIMITED: bool = false;
    type Authentication = ServerSignatures;
    type PathBuilder = SinglePath;
    const PATH_BUILDER: SinglePath = SinglePath::new("/_matrix/federation/v1/send_join/{room_id}/{event_id}");
}

impl IncomingRequest for SendJoinV1 {
    type EndpointError = MatrixError;
    type OutgoingResponse = V1Reply<create_join_event::v2::RoomState>;

    fn try_from_http_request_inner(
        request: http::Request<&[u8]>,
        path_args: &[&str],
    ) -> Result<Self, DeserializationError> {
        let v2 = create_join_event::v2::Request::try_from_http_request_inner(request, path_args)?;
        Ok(Self { room_id: v2.room_id, event_id: v2.event_id, pdu: v2.pdu })
    }
}

/// `PUT /_matrix/federation/v1/send_leave/{roomId}/{eventId}`
pub struct SendLeaveV1 {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub pdu: Box<RawValue>,
}

impl Metadata for SendLeaveV1 {
    const METHOD: Method = Method::PUT;
    const RATE_LIMITED: bool = false;
    type Authentication = ServerSignatures;
    type PathBuilder = SinglePath;
    const PATH_BUILDER: SinglePath =
        SinglePath::new("/_matrix/federation/v1/send_leave/{room_id}/{event_id}");
}

/// The empty object v1 `send_leave` answers with.
#[derive(Serialize)]
pub struct Empty {}

impl IncomingRequest for SendLeaveV1 {
    type EndpointError = MatrixError;
    type OutgoingResponse = V1Reply<Empty>;

    fn try_from_http_request_inner(
        request: http::Request<&[u8]>,
        path_args: &[&str],
    ) -> Result<Self, DeserializationError> {
        let v2 = create_leave_event::v2::Request::try_from_http_request_inner(request, path_args)?;
        Ok(Self { room_id: v2.room_id, event_id: v2.event_id, pdu: v2.pdu })
    }
}

/// `PUT /_matrix/federation/v1/send_join/{roomId}/{eventId}`: as v2, in the v1 body.
pub(crate) async fn create_join_event_v1(
    hs: Homeserver,
    req: Fed<SendJoinV1>,
) -> FedResult<V1Reply<create_join_event::v2::RoomState>> {
    let origin = req.origin()?.clone();
    let b = &req.body;
    let state = hs.send_join(&origin, &b.room_id, &b.event_id, &b.pdu).await?;
    Ok(V1Reply(state))
}

/// `PUT /_matrix/federation/v1/send_leave/{roomId}/{eventId}`: as v2, in the v1 body.
pub(crate) async fn create_leave_event_v1(
    hs: Homeserver,
    req: Fed<SendLeaveV1>,
) -> FedResult<V1Reply<Empty>> {
    let origin = req.origin()?.clone();
    let b = &req.body;
    hs.send_leave(&origin, &b.room_id, &b.event_id, &b.pdu).await?;
    Ok(V1Reply(Empty {}))
}
