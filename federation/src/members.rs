//! Invites, leaves and knocks from other servers: `invite` (v2), `make_leave`/`send_leave`
//! (v2) and `make_knock`/`send_knock`. The work is in `hearth_core::federation::members`.

use hearth_core::Homeserver;
use ruma::api::federation::membership::{
    create_invite, create_knock_event, create_leave_event, prepare_knock_event, prepare_leave_event,
};

use crate::server::{Fed, FedResult};

/// `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`
pub(crate) async fn create_invite(
    hs: Homeserver,
    req: Fed<create_invite::v2::Request>,
) -> FedResult<create_invite::v2::Response> {
    let origin = req.origin()?.clone();
    let b = &req.body;
    let event = hs
        .receive_invite(&origin, &b.room_id, &b.event_id, &b.room_version, &b.event, &b.invite_room_state)
        .await?;
    Ok(create_invite::v2::Response::new(event))
}

/// `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`
pub(crate) async fn prepare_leave_event(
    hs: Homeserver,
    req: Fed<prepare_leave_event::v1::Request>,
) -> FedResult<prepare_leave_event::v1::Response> {
    let origin = req.origin()?.clone();
    let (version, event) = hs.make_leave(&origin, &req.body.room_id, &req.body.user_id)?;
    Ok(prepare_leave_event::v1::Response::new(Some(version), event))
}

/// `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`
pub(crate) async fn create_leave_event(
    hs: Homeserver,
    req: Fed<create_leave_event::v2::Request>,
) -> FedResult<create_leave_event::v2::Response> {
    let origin = req.origin()?.clone();
    let b = &req.body;
    hs.send_leave(&origin, &b.room_id, &b.event_id, &b.pdu).await?;
    Ok(create_leave_event::v2::Response::new())
}

/// `GET /_matrix/federation/v1/make_knock/{roomId}/{userId}`
pub(crate) async fn prepare_knock_event(
    hs: Homeserver,
    req: Fed<prepare_knock_event::v1::Request>,
) -> FedResult<prepare_knock_event::v1::Response> {
    let origin = req.origin()?.clone();
    let b = &req.body;
    let (version, event) = hs.make_knock(&origin, &b.room_id, &b.user_id, &b.ver)?;
    Ok(prepare_knock_event::v1::Response::new(version, event))
}

/// `PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}`
pub(crate) async fn create_knock_event(
    hs: Homeserver,
    req: Fed<create_knock_event::v1::Request>,
) -> FedResult<create_knock_event::v1::Response> {
    let origin = req.origin()?.clone();
    let b = &req.body;
    let state = hs.send_knock(&origin, &b.room_id, &b.event_id, &b.pdu).await?;
    Ok(create_knock_event::v1::Response::new(state))
}
