//! Admin endpoints about the server itself: federation destinations and background updates.

use hearth_core::{Error, Homeserver, metrics::DestinationStatus};
use ruma::OwnedServerName;
use serde_json::{Value, json};

use super::{Admin, AdminResult, Reply, admin, admin_paths};
use crate::extract::Ruma;

admin_paths! {
    ListDestinations: GET "/_synapse/admin/v1/federation/destinations";
    GetDestination: GET "/_synapse/admin/v1/federation/destinations/{destination}";
    DestinationRooms: GET "/_synapse/admin/v1/federation/destinations/{destination}/rooms";
    ResetDestination: POST "/_synapse/admin/v1/federation/destinations/{destination}/reset_connection";
    BackgroundUpdatesEnabled: GET "/_synapse/admin/v1/background_updates/enabled";
    BackgroundUpdatesStatus: GET "/_synapse/admin/v1/background_updates/status";
    SendServerNotice: POST "/_synapse/admin/v1/send_server_notice";
    SendServerNoticeTxn: PUT "/_synapse/admin/v1/send_server_notice/{txnId}";
}

#[derive(Debug, serde::Deserialize)]
struct NoticeBody {
    user_id: ruma::OwnedUserId,
    content: Value,
    #[serde(rename = "type", default = "message_type")]
    kind: String,
    #[serde(default)]
    state_key: Option<String>,
}

fn message_type() -> String {
    "m.room.message".to_owned()
}

async fn notice(hs: &Homeserver, req: &Ruma<Admin<impl Send>>, txn: Option<String>) -> AdminResult {
    let session = admin(hs, req)?;
    let b: NoticeBody = req.body.json_required()?;
    if !b.content.is_object() {
        return Err(Error::bad_json("content must be an object").into());
    }
    // A retried PUT answers with its first event: transactions are scoped to the admin.
    let txn = txn.map(|t| (ruma::OwnedDeviceId::from(format!("admin-notice:{}", session.user_id)), t));
    let event_id = hs.send_server_notice(&b.user_id, &b.kind, b.state_key, b.content, txn).await?;
    Ok(Reply::ok(json!({ "event_id": event_id }))?)
}

/// `POST /_synapse/admin/v1/send_server_notice`
pub async fn send_server_notice(hs: Homeserver, req: Ruma<Admin<SendServerNotice>>) -> AdminResult {
    notice(&hs, &req, None).await
}

/// `PUT /_synapse/admin/v1/send_server_notice/{txnId}`
pub async fn send_server_notice_txn(hs: Homeserver, req: Ruma<Admin<SendServerNoticeTxn>>) -> AdminResult {
    let txn = req.body.arg(0)?.to_owned();
    notice(&hs, &req, Some(txn)).await
}

fn destination_json(destination: &str, status: &DestinationStatus) -> Value {
    json!({
        "destination": destination,
        "retry_last_ts": status.retry_last_ts.unwrap_or(0),
        "retry_interval": status.retry_interval_ms,
        "failure_ts": status.failing_since,
        // Deliveries are tracked by time here, not by stream position.
        "last_successful_stream_ordering": null,
    })
}

/// Every destination this process has sent to or has something queued for.
fn destinations(hs: &Homeserver) -> Result<Vec<(String, DestinationStatus)>, Error> {
    let mut all: std::collections::BTreeMap<String, DestinationStatus> =
        hs.federation.destinations.all().into_iter().map(|(d, s)| (d.to_string(), s)).collect();
    for destination in hs.backlogs()?.federation.into_keys() {
        all.entry(destination).or_default();
    }
    Ok(all.into_iter().collect())
}

/// `GET /_synapse/admin/v1/federation/destinations`
pub async fn list_destinations(hs: Homeserver, req: Ruma<Admin<ListDestinations>>) -> AdminResult {
    admin(&hs, &req)?;
    let r = &req.body;
    let filter = r.param("destination").map(str::to_lowercase);
    let mut list: Vec<(String, DestinationStatus)> = destinations(&hs)?
        .into_iter()
        .filter(|(d, _)| filter.as_ref().is_none_or(|f| d.to_lowercase().contains(f)))
        .collect();
    match r.param("order_by").unwrap_or("destination") {
        "destination" => {}
        "retry_last_ts" => list.sort_by_key(|(_, s)| s.retry_last_ts),
        "retry_interval" => list.sort_by_key(|(_, s)| s.retry_interval_ms),
        "failure_ts" => list.sort_by_key(|(_, s)| s.failing_since),
        "last_successful_stream_ordering" => {}
        other => return Err(Error::invalid_param(format!("Unknown order_by: {other}")).into()),
    }
    if r.backwards(false)? {
        list.reverse();
    }
    let total = list.len();
    let page = r.page()?;
    let items: Vec<Value> = page.apply(list).iter().map(|(d, s)| destination_json(d, s)).collect();
    let mut body = json!({ "destinations": items, "total": total });
    if let Some(next) = page.next(total) {
        body["next_token"] = json!(next.to_string());
    }
    Ok(Reply::ok(body)?)
}

fn known(hs: &Homeserver, req: &Ruma<Admin<impl Send>>) -> Result<(String, DestinationStatus), Error> {
    admin(hs, req)?;
    let name = req.body.arg(0)?;
    destinations(hs)?
        .into_iter()
        .find(|(d, _)| d == name)
        .ok_or_else(|| Error::not_found("Unknown destination"))
}

/// `GET /_synapse/admin/v1/federation/destinations/{destination}`
pub async fn get_destination(hs: Homeserver, req: Ruma<Admin<GetDestination>>) -> AdminResult {
    let (destination, status) = known(&hs, &req)?;
    Ok(Reply::ok(destination_json(&destination, &status))?)
}

/// `GET /_synapse/admin/v1/federation/destinations/{destination}/rooms`: rooms shared with it.
pub async fn destination_rooms(hs: Homeserver, req: Ruma<Admin<DestinationRooms>>) -> AdminResult {
    let (destination, _) = known(&hs, &req)?;
    let server =
        OwnedServerName::try_from(destination.as_str()).map_err(|e| Error::invalid_param(e.to_string()))?;
    let rooms = hs.rooms_shared_with(&server)?;
    let total = rooms.len();
    let page = req.body.page()?;
    let items: Vec<Value> =
        page.apply(rooms).into_iter().map(|r| json!({ "room_id": r, "stream_ordering": null })).collect();
    let mut body = json!({ "rooms": items, "total": total });
    if let Some(next) = page.next(total) {
        body["next_token"] = json!(next.to_string());
    }
    Ok(Reply::ok(body)?)
}

/// `POST /_synapse/admin/v1/federation/destinations/{destination}/reset_connection`: forgets
/// the backoff and retries at once.
pub async fn reset_destination(hs: Homeserver, req: Ruma<Admin<ResetDestination>>) -> AdminResult {
    let (destination, _) = known(&hs, &req)?;
    let server =
        OwnedServerName::try_from(destination.as_str()).map_err(|e| Error::invalid_param(e.to_string()))?;
    if !hs.federation.destinations.reset(&server) {
        return Err(
            Error::bad_request("The retry timing does not need to be reset for this destination.").into()
        );
    }
    hs.federation.poke([server.as_ref()]);
    Ok(Reply::empty())
}

/// `GET /_synapse/admin/v1/background_updates/enabled`: Hearth's schema changes run at start-up,
/// before it serves, so nothing runs in the background to pause.
pub async fn background_updates_enabled(
    hs: Homeserver,
    req: Ruma<Admin<BackgroundUpdatesEnabled>>,
) -> AdminResult {
    admin(&hs, &req)?;
    Ok(Reply::ok(json!({ "enabled": true }))?)
}

/// `GET /_synapse/admin/v1/background_updates/status`
pub async fn background_updates_status(
    hs: Homeserver,
    req: Ruma<Admin<BackgroundUpdatesStatus>>,
) -> AdminResult {
    admin(&hs, &req)?;
    Ok(Reply::ok(json!({ "enabled": true, "current_updates": {} }))?)
}
