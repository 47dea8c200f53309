//! Admin endpoints for media: a user's uploads, a room's media, quarantine, protection, and
//! deletion one by one or by age and size.

use hearth_core::{Error, Homeserver, media::admin::MediaItem};
use ruma::OwnedServerName;
use serde_json::{Value, json};

use super::{Admin, AdminResult, Reply, admin, admin_paths};
use crate::extract::Ruma;

admin_paths! {
    UserMedia: GET "/_synapse/admin/v1/users/{userId}/media";
    DeleteUserMedia: DELETE "/_synapse/admin/v1/users/{userId}/media";
    RoomMedia: GET "/_synapse/admin/v1/room/{roomId}/media";
    MediaInfo: GET "/_synapse/admin/v1/media/{serverName}/{mediaId}";
    Quarantine: POST "/_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}";
    Unquarantine: POST "/_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId}";
    QuarantineRoomMedia: POST "/_synapse/admin/v1/room/{roomId}/media/quarantine";
    QuarantineUserMedia: POST "/_synapse/admin/v1/user/{userId}/media/quarantine";
    Protect: POST "/_synapse/admin/v1/media/protect/{mediaId}";
    Unprotect: POST "/_synapse/admin/v1/media/unprotect/{mediaId}";
    DeleteMedia: DELETE "/_synapse/admin/v1/media/{serverName}/{mediaId}";
    DeleteOldMedia: POST "/_synapse/admin/v1/media/delete";
    DeleteOldMediaOf: POST "/_synapse/admin/v1/media/{serverName}/delete";
}

fn item_json(item: &MediaItem) -> Value {
    let r = &item.record;
    json!({
        "media_id": item.media_id,
        "media_type": r.content_type,
        "media_length": r.size,
        "upload_name": r.filename,
        "created_ts": r.created_ts,
        "last_access_ts": null,
        "quarantined_by": r.quarantined_by,
        "safe_from_quarantine": r.protected,
        "user_id": r.uploader,
        "sha256": r.sha256,
        "url_cache": null,
        "authenticated": true,
    })
}

/// A user's uploads in the order asked for (newest first when none is).
fn uploads(
    hs: &Homeserver,
    req: &Ruma<Admin<impl Send>>,
) -> Result<(Vec<MediaItem>, usize, hearth_core::admin::Page), Error> {
    admin(hs, req)?;
    let user = req.body.user_arg(0)?;
    if user.server_name() != hs.server_name() {
        return Err(Error::bad_request("Can only look up local users"));
    }
    if hs.users.account(&user)?.is_none() {
        return Err(Error::not_found("Unknown user"));
    }
    let r = &req.body;
    let mut items = hs.media.uploads_of(&user)?;
    let order = r.param("order_by");
    let backwards = r.backwards(order.is_none() && r.param("dir").is_none())?;
    let key = |i: &MediaItem| -> (Value, String) {
        let r = &i.record;
        let v = match order.unwrap_or("created_ts") {
            "media_id" => json!(i.media_id),
            "upload_name" => json!(r.filename),
            "media_length" => json!(r.size),
            "media_type" => json!(r.content_type),
            "quarantined_by" => json!(r.quarantined_by),
            "safe_from_quarantine" => json!(r.protected),
            _ => json!(r.created_ts),
        };
        (v, i.media_id.clone())
    };
    if let Some(o) = order
        && !matches!(
            o,
            "media_id"
                | "upload_name"
                | "created_ts"
                | "last_access_ts"
                | "media_length"
                | "media_type"
                | "quarantined_by"
                | "safe_from_quarantine"
        )
    {
        return Err(Error::invalid_param(format!("Unknown order_by: {o}")));
    }
    items.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        let primary = compare_json(&ka.0, &kb.0);
        let primary = if backwards { primary.reverse() } else { primary };
        primary.then(ka.1.cmp(&kb.1))
    });
    let total = items.len();
    let page = r.page()?;
    Ok((page.apply(items), total, page))
}

fn compare_json(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_u64().cmp(&y.as_u64()),
        (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
        (Value::Null, _) => std::cmp::Ordering::Less,
        (_, Value::Null) => std::cmp::Ordering::Greater,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// `GET /_synapse/admin/v1/users/{userId}/media`
pub async fn user_media(hs: Homeserver, req: Ruma<Admin<UserMedia>>) -> AdminResult {
    let (items, total, page) = uploads(&hs, &req)?;
    let mut body = json!({ "media": items.iter().map(item_json).collect::<Vec<_>>(), "total": total });
    if let Some(next) = page.next(total) {
        body["next_token"] = json!(next);
    }
    Ok(Reply::ok(body)?)
}

/// `DELETE /_synapse/admin/v1/users/{userId}/media`: deletes the page the same query lists.
pub async fn delete_user_media(hs: Homeserver, req: Ruma<Admin<DeleteUserMedia>>) -> AdminResult {
    let (items, _, _) = uploads(&hs, &req)?;
    let ids: Vec<String> = items.into_iter().map(|i| i.media_id).collect();
    let deleted = hs.media.delete_local(&ids).await?;
    Ok(Reply::ok(json!({ "total": deleted.len(), "deleted_media": deleted }))?)
}

/// `GET /_synapse/admin/v1/room/{roomId}/media`: the media the room's events point at.
pub async fn room_media(hs: Homeserver, req: Ruma<Admin<RoomMedia>>) -> AdminResult {
    admin(&hs, &req)?;
    let room_id = req.body.room_arg(0)?;
    let (local, remote): (Vec<String>, Vec<String>) = hs
        .media_in_room(&room_id)?
        .into_iter()
        .partition(|uri| uri.starts_with(&format!("mxc://{}/", hs.server_name())));
    Ok(Reply::ok(json!({ "local": local, "remote": remote }))?)
}

fn media_arg(req: &Ruma<Admin<impl Send>>) -> Result<(OwnedServerName, String), Error> {
    let server = req.body.arg(0)?;
    let server = OwnedServerName::try_from(server)
        .map_err(|e| Error::invalid_param(format!("Invalid server name: {e}")))?;
    Ok((server, req.body.arg(1)?.to_owned()))
}

/// `GET /_synapse/admin/v1/media/{serverName}/{mediaId}`
pub async fn media_info(hs: Homeserver, req: Ruma<Admin<MediaInfo>>) -> AdminResult {
    admin(&hs, &req)?;
    let (server, media_id) = media_arg(&req)?;
    let record = hs.media.item(&server, &media_id)?.ok_or_else(|| Error::not_found("Unknown media"))?;
    let local = server == *hs.server_name();
    let mut info = item_json(&MediaItem { server: server.clone(), media_id, record });
    info["media_origin"] = if local { Value::Null } else { json!(server) };
    info["filesystem_id"] = Value::Null;
    Ok(Reply::ok(json!({ "media_info": info }))?)
}

/// `POST /_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}`: also every other item
/// with the same content.
pub async fn quarantine(hs: Homeserver, req: Ruma<Admin<Quarantine>>) -> AdminResult {
    let session = admin(&hs, &req)?;
    hs.media.quarantine(&[media_arg(&req)?], &session.user_id).await?;
    Ok(Reply::empty())
}

/// `POST /_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId}`
pub async fn unquarantine(hs: Homeserver, req: Ruma<Admin<Unquarantine>>) -> AdminResult {
    admin(&hs, &req)?;
    hs.media.unquarantine(&[media_arg(&req)?]).await?;
    Ok(Reply::empty())
}

fn parse_mxc(uri: &str) -> Option<(OwnedServerName, String)> {
    let (server, id) = uri.strip_prefix("mxc://")?.split_once('/')?;
    Some((OwnedServerName::try_from(server).ok()?, id.to_owned()))
}

/// `POST /_synapse/admin/v1/room/{roomId}/media/quarantine`
pub async fn quarantine_room_media(hs: Homeserver, req: Ruma<Admin<QuarantineRoomMedia>>) -> AdminResult {
    let session = admin(&hs, &req)?;
    let room_id = req.body.room_arg(0)?;
    let items: Vec<_> = hs.media_in_room(&room_id)?.iter().filter_map(|u| parse_mxc(u)).collect();
    let count = hs.media.quarantine(&items, &session.user_id).await?;
    Ok(Reply::ok(json!({ "num_quarantined": count }))?)
}

/// `POST /_synapse/admin/v1/user/{userId}/media/quarantine`
pub async fn quarantine_user_media(hs: Homeserver, req: Ruma<Admin<QuarantineUserMedia>>) -> AdminResult {
    let session = admin(&hs, &req)?;
    let user = req.body.user_arg(0)?;
    let items: Vec<_> = hs.media.uploads_of(&user)?.into_iter().map(|i| (i.server, i.media_id)).collect();
    let count = hs.media.quarantine(&items, &session.user_id).await?;
    Ok(Reply::ok(json!({ "num_quarantined": count }))?)
}

/// `POST /_synapse/admin/v1/media/protect/{mediaId}`
pub async fn protect(hs: Homeserver, req: Ruma<Admin<Protect>>) -> AdminResult {
    admin(&hs, &req)?;
    hs.media.set_protected(req.body.arg(0)?, true).await?;
    Ok(Reply::empty())
}

/// `POST /_synapse/admin/v1/media/unprotect/{mediaId}`
pub async fn unprotect(hs: Homeserver, req: Ruma<Admin<Unprotect>>) -> AdminResult {
    admin(&hs, &req)?;
    hs.media.set_protected(req.body.arg(0)?, false).await?;
    Ok(Reply::empty())
}

/// `DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}`
pub async fn delete_media(hs: Homeserver, req: Ruma<Admin<DeleteMedia>>) -> AdminResult {
    admin(&hs, &req)?;
    let (server, media_id) = media_arg(&req)?;
    if server != *hs.server_name() {
        return Err(Error::bad_request("Can only delete local media").into());
    }
    if hs.media.item(&server, &media_id)?.is_none() {
        return Err(Error::not_found("Unknown media").into());
    }
    let deleted = hs.media.delete_local(&[media_id]).await?;
    Ok(Reply::ok(json!({ "total": deleted.len(), "deleted_media": deleted }))?)
}

async fn delete_old(hs: &Homeserver, req: &Ruma<Admin<impl Send>>) -> AdminResult {
    admin(hs, req)?;
    let r = &req.body;
    let before_ts = r
        .int("before_ts")?
        .ok_or_else(|| Error::missing_param("Missing required integer query parameter before_ts"))?;
    if before_ts < 30_000_000_000 {
        return Err(Error::invalid_param(
            "Query parameter before_ts must be a timestamp in milliseconds, not seconds from the year 1970",
        )
        .into());
    }
    let size_gt = r.int("size_gt")?.unwrap_or(0);
    let keep_profiles = r.boolean("keep_profiles")?.unwrap_or(true);
    let deleted = hs.media.delete_older(before_ts, size_gt, keep_profiles).await?;
    Ok(Reply::ok(json!({ "total": deleted.len(), "deleted_media": deleted }))?)
}

/// `POST /_synapse/admin/v1/media/delete?before_ts=&size_gt=&keep_profiles=`
pub async fn delete_old_media(hs: Homeserver, req: Ruma<Admin<DeleteOldMedia>>) -> AdminResult {
    delete_old(&hs, &req).await
}

/// `POST /_synapse/admin/v1/media/{serverName}/delete`: the older form synapse-admin calls.
pub async fn delete_old_media_of(hs: Homeserver, req: Ruma<Admin<DeleteOldMediaOf>>) -> AdminResult {
    admin(&hs, &req)?;
    if req.body.arg(0)? != hs.server_name().as_str() {
        return Err(Error::bad_request("Can only delete local media").into());
    }
    delete_old(&hs, &req).await
}
