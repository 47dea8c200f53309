//! Admin endpoints for accounts: list, details, create-or-modify, deactivate, password reset,
//! whois, rooms, devices, login as, shadow-ban, rate-limit overrides, the admin flag, and the
//! server version.

use axum::http::StatusCode;
use hearth_core::ratelimit::RateLimitOverride;
use hearth_core::{
    Error, Homeserver,
    admin::users::{AdminUser, UserChanges, UserFilter, UserOrder},
};
use ruma::{OwnedDeviceId, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, AdminResult, Reply, admin, admin_paths};
use crate::extract::Ruma;

admin_paths! {
    ServerVersion: GET "/_synapse/admin/v1/server_version";
    ListUsers: GET "/_synapse/admin/v2/users";
    ListUsersV3: GET "/_synapse/admin/v3/users";
    GetUser: GET "/_synapse/admin/v2/users/{userId}";
    PutUser: PUT "/_synapse/admin/v2/users/{userId}";
    DeactivateUser: POST "/_synapse/admin/v1/deactivate/{userId}";
    ResetPassword: POST "/_synapse/admin/v1/reset_password/{userId}";
    Whois: GET "/_synapse/admin/v1/whois/{userId}";
    JoinedRooms: GET "/_synapse/admin/v1/users/{userId}/joined_rooms";
    ListDevices: GET "/_synapse/admin/v2/users/{userId}/devices";
    GetDevice: GET "/_synapse/admin/v2/users/{userId}/devices/{deviceId}";
    PutDevice: PUT "/_synapse/admin/v2/users/{userId}/devices/{deviceId}";
    DeleteDevice: DELETE "/_synapse/admin/v2/users/{userId}/devices/{deviceId}";
    DeleteDevices: POST "/_synapse/admin/v2/users/{userId}/delete_devices";
    LoginAsUser: POST "/_synapse/admin/v1/users/{userId}/login";
    ShadowBan: POST "/_synapse/admin/v1/users/{userId}/shadow_ban";
    LiftShadowBan: DELETE "/_synapse/admin/v1/users/{userId}/shadow_ban";
    GetRateLimit: GET "/_synapse/admin/v1/users/{userId}/override_ratelimit";
    SetRateLimit: POST "/_synapse/admin/v1/users/{userId}/override_ratelimit";
    DeleteRateLimit: DELETE "/_synapse/admin/v1/users/{userId}/override_ratelimit";
    GetUserAdmin: GET "/_synapse/admin/v1/users/{userId}/admin";
    PutUserAdmin: PUT "/_synapse/admin/v1/users/{userId}/admin";
}

/// `GET /_synapse/admin/v1/server_version`: no token needed, as with Synapse.
pub async fn server_version(_hs: Homeserver, _req: Ruma<Admin<ServerVersion>>) -> AdminResult {
    Ok(Reply::ok(json!({ "server_version": concat!("Hearth ", env!("CARGO_PKG_VERSION")) }))?)
}

/// One account in the list's shape (`creation_ts` in milliseconds, as Synapse's list has it).
fn listed(user: &AdminUser) -> Value {
    let a = &user.account;
    json!({
        "name": user.user_id,
        "user_type": a.user_type,
        "is_guest": a.is_guest,
        "admin": a.is_admin,
        "deactivated": a.deactivated,
        "shadow_banned": a.shadow_banned,
        "displayname": user.displayname,
        "avatar_url": user.avatar_url,
        "creation_ts": a.created_ts,
        "erased": a.erased,
        "last_seen_ts": user.last_seen_ts,
        "locked": a.locked,
    })
}

/// One account in the details' shape (`creation_ts` in seconds, as Synapse's details have it).
fn details(hs: &Homeserver, user: &AdminUser) -> Result<Value, Error> {
    let a = &user.account;
    let external_ids: Vec<Value> = hs
        .users
        .sso_links_of(&user.user_id)?
        .into_iter()
        .map(|(provider, subject)| json!({"auth_provider": provider, "external_id": subject}))
        .collect();
    Ok(json!({
        "name": user.user_id,
        "admin": a.is_admin,
        "deactivated": a.deactivated,
        "locked": a.locked,
        "shadow_banned": a.shadow_banned,
        "creation_ts": a.created_ts / 1000,
        "appservice_id": null,
        "consent_server_notice_sent": null,
        "consent_version": null,
        "consent_ts": null,
        "user_type": a.user_type,
        "is_guest": a.is_guest,
        "suspended": false,
        "displayname": user.displayname,
        "avatar_url": user.avatar_url,
        "threepids": [],
        "external_ids": external_ids,
        "erased": a.erased,
        "last_seen_ts": user.last_seen_ts,
    }))
}

async fn list(hs: &Homeserver, req: &Ruma<Admin<impl Send>>, v3: bool) -> AdminResult {
    admin(hs, req)?;
    let r = &req.body;
    let order = match r.param("order_by") {
        None => UserOrder::default(),
        Some(v) => {
            UserOrder::parse(v).ok_or_else(|| Error::invalid_param(format!("Unknown order_by: {v}")))?
        }
    };
    let deactivated = match (v3, r.boolean("deactivated")?) {
        // v2: `true` lists deactivated accounts too; absent or `false` leaves them out.
        (false, Some(true)) => None,
        (false, _) => Some(false),
        (true, filter) => filter,
    };
    let filter = UserFilter {
        name: r.param("name").map(ToOwned::to_owned),
        user_id: r.param("user_id").map(ToOwned::to_owned),
        guests: r.boolean("guests")?.unwrap_or(true),
        admins: r.boolean("admins")?,
        deactivated,
        locked: r.boolean("locked")?.unwrap_or(false),
        order,
        backwards: r.backwards(false)?,
    };
    let page = r.page()?;
    let (users, total) = hs.admin_users(&filter, page)?;
    let mut body = json!({ "users": users.iter().map(listed).collect::<Vec<_>>(), "total": total });
    if let Some(next) = page.next(total) {
        body["next_token"] = json!(next.to_string());
    }
    Ok(Reply::ok(body)?)
}

/// `GET /_synapse/admin/v2/users`
pub async fn list_users(hs: Homeserver, req: Ruma<Admin<ListUsers>>) -> AdminResult {
    list(&hs, &req, false).await
}

/// `GET /_synapse/admin/v3/users`: `deactivated` filters both ways.
pub async fn list_users_v3(hs: Homeserver, req: Ruma<Admin<ListUsersV3>>) -> AdminResult {
    list(&hs, &req, true).await
}

fn existing(hs: &Homeserver, user: &UserId) -> Result<AdminUser, Error> {
    hs.admin_user(user)?.ok_or_else(|| Error::not_found("User not found"))
}

/// `GET /_synapse/admin/v2/users/{userId}`
pub async fn get_user(hs: Homeserver, req: Ruma<Admin<GetUser>>) -> AdminResult {
    admin(&hs, &req)?;
    let user = req.body.user_arg(0)?;
    hs.admin_local_user(&user, "Can only look up local users")?;
    Ok(Reply::ok(details(&hs, &existing(&hs, &user)?)?)?)
}

/// The body of `PUT /_synapse/admin/v2/users/{userId}`. Fields absent are left alone; the
/// ones synapse-admin sends besides (`id`, `avatar_src`, ...) are ignored.
#[derive(Debug, Deserialize)]
struct PutUserBody {
    #[serde(default)]
    password: Option<String>,
    #[serde(default = "super::yes")]
    logout_devices: bool,
    #[serde(default, deserialize_with = "present")]
    displayname: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    avatar_url: Option<Option<String>>,
    #[serde(default)]
    admin: Option<bool>,
    #[serde(default)]
    deactivated: Option<bool>,
    #[serde(default)]
    locked: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    user_type: Option<Option<String>>,
}

/// A field that was sent, null or not (`Some(None)` for null).
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `PUT /_synapse/admin/v2/users/{userId}`: creates the account (201) or changes it (200).
pub async fn put_user(hs: Homeserver, req: Ruma<Admin<PutUser>>) -> AdminResult {
    let session = admin(&hs, &req)?;
    let user = req.body.user_arg(0)?;
    let b: PutUserBody = req.body.json_required()?;
    if let Some(Some(name)) = &b.displayname
        && name.chars().count() > 256
    {
        return Err(Error::bad_request("displayname is longer than 256 characters").into());
    }
    let changes = UserChanges {
        password: b.password,
        logout_devices: b.logout_devices,
        displayname: b.displayname,
        avatar_url: b.avatar_url,
        admin: b.admin,
        deactivated: b.deactivated,
        locked: b.locked,
        user_type: b.user_type,
    };
    let created = hs.admin_put_user(&user, changes, &session.user_id).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(Reply::with_status(status, details(&hs, &existing(&hs, &user)?)?)?)
}

#[derive(Debug, Default, Deserialize)]
struct DeactivateBody {
    #[serde(default)]
    erase: bool,
}

/// `POST /_synapse/admin/v1/deactivate/{userId}`
pub async fn deactivate_user(hs: Homeserver, req: Ruma<Admin<DeactivateUser>>) -> AdminResult {
    admin(&hs, &req)?;
    let user = req.body.user_arg(0)?;
    let b: DeactivateBody = req.body.json()?;
    hs.admin_local_user(&user, "Can only deactivate local users")?;
    existing(&hs, &user)?;
    hs.deactivate_account(&user, b.erase).await?;
    // No identifier is ever bound to an identity server here, so none had to be unbound.
    Ok(Reply::ok(json!({ "id_server_unbind_result": "success" }))?)
}

#[derive(Debug, Deserialize)]
struct ResetPasswordBody {
    new_password: String,
    #[serde(default = "super::yes")]
    logout_devices: bool,
}

/// `POST /_synapse/admin/v1/reset_password/{userId}`
pub async fn reset_password(hs: Homeserver, req: Ruma<Admin<ResetPassword>>) -> AdminResult {
    admin(&hs, &req)?;
    let user = req.body.user_arg(0)?;
    let b: ResetPasswordBody = req.body.json_required()?;
    if hs.users.account(&user)?.is_none() {
        return Err(Error::not_found("Unknown user").into());
    }
    hs.users.set_password(&user, &b.new_password, b.logout_devices, None).await?;
    Ok(Reply::empty())
}

/// `GET /_synapse/admin/v1/whois/{userId}`: an admin, or the user themselves.
pub async fn whois(hs: Homeserver, req: Ruma<Admin<Whois>>) -> AdminResult {
    let user = req.body.user_arg(0)?;
    let session = req.session()?;
    if session.user_id != user {
        hs.require_admin(session)?;
    }
    hs.admin_local_user(&user, "Can only whois a local user")?;
    let connections: Vec<Value> = hs
        .users
        .devices(&user)?
        .into_iter()
        .filter_map(|d| {
            let ts = d.last_seen_ts?;
            Some(json!({"ip": d.last_seen_ip, "last_seen": ts, "user_agent": d.last_seen_user_agent}))
        })
        .collect();
    Ok(Reply::ok(json!({
        "user_id": user,
        "devices": { "": { "sessions": [ { "connections": connections } ] } },
    }))?)
}

/// `GET /_synapse/admin/v1/users/{userId}/joined_rooms`
pub async fn joined_rooms(hs: Homeserver, req: Ruma<Admin<JoinedRooms>>) -> AdminResult {
    admin(&hs, &req)?;
    let user = req.body.user_arg(0)?;
    let rooms = hs.rooms.joined_rooms(&user)?;
    Ok(Reply::ok(json!({ "total": rooms.len(), "joined_rooms": rooms }))?)
}

fn device_json(user: &UserId, d: &hearth_core::users::Device) -> Value {
    json!({
        "user_id": user,
        "device_id": d.device_id,
        "display_name": d.display_name,
        "last_seen_ip": d.last_seen_ip,
        "last_seen_ts": d.last_seen_ts,
        "last_seen_user_agent": d.last_seen_user_agent,
    })
}

fn device_owner(hs: &Homeserver, req: &Ruma<Admin<impl Send>>) -> Result<ruma::OwnedUserId, Error> {
    admin(hs, req)?;
    let user = req.body.user_arg(0)?;
    hs.admin_local_user(&user, "Can only lookup local users")?;
    if hs.users.account(&user)?.is_none() {
        return Err(Error::not_found("Unknown user"));
    }
    Ok(user)
}

/// `GET /_synapse/admin/v2/users/{userId}/devices`
pub async fn list_devices(hs: Homeserver, req: Ruma<Admin<ListDevices>>) -> AdminResult {
    let user = device_owner(&hs, &req)?;
    let devices: Vec<Value> = hs.users.devices(&user)?.iter().map(|d| device_json(&user, d)).collect();
    Ok(Reply::ok(json!({ "total": devices.len(), "devices": devices }))?)
}

fn device_arg(req: &Ruma<Admin<impl Send>>) -> Result<OwnedDeviceId, Error> {
    Ok(OwnedDeviceId::from(req.body.arg(1)?))
}

/// `GET /_synapse/admin/v2/users/{userId}/devices/{deviceId}`
pub async fn get_device(hs: Homeserver, req: Ruma<Admin<GetDevice>>) -> AdminResult {
    let user = device_owner(&hs, &req)?;
    let device = hs.users.device(&user, &device_arg(&req)?)?.ok_or_else(|| Error::not_found("Not found"))?;
    Ok(Reply::ok(device_json(&user, &device))?)
}

#[derive(Debug, Default, Deserialize)]
struct DeviceBody {
    #[serde(default)]
    display_name: Option<String>,
}

/// `PUT /_synapse/admin/v2/users/{userId}/devices/{deviceId}`
pub async fn put_device(hs: Homeserver, req: Ruma<Admin<PutDevice>>) -> AdminResult {
    let user = device_owner(&hs, &req)?;
    let device = device_arg(&req)?;
    let b: DeviceBody = req.body.json()?;
    if hs.users.device(&user, &device)?.is_none() {
        return Err(Error::not_found("Not found").into());
    }
    hs.users.set_device_display_name(&user, &device, b.display_name).await?;
    Ok(Reply::empty())
}

/// `DELETE /_synapse/admin/v2/users/{userId}/devices/{deviceId}`: a device that does not
/// exist is gone already.
pub async fn delete_device(hs: Homeserver, req: Ruma<Admin<DeleteDevice>>) -> AdminResult {
    let user = device_owner(&hs, &req)?;
    hs.users.delete_devices(&user, &[device_arg(&req)?]).await?;
    Ok(Reply::empty())
}

#[derive(Debug, Deserialize)]
struct DeleteDevicesBody {
    devices: Vec<OwnedDeviceId>,
}

/// `POST /_synapse/admin/v2/users/{userId}/delete_devices`
pub async fn delete_devices(hs: Homeserver, req: Ruma<Admin<DeleteDevices>>) -> AdminResult {
    let user = device_owner(&hs, &req)?;
    let b: DeleteDevicesBody = req.body.json_required()?;
    hs.users.delete_devices(&user, &b.devices).await?;
    Ok(Reply::empty())
}

/// `POST /_synapse/admin/v1/users/{userId}/login`
pub async fn login_as_user(hs: Homeserver, req: Ruma<Admin<LoginAsUser>>) -> AdminResult {
    let session = admin(&hs, &req)?;
    let user = req.body.user_arg(0)?;
    let token = hs.admin_login_as(&user, &session.user_id).await?;
    Ok(Reply::ok(json!({ "access_token": token }))?)
}

async fn shadow_ban(hs: &Homeserver, req: &Ruma<Admin<impl Send>>, banned: bool) -> AdminResult {
    admin(hs, req)?;
    let user = req.body.user_arg(0)?;
    hs.admin_local_user(&user, "Only local users can be shadow-banned")?;
    hs.update_account(&user, move |a| a.shadow_banned = banned).await?;
    Ok(Reply::empty())
}

/// `POST /_synapse/admin/v1/users/{userId}/shadow_ban`
pub async fn shadow_ban_user(hs: Homeserver, req: Ruma<Admin<ShadowBan>>) -> AdminResult {
    shadow_ban(&hs, &req, true).await
}

/// `DELETE /_synapse/admin/v1/users/{userId}/shadow_ban`
pub async fn lift_shadow_ban(hs: Homeserver, req: Ruma<Admin<LiftShadowBan>>) -> AdminResult {
    shadow_ban(&hs, &req, false).await
}

fn rate_limited_user(
    hs: &Homeserver,
    req: &Ruma<Admin<impl Send>>,
    message: &'static str,
) -> Result<ruma::OwnedUserId, Error> {
    admin(hs, req)?;
    let user = req.body.user_arg(0)?;
    hs.admin_local_user(&user, message)?;
    existing(hs, &user)?;
    Ok(user)
}

fn override_json(o: RateLimitOverride) -> Value {
    // Synapse stores whole numbers; a fraction set here is shown as it is.
    let per_second = if o.per_second.fract() == 0.0 && o.per_second.abs() < 1e15 {
        json!(o.per_second as i64)
    } else {
        json!(o.per_second)
    };
    json!({ "messages_per_second": per_second, "burst_count": o.burst_count })
}

/// `GET /_synapse/admin/v1/users/{userId}/override_ratelimit`
pub async fn get_rate_limit(hs: Homeserver, req: Ruma<Admin<GetRateLimit>>) -> AdminResult {
    let user = rate_limited_user(&hs, &req, "Can only look up local users")?;
    match hs.rate_limits.override_of(&user)? {
        Some(o) => Ok(Reply::ok(override_json(o))?),
        None => Ok(Reply::empty()),
    }
}

/// `POST /_synapse/admin/v1/users/{userId}/override_ratelimit`: a zero lifts every
/// per-user limit of the user.
pub async fn set_rate_limit(hs: Homeserver, req: Ruma<Admin<SetRateLimit>>) -> AdminResult {
    let user = rate_limited_user(&hs, &req, "Only local users can be ratelimited")?;
    let body: Value = req.body.json()?;
    let number = |name: &str| -> Result<u64, Error> {
        match body.get(name) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| Error::invalid_param(format!("{name} parameter must be a positive int"))),
        }
    };
    let per_second = number("messages_per_second")?;
    let burst_count = u32::try_from(number("burst_count")?)
        .map_err(|_| Error::invalid_param("burst_count parameter must be a positive int"))?;
    #[allow(clippy::cast_precision_loss)] // rates are small whole numbers
    let value = RateLimitOverride { per_second: per_second as f64, burst_count };
    hs.rate_limits.set_override(&user, Some(value))?;
    Ok(Reply::ok(override_json(value))?)
}

/// `DELETE /_synapse/admin/v1/users/{userId}/override_ratelimit`
pub async fn delete_rate_limit(hs: Homeserver, req: Ruma<Admin<DeleteRateLimit>>) -> AdminResult {
    let user = rate_limited_user(&hs, &req, "Only local users can be ratelimited")?;
    hs.rate_limits.set_override(&user, None)?;
    Ok(Reply::empty())
}

/// `GET /_synapse/admin/v1/users/{userId}/admin`
pub async fn get_user_admin(hs: Homeserver, req: Ruma<Admin<GetUserAdmin>>) -> AdminResult {
    admin(&hs, &req)?;
    let user = req.body.user_arg(0)?;
    hs.admin_local_user(&user, "Only local users can be admins of this homeserver")?;
    let is_admin = hs.users.account(&user)?.is_some_and(|a| a.is_admin);
    Ok(Reply::ok(json!({ "admin": is_admin }))?)
}

#[derive(Debug, Deserialize)]
struct AdminFlagBody {
    admin: bool,
}

/// `PUT /_synapse/admin/v1/users/{userId}/admin`
pub async fn put_user_admin(hs: Homeserver, req: Ruma<Admin<PutUserAdmin>>) -> AdminResult {
    let session = admin(&hs, &req)?;
    let user = req.body.user_arg(0)?;
    let b: AdminFlagBody = req.body.json_required()?;
    hs.admin_local_user(&user, "Only local users can be admins of this homeserver")?;
    if !b.admin && user == session.user_id {
        return Err(Error::bad_request("You may not demote yourself.").into());
    }
    hs.update_account(&user, move |a| a.is_admin = b.admin).await?;
    Ok(Reply::empty())
}
