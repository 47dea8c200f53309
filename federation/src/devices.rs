//! What other servers ask about local users' end-to-end encryption: their device lists and
//! keys, and one-time keys to start sessions with them. Answered by core's key store.

use hearth_core::Homeserver;
use ruma::api::federation::{
    device::get_devices,
    keys::{claim_keys, get_keys},
};

use crate::server::{Fed, FedError};

/// `GET /_matrix/federation/v1/user/devices/{userId}`
pub async fn get_devices(
    hs: Homeserver,
    req: Fed<get_devices::v1::Request>,
) -> Result<get_devices::v1::Response, FedError> {
    Ok(hs.user_devices_for_server(&req.body.user_id)?)
}

/// `POST /_matrix/federation/v1/user/keys/query`
pub async fn get_keys(
    hs: Homeserver,
    req: Fed<get_keys::v1::Request>,
) -> Result<get_keys::v1::Response, FedError> {
    Ok(hs.query_keys_for_server(req.body.device_keys)?)
}

/// `POST /_matrix/federation/v1/user/keys/claim`
pub async fn claim_keys(
    hs: Homeserver,
    req: Fed<claim_keys::v1::Request>,
) -> Result<claim_keys::v1::Response, FedError> {
    Ok(hs.claim_keys_for_server(req.body.one_time_keys).await?)
}
