//! Admin endpoints for rooms: list, details, members, state, block, delete (synchronous v1 and
//! the v2 form with its status endpoints), and event reports.

use hearth_core::admin::rooms::RoomDeletionRecord;
use hearth_core::{
    Error, Homeserver,
    admin::rooms::{AdminRoom, RoomDeletion, RoomFilter, RoomOrder},
};
use ruma::{OwnedUserId, RoomId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, AdminResult, Reply, admin, admin_paths};
use crate::extract::Ruma;

admin_paths! {
    ListRooms: GET "/_synapse/admin/v1/rooms";
    GetRoom: GET "/_synapse/admin/v1/rooms/{roomId}";
    RoomMembers: GET "/_synapse/admin/v1/rooms/{roomId}/members";
    RoomState: GET "/_synapse/admin/v1/rooms/{roomId}/state";
    GetRoomBlock: GET "/_synapse/admin/v1/rooms/{roomId}/block";
    PutRoomBlock: PUT "/_synapse/admin/v1/rooms/{roomId}/block";
    DeleteRoomV1: DELETE "/_synapse/admin/v1/rooms/{roomId}";
    DeleteRoomV2: DELETE "/_synapse/admin/v2/rooms/{roomId}";
    RoomDeleteStatus: GET "/_synapse/admin/v2/rooms/{roomId}/delete_status";
    DeleteStatus: GET "/_synapse/admin/v2/rooms/delete_status/{deleteId}";
    ListReports: GET "/_synapse/admin/v1/event_reports";
    GetReport: GET "/_synapse/admin/v1/event_reports/{reportId}";
    DeleteReport: DELETE "/_synapse/admin/v1/event_reports/{reportId}";
}

fn room_json(room: &AdminRoom) -> Value {
    let s = &room.summary;
    json!({
        "room_id": s.room_id,
        "name": s.name,
        "canonical_alias": s.canonical_alias,
        "joined_members": s.joined_members,
        "joined_local_members": room.joined_local_members,
        "version": room.version,
        "creator": room.creator,
        "encryption": room.encryption,
        "federatable": room.federatable,
        "public": room.public,
        "join_rules": s.join_rule,
        "guest_access": room.guest_access,
        "history_visibility": room.history_visibility,
        "state_events": room.state_events,
        "room_type": s.room_type,
    })
}

/// `GET /_synapse/admin/v1/rooms`
pub async fn list_rooms(hs: Homeserver, req: Ruma<Admin<ListRooms>>) -> AdminResult {
    admin(&hs, &req)?;
    let r = &req.body;
    let order = match r.param("order_by") {
        None => RoomOrder::default(),
        Some(v) => {
            RoomOrder::parse(v).ok_or_else(|| Error::invalid_param(format!("Unknown order_by: {v}")))?
        }
    };
    let search_term = r.param("search_term").map(ToOwned::to_owned);
    if search_term.as_deref() == Some("") {
        return Err(Error::invalid_param("search_term cannot be an empty string").into());
    }
    let filter = RoomFilter {
        search_term,
        public_rooms: r.boolean("public_rooms")?,
        empty_rooms: r.boolean("empty_rooms")?,
        order,
        backwards: r.backwards(false)?,
    };
    let page = r.page()?;
    let (rooms, total) = hs.admin_rooms(&filter, page)?;
    let mut body = json!({
        "rooms": rooms.iter().map(room_json).collect::<Vec<_>>(),
        "offset": page.from,
        "total_rooms": total,
    });
    if let Some(next) = page.next(total) {
        body["next_batch"] = json!(next);
    }
    if page.from > 0 {
        body["prev_batch"] = json!(page.from.saturating_sub(page.limit));
    }
    Ok(Reply::ok(body)?)
}

fn known_room(hs: &Homeserver, room_id: &RoomId) -> Result<AdminRoom, Error> {
    hs.admin_room(room_id)?.ok_or_else(|| Error::not_found("Room not found"))
}

/// `GET /_synapse/admin/v1/rooms/{roomId}`
pub async fn get_room(hs: Homeserver, req: Ruma<Admin<GetRoom>>) -> AdminResult {
    admin(&hs, &req)?;
    let room_id = req.body.room_arg(0)?;
    let room = known_room(&hs, &room_id)?;
    let mut body = room_json(&room);
    body["avatar"] = json!(room.summary.avatar_url);
    body["joined_local_devices"] = json!(room.joined_local_devices);
    body["topic"] = json!(room.summary.topic);
    body["forgotten"] = json!(false);
    body["tombstoned"] = json!(room.tombstone.is_some());
    body["replacement_room"] = json!(room.tombstone);
    Ok(Reply::ok(body)?)
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/members`: the joined members.
pub async fn room_members(hs: Homeserver, req: Ruma<Admin<RoomMembers>>) -> AdminResult {
    admin(&hs, &req)?;
    let room_id = req.body.room_arg(0)?;
    known_room(&hs, &room_id)?;
    let members = hs.rooms.members(&room_id)?.joined.clone();
    Ok(Reply::ok(json!({ "total": members.len(), "members": members }))?)
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/state`, optionally of one `type`.
pub async fn room_state(hs: Homeserver, req: Ruma<Admin<RoomState>>) -> AdminResult {
    let session = admin(&hs, &req)?.clone();
    let room_id = req.body.room_arg(0)?;
    known_room(&hs, &room_id)?;
    let kind = req.body.param("type");
    let mut state = Vec::new();
    for pdu in hs.rooms.current_state(&room_id)? {
        if kind.is_some_and(|k| pdu.kind.to_string() != k) {
            continue;
        }
        let Some(record) = hs.rooms.pdu_record(&pdu.event_id)? else { continue };
        let mut event = hs.rooms.client_event(&pdu.event_id, &record, &session.user_id, None)?;
        // The older client format Synapse's admin API still serves beside `unsigned`.
        event["age"] = event["unsigned"]["age"].clone();
        event["user_id"] = json!(pdu.sender);
        state.push(event);
    }
    Ok(Reply::ok(json!({ "state": state }))?)
}

/// `GET /_synapse/admin/v1/rooms/{roomId}/block`
pub async fn get_room_block(hs: Homeserver, req: Ruma<Admin<GetRoomBlock>>) -> AdminResult {
    admin(&hs, &req)?;
    let room_id = req.body.room_arg(0)?;
    Ok(Reply::ok(match hs.room_blocked_by(&room_id)? {
        Some(by) => json!({ "block": true, "user_id": by }),
        None => json!({ "block": false }),
    })?)
}

#[derive(Debug, Deserialize)]
struct BlockBody {
    block: bool,
}

/// `PUT /_synapse/admin/v1/rooms/{roomId}/block`
pub async fn put_room_block(hs: Homeserver, req: Ruma<Admin<PutRoomBlock>>) -> AdminResult {
    let session = admin(&hs, &req)?;
    let room_id = req.body.room_arg(0)?;
    let b: BlockBody = req.body.json_required()?;
    hs.set_room_blocked(&room_id, b.block.then_some(&*session.user_id))?;
    Ok(Reply::ok(json!({ "block": b.block }))?)
}

/// The body of both room deletions, with Synapse's defaults.
#[derive(Debug, Deserialize)]
struct DeleteBody {
    #[serde(default)]
    new_room_user_id: Option<OwnedUserId>,
    #[serde(default)]
    room_name: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    block: bool,
    #[serde(default = "super::yes")]
    purge: bool,
    #[serde(default)]
    force_purge: bool,
}

impl DeleteBody {
    fn deletion(self) -> RoomDeletion {
        let defaults = RoomDeletion::default();
        RoomDeletion {
            new_room_user_id: self.new_room_user_id,
            room_name: self.room_name.unwrap_or(defaults.room_name),
            message: self.message.unwrap_or(defaults.message),
            block: self.block,
            purge: self.purge,
            force_purge: self.force_purge,
        }
    }
}

/// `DELETE /_synapse/admin/v1/rooms/{roomId}`: deletes the room before answering.
pub async fn delete_room_v1(hs: Homeserver, req: Ruma<Admin<DeleteRoomV1>>) -> AdminResult {
    let session = admin(&hs, &req)?;
    let room_id = req.body.room_arg(0)?;
    let b: DeleteBody = req.body.json_required()?;
    let result = hs.admin_delete_room(&room_id, &b.deletion(), &session.user_id).await?;
    Ok(Reply::ok(result)?)
}

/// `DELETE /_synapse/admin/v2/rooms/{roomId}`: answers with a delete ID at once; the deletion
/// runs in the background and its status is kept (`delete_status`).
pub async fn delete_room_v2(hs: Homeserver, req: Ruma<Admin<DeleteRoomV2>>) -> AdminResult {
    let session = admin(&hs, &req)?;
    let room_id = req.body.room_arg(0)?;
    let b: DeleteBody = req.body.json_required()?;
    let delete_id = hs.start_room_deletion(&room_id, b.deletion(), &session.user_id)?;
    Ok(Reply::ok(json!({ "delete_id": delete_id }))?)
}

fn deletion_json(id: &str, record: &RoomDeletionRecord) -> Value {
    let mut body = json!({
        "delete_id": id,
        "room_id": record.room_id,
        "status": record.status,
        "shutdown_room": record.result,
    });
    if let Some(error) = &record.error {
        body["error"] = json!(error);
    }
    body
}

/// `GET /_synapse/admin/v2/rooms/{roomId}/delete_status`
pub async fn room_delete_status(hs: Homeserver, req: Ruma<Admin<RoomDeleteStatus>>) -> AdminResult {
    admin(&hs, &req)?;
    let room_id = req.body.room_arg(0)?;
    let all = hs.room_deletions(&room_id)?;
    if all.is_empty() {
        return Err(Error::not_found(format!("No delete task for room_id '{room_id}' found")).into());
    }
    let results: Vec<Value> = all.iter().map(|(id, r)| deletion_json(id, r)).collect();
    Ok(Reply::ok(json!({ "results": results }))?)
}

/// `GET /_synapse/admin/v2/rooms/delete_status/{deleteId}`
pub async fn delete_status(hs: Homeserver, req: Ruma<Admin<DeleteStatus>>) -> AdminResult {
    admin(&hs, &req)?;
    let id = req.body.arg(0)?.to_owned();
    let record =
        hs.room_deletion(&id)?.ok_or_else(|| Error::not_found(format!("delete id '{id}' not found")))?;
    Ok(Reply::ok(deletion_json(&id, &record))?)
}

fn report_json(
    hs: &Homeserver,
    id: u64,
    r: &hearth_core::admin::rooms::ReportRecord,
) -> Result<Value, Error> {
    let summary = r.room_id.as_ref().map(|room| hs.rooms.summary(room)).transpose()?;
    let sender = r.event_id.as_ref().map(|e| hs.rooms.pdu(e)).transpose()?.flatten().map(|p| p.sender);
    Ok(json!({
        "id": id,
        "received_ts": r.ts,
        "room_id": r.room_id,
        "event_id": r.event_id,
        "user_id": r.reporter,
        "reason": r.reason,
        "score": r.score,
        "sender": sender,
        "canonical_alias": summary.as_ref().and_then(|s| s.canonical_alias.clone()),
        "name": summary.and_then(|s| s.name),
    }))
}

/// `GET /_synapse/admin/v1/event_reports`: reports of events, newest first by default.
pub async fn list_reports(hs: Homeserver, req: Ruma<Admin<ListReports>>) -> AdminResult {
    admin(&hs, &req)?;
    let r = &req.body;
    let page = r.page()?;
    let backwards = r.backwards(true)?;
    let (reporter, room, sender) = (r.param("user_id"), r.param("room_id"), r.param("event_sender_user_id"));
    let mut reports = Vec::new();
    for (id, report) in hs.event_reports()? {
        if reporter.is_some_and(|u| !report.reporter.as_str().contains(u))
            || room.is_some_and(|x| !report.room_id.as_ref().is_some_and(|id| id.as_str().contains(x)))
        {
            continue;
        }
        let value = report_json(&hs, id, &report)?;
        if sender.is_some_and(|s| value["sender"].as_str() != Some(s)) {
            continue;
        }
        reports.push(value);
    }
    if backwards {
        reports.reverse();
    }
    let total = reports.len();
    let mut body = json!({ "event_reports": page.apply(reports), "total": total });
    if let Some(next) = page.next(total) {
        body["next_token"] = json!(next);
    }
    Ok(Reply::ok(body)?)
}

fn report_id(req: &Ruma<Admin<impl Send>>) -> Result<u64, Error> {
    req.body.arg(0)?.parse().map_err(|_| {
        Error::invalid_param("The report_id parameter must be a string representing a positive integer.")
    })
}

/// `GET /_synapse/admin/v1/event_reports/{reportId}`, with the event reported.
pub async fn get_report(hs: Homeserver, req: Ruma<Admin<GetReport>>) -> AdminResult {
    admin(&hs, &req)?;
    let id = report_id(&req)?;
    let report = hs.event_report(id)?.ok_or_else(|| Error::not_found("Event report not found"))?;
    let mut body = report_json(&hs, id, &report)?;
    let event = match &report.event_id {
        Some(event_id) => {
            hs.rooms.pdu_record(event_id)?.and_then(|r| serde_json::from_str::<Value>(&r.json).ok())
        }
        None => None,
    };
    body["event_json"] = event.unwrap_or(Value::Null);
    Ok(Reply::ok(body)?)
}

/// `DELETE /_synapse/admin/v1/event_reports/{reportId}`
pub async fn delete_report(hs: Homeserver, req: Ruma<Admin<DeleteReport>>) -> AdminResult {
    admin(&hs, &req)?;
    let id = report_id(&req)?;
    if !hs.delete_event_report(id)? {
        return Err(Error::not_found("Event report not found").into());
    }
    Ok(Reply::empty())
}
