//! Key backup: versions and the encrypted room keys in them.

use std::collections::BTreeMap;

use hearth_core::{
    Error, Homeserver,
    keys::backup::{BackupInfo, BackupRooms},
};
use ruma::{
    OwnedRoomId, UInt,
    api::client::backup::{
        RoomKeyBackup, add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session,
        create_backup_version, delete_backup_keys, delete_backup_keys_for_room,
        delete_backup_keys_for_session, delete_backup_version, get_backup_info, get_backup_keys,
        get_backup_keys_for_room, get_backup_keys_for_session, get_latest_backup_info, update_backup_version,
    },
    serde::Raw,
};
use serde_json::{Value, json};

use crate::{
    extract::Ruma,
    response::ApiResult,
    room::{json_of, raw},
};

fn algorithm_parts(value: &Value) -> Result<(String, Value), Error> {
    let algorithm = value["algorithm"].as_str().ok_or_else(|| Error::bad_json("algorithm is required"))?;
    let auth_data =
        value.get("auth_data").cloned().ok_or_else(|| Error::bad_json("auth_data is required"))?;
    Ok((algorithm.to_owned(), auth_data))
}

fn info_parts<T>(info: BackupInfo) -> Result<(Raw<T>, UInt, String, String), Error> {
    let algorithm = raw(&json!({"algorithm": info.algorithm, "auth_data": info.auth_data}))?;
    Ok((algorithm, UInt::new_saturating(info.count), info.etag, info.version))
}

fn to_rooms(rooms: BackupRooms) -> Result<BTreeMap<OwnedRoomId, RoomKeyBackup>, Error> {
    rooms
        .into_iter()
        .map(|(room, sessions)| {
            let sessions =
                sessions.into_iter().map(|(s, d)| Ok((s, raw(&d)?))).collect::<Result<_, Error>>()?;
            Ok((room, RoomKeyBackup::new(sessions)))
        })
        .collect()
}

fn from_sessions<T>(sessions: &BTreeMap<String, Raw<T>>) -> Result<BTreeMap<String, Value>, Error> {
    sessions.iter().map(|(s, d)| Ok((s.clone(), json_of(d)?))).collect()
}

/// `POST /_matrix/client/v3/room_keys/version`
pub async fn create_backup_version(
    hs: Homeserver,
    req: Ruma<create_backup_version::v3::Request>,
) -> ApiResult<create_backup_version::v3::Response> {
    let session = req.session()?.clone();
    let (algorithm, auth_data) = algorithm_parts(&json_of(&req.body.algorithm)?)?;
    let version = hs.create_backup(&session.user_id, algorithm, auth_data).await?;
    Ok(create_backup_version::v3::Response::new(version))
}

/// `GET /_matrix/client/v3/room_keys/version`
pub async fn get_latest_backup_info(
    hs: Homeserver,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> ApiResult<get_latest_backup_info::v3::Response> {
    let session = req.session()?;
    let (algorithm, count, etag, version) = info_parts(hs.backup_info(&session.user_id, None)?)?;
    Ok(get_latest_backup_info::v3::Response::new(algorithm, count, etag, version))
}

/// `GET /_matrix/client/v3/room_keys/version/{version}`
pub async fn get_backup_info(
    hs: Homeserver,
    req: Ruma<get_backup_info::v3::Request>,
) -> ApiResult<get_backup_info::v3::Response> {
    let session = req.session()?;
    let (algorithm, count, etag, version) =
        info_parts(hs.backup_info(&session.user_id, Some(&req.body.version))?)?;
    Ok(get_backup_info::v3::Response::new(algorithm, count, etag, version))
}

/// `PUT /_matrix/client/v3/room_keys/version/{version}`
pub async fn update_backup_version(
    hs: Homeserver,
    req: Ruma<update_backup_version::v3::Request>,
) -> ApiResult<update_backup_version::v3::Response> {
    let session = req.session()?.clone();
    let value = json_of(&req.body.algorithm)?;
    if value.get("version").and_then(Value::as_str).is_some_and(|v| v != req.body.version) {
        return Err(Error::invalid_param("The version in the body does not match the path").into());
    }
    let (algorithm, auth_data) = algorithm_parts(&value)?;
    hs.update_backup(&session.user_id, &req.body.version, algorithm, auth_data).await?;
    Ok(update_backup_version::v3::Response::new())
}

/// `DELETE /_matrix/client/v3/room_keys/version/{version}`
pub async fn delete_backup_version(
    hs: Homeserver,
    req: Ruma<delete_backup_version::v3::Request>,
) -> ApiResult<delete_backup_version::v3::Response> {
    let session = req.session()?.clone();
    hs.delete_backup(&session.user_id, &req.body.version).await?;
    Ok(delete_backup_version::v3::Response::new())
}

/// `PUT /_matrix/client/v3/room_keys/keys`
pub async fn add_backup_keys(
    hs: Homeserver,
    req: Ruma<add_backup_keys::v3::Request>,
) -> ApiResult<add_backup_keys::v3::Response> {
    let session = req.session()?.clone();
    let mut rooms = BackupRooms::new();
    for (room, backup) in &req.body.rooms {
        rooms.insert(room.clone(), from_sessions(&backup.sessions)?);
    }
    let (count, etag) = hs.put_backup_keys(&session.user_id, &req.body.version, rooms).await?;
    Ok(add_backup_keys::v3::Response::new(etag, UInt::new_saturating(count)))
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}`
pub async fn add_backup_keys_for_room(
    hs: Homeserver,
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> ApiResult<add_backup_keys_for_room::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    let rooms = BackupRooms::from([(b.room_id.clone(), from_sessions(&b.sessions)?)]);
    let (count, etag) = hs.put_backup_keys(&session.user_id, &b.version, rooms).await?;
    Ok(add_backup_keys_for_room::v3::Response::new(etag, UInt::new_saturating(count)))
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
pub async fn add_backup_keys_for_session(
    hs: Homeserver,
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> ApiResult<add_backup_keys_for_session::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    let data = json_of(&b.session_data)?;
    let rooms = BackupRooms::from([(b.room_id.clone(), BTreeMap::from([(b.session_id.clone(), data)]))]);
    let (count, etag) = hs.put_backup_keys(&session.user_id, &b.version, rooms).await?;
    Ok(add_backup_keys_for_session::v3::Response::new(etag, UInt::new_saturating(count)))
}

/// `GET /_matrix/client/v3/room_keys/keys`
pub async fn get_backup_keys(
    hs: Homeserver,
    req: Ruma<get_backup_keys::v3::Request>,
) -> ApiResult<get_backup_keys::v3::Response> {
    let session = req.session()?;
    let rooms = hs.get_backup_keys(&session.user_id, &req.body.version, None, None)?;
    Ok(get_backup_keys::v3::Response::new(to_rooms(rooms)?))
}

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}`
pub async fn get_backup_keys_for_room(
    hs: Homeserver,
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> ApiResult<get_backup_keys_for_room::v3::Response> {
    let session = req.session()?;
    let b = &req.body;
    let mut rooms = hs.get_backup_keys(&session.user_id, &b.version, Some(&b.room_id), None)?;
    let sessions = rooms.remove(&b.room_id).unwrap_or_default();
    let sessions = sessions.into_iter().map(|(s, d)| Ok((s, raw(&d)?))).collect::<Result<_, Error>>()?;
    Ok(get_backup_keys_for_room::v3::Response::new(sessions))
}

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
pub async fn get_backup_keys_for_session(
    hs: Homeserver,
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> ApiResult<get_backup_keys_for_session::v3::Response> {
    let session = req.session()?;
    let b = &req.body;
    let mut rooms =
        hs.get_backup_keys(&session.user_id, &b.version, Some(&b.room_id), Some(&b.session_id))?;
    let data = rooms
        .remove(&b.room_id)
        .and_then(|mut s| s.remove(&b.session_id))
        .ok_or_else(|| Error::not_found("No room key found for this session"))?;
    Ok(get_backup_keys_for_session::v3::Response::new(raw(&data)?))
}

/// `DELETE /_matrix/client/v3/room_keys/keys`
pub async fn delete_backup_keys(
    hs: Homeserver,
    req: Ruma<delete_backup_keys::v3::Request>,
) -> ApiResult<delete_backup_keys::v3::Response> {
    let session = req.session()?.clone();
    let (count, etag) = hs.delete_backup_keys(&session.user_id, &req.body.version, None, None).await?;
    Ok(delete_backup_keys::v3::Response::new(etag, UInt::new_saturating(count)))
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}`
pub async fn delete_backup_keys_for_room(
    hs: Homeserver,
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> ApiResult<delete_backup_keys_for_room::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    let (count, etag) = hs.delete_backup_keys(&session.user_id, &b.version, Some(&b.room_id), None).await?;
    Ok(delete_backup_keys_for_room::v3::Response::new(etag, UInt::new_saturating(count)))
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
pub async fn delete_backup_keys_for_session(
    hs: Homeserver,
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> ApiResult<delete_backup_keys_for_session::v3::Response> {
    let session = req.session()?.clone();
    let b = req.body;
    let (count, etag) =
        hs.delete_backup_keys(&session.user_id, &b.version, Some(&b.room_id), Some(&b.session_id)).await?;
    Ok(delete_backup_keys_for_session::v3::Response::new(etag, UInt::new_saturating(count)))
}
