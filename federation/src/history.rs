//! Room history for other servers: backfill, an event's auth chain, and the state at an event.

use hearth_core::Homeserver;
use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::federation::{
        authorization::get_event_authorization, backfill::get_backfill, event::get_room_state,
    },
};

use crate::server::{Fed, FedResult, raw};

/// `GET /_matrix/federation/v1/backfill/{roomId}`
pub async fn get_backfill(
    hs: Homeserver,
    req: Fed<get_backfill::v1::Request>,
) -> FedResult<get_backfill::v1::Response> {
    let origin = req.origin()?.clone();
    let b = &req.body;
    let limit = usize::try_from(u64::from(b.limit.min(UInt::from(100u32)))).unwrap_or(100);
    let pdus = hs.backfill_for_server(&origin, &b.room_id, &b.v, limit)?;
    Ok(get_backfill::v1::Response::new(
        hs.server_name().to_owned(),
        MilliSecondsSinceUnixEpoch::now(),
        pdus.into_iter().map(raw).collect::<FedResult<_>>()?,
    ))
}

/// `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`
pub async fn get_event_authorization(
    hs: Homeserver,
    req: Fed<get_event_authorization::v1::Request>,
) -> FedResult<get_event_authorization::v1::Response> {
    let origin = req.origin()?.clone();
    let chain = hs.event_auth_for_server(&origin, &req.body.room_id, &req.body.event_id)?;
    Ok(get_event_authorization::v1::Response::new(chain.into_iter().map(raw).collect::<FedResult<_>>()?))
}

/// `GET /_matrix/federation/v1/state/{roomId}`
pub async fn get_room_state(
    hs: Homeserver,
    req: Fed<get_room_state::v1::Request>,
) -> FedResult<get_room_state::v1::Response> {
    let origin = req.origin()?.clone();
    let (pdus, chain) = hs.state_for_server(&origin, &req.body.room_id, &req.body.event_id)?;
    let to_raw = |v: Vec<String>| v.into_iter().map(raw).collect::<FedResult<Vec<_>>>();
    Ok(get_room_state::v1::Response::new(to_raw(chain)?, to_raw(pdus)?))
}
