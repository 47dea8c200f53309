//! Device management.

use hearth_core::{Error, Homeserver, users::Device as CoreDevice};
use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::client::device::{self, delete_device, delete_devices, get_device, get_devices, update_device},
};

use crate::{extract::Ruma, response::ApiResult};

fn to_ruma(d: CoreDevice) -> device::Device {
    let mut out = device::Device::new(d.device_id);
    out.display_name = d.display_name;
    out.last_seen_ip = d.last_seen_ip;
    out.last_seen_ts = d.last_seen_ts.and_then(UInt::new).map(MilliSecondsSinceUnixEpoch);
    out
}

/// `GET /_matrix/client/v3/devices`
pub async fn get_devices(
    hs: Homeserver,
    req: Ruma<get_devices::v3::Request>,
) -> ApiResult<get_devices::v3::Response> {
    let session = req.session()?;
    let devices = hs.users.devices(&session.user_id)?.into_iter().map(to_ruma).collect();
    Ok(get_devices::v3::Response::new(devices))
}

/// `GET /_matrix/client/v3/devices/{deviceId}`
pub async fn get_device(
    hs: Homeserver,
    req: Ruma<get_device::v3::Request>,
) -> ApiResult<get_device::v3::Response> {
    let session = req.session()?;
    let device = hs
        .users
        .device(&session.user_id, &req.body.device_id)?
        .ok_or_else(|| Error::not_found("Device not found"))?;
    Ok(get_device::v3::Response::new(to_ruma(device)))
}

/// `PUT /_matrix/client/v3/devices/{deviceId}`
pub async fn update_device(
    hs: Homeserver,
    req: Ruma<update_device::v3::Request>,
) -> ApiResult<update_device::v3::Response> {
    let session = req.session()?.clone();
    // An application service creates its users' devices this way (MSC4190).
    if session.appservice.is_some() {
        let created = hs
            .users
            .ensure_device(&session.user_id, &req.body.device_id, req.body.display_name.clone())
            .await?;
        hs.device_list_changed(&session.user_id, &req.body.device_id, false).await?;
        if created {
            return Ok(update_device::v3::Response::new());
        }
    }
    hs.set_device_display_name(&session.user_id, &req.body.device_id, req.body.display_name).await?;
    Ok(update_device::v3::Response::new())
}

/// `DELETE /_matrix/client/v3/devices/{deviceId}`
pub async fn delete_device(
    hs: Homeserver,
    req: Ruma<delete_device::v3::Request>,
) -> ApiResult<delete_device::v3::Response> {
    let session = req.session()?.clone();
    reauthenticate(&hs, &session, req.body.auth.as_ref(), "delete_device").await?;
    hs.delete_devices(&session.user_id, &[req.body.device_id]).await?;
    Ok(delete_device::v3::Response::new())
}

/// `POST /_matrix/client/v3/delete_devices`
pub async fn delete_devices(
    hs: Homeserver,
    req: Ruma<delete_devices::v3::Request>,
) -> ApiResult<delete_devices::v3::Response> {
    let session = req.session()?;
    reauthenticate(&hs, session, req.body.auth.as_ref(), "delete_devices").await?;
    hs.delete_devices(&session.user_id, &req.body.devices).await?;
    Ok(delete_devices::v3::Response::new())
}

/// Deleting devices asks the user to authenticate again; an application service answers for
/// its users without (MSC4190).
async fn reauthenticate(
    hs: &Homeserver,
    session: &hearth_core::users::Session,
    auth: Option<&ruma::api::client::uiaa::AuthData>,
    operation: &str,
) -> Result<(), Error> {
    if session.appservice.is_some() {
        return Ok(());
    }
    hs.uiaa
        .authenticate(auth, &hs.reauth_flows(&session.user_id)?, operation, Some(&session.user_id))
        .await?;
    Ok(())
}
