//! The WebSocket channel (`/ws`, `/_matrix/client/unstable/io.hearth.ws`): one connection
//! carries sync frames pushed the moment something happens and the client's commands. The
//! protocol is documented in `docs/websocket.md`.
//!
//! These two routes are the only hand-written paths: the channel is Hearth's own, so no ruma
//! endpoint describes it.

use ruma::events::room::member::MembershipState;
use std::time::Duration;

use axum::{
    extract::{
        Query, State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use futures_util::{SinkExt, StreamExt};
use hearth_core::{
    Error, ErrorCode, Homeserver,
    events::NewEvent,
    presence::PresenceState,
    rooms::append::TxnEndpoint,
    sync::{SyncRequest, compute::carries_nothing},
    users::Session,
};
use ruma::{OwnedEventId, OwnedRoomId, api::client::filter::FilterDefinition, events::TimelineEventType};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::response::ApiError;

pub const WS_PATH: &str = "/_matrix/client/unstable/io.hearth.ws";
pub const WS_SHORT_PATH: &str = "/ws";
/// Frames waiting to be written at most; a client that falls further behind is disconnected.
const QUEUE: usize = 256;
/// Initial read and write buffer of a socket; both grow for a larger frame when one comes.
const SOCKET_BUFFER: usize = 4096;
/// Commands are small; the largest legitimate one is an event of at most 64 KiB plus framing.
const MAX_INCOMING_FRAME: usize = 1 << 20;
/// Server pings this often; a client silent for `IDLE_TIMEOUT` is disconnected.
const PING_EVERY: Duration = Duration::from_secs(30);
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Long-poll length of the sync loop behind the socket.
const SYNC_WAIT: Duration = Duration::from_secs(30);
/// Close codes (documented in docs/websocket.md).
pub const CLOSE_SLOW_CONSUMER: u16 = 4008;
pub const CLOSE_IDLE: u16 = 4000;
/// RFC 6455 "going away": the server is shutting down; the client reconnects with its token.
pub const CLOSE_GOING_AWAY: u16 = 1001;

#[derive(Debug, Deserialize)]
pub struct WsQuery {
    ticket: Option<String>,
    access_token: Option<String>,
}

/// `GET /ws`: authenticates (ticket, `Authorization` header, or token parameter) before any
/// upgrade, so a bad ticket is an HTTP 401 with a Matrix error.
pub async fn connect(
    State(hs): State<Homeserver>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let session = match authenticate(&hs, &query, &headers).await {
        Ok(session) => session,
        Err(error) => return ApiError(error).into_response(),
    };
    match upgrade {
        // Frames are small and the queue already bounds what waits: tungstenite's default 128 KiB
        // read and write buffers would make an idle connection cost a quarter of a megabyte.
        Ok(upgrade) => upgrade
            .read_buffer_size(SOCKET_BUFFER)
            .write_buffer_size(SOCKET_BUFFER)
            .max_message_size(MAX_INCOMING_FRAME)
            .on_upgrade(move |socket| serve(hs, session, socket)),
        Err(_) => ApiError(Error::bad_request("Expected a WebSocket upgrade")).into_response(),
    }
}

async fn authenticate(hs: &Homeserver, query: &WsQuery, headers: &HeaderMap) -> Result<Session, Error> {
    let session = if let Some(ticket) = &query.ticket {
        hs.redeem_ws_ticket(ticket).await?
    } else {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match bearer.or(query.access_token.as_deref()) {
            Some(token) => hs.users.authenticate(token.trim())?,
            None => return Err(Error::missing_token("Missing access token or ticket")),
        }
    };
    hs.users.check_not_locked(&session.user_id)?;
    Ok(session)
}

fn frame(value: &Value) -> Message {
    Message::Text(value.to_string().into())
}

fn error_frame(id: Option<&Value>, error: &Error) -> Value {
    let (_, kind) = error.code().status_and_kind();
    let message = if error.is_internal() { "Internal server error".to_owned() } else { error.to_string() };
    let body =
        serde_json::to_value(ruma::api::error::StandardErrorBody::new(kind, message)).unwrap_or_default();
    json!({"type": "error", "id": id, "errcode": body["errcode"], "error": body["error"]})
}

/// One connection: a writer task drains the bounded queue; this task reads commands and runs
/// the sync loop when asked.
async fn serve(hs: Homeserver, session: Session, socket: WebSocket) {
    let _open = hearth_core::metrics::Open::enter(&hs.activity.websockets);
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
    let mut writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            let closing = matches!(message, Message::Close(_));
            if sink.send(message).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let _ = hs.set_presence(&session.user_id, PresenceState::Online, None).await;
    hs.presence_connection(&session.user_id, true);
    let ack = json!({
        "type": "ack",
        "user_id": session.user_id,
        "device_id": session.device_id,
        "server_time": hearth_core::util::now_ms(),
    });
    let _ = tx.try_send(frame(&ack));

    let mut sync_task: Option<tokio::task::JoinHandle<SyncEnd>> = None;
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut last_heard = tokio::time::Instant::now();
    let shutting_down = hs.notifier.closed();
    tokio::pin!(shutting_down);
    let close_reason = loop {
        tokio::select! {
            incoming = stream.next() => {
                let Some(Ok(message)) = incoming else { break None };
                last_heard = tokio::time::Instant::now();
                let Message::Text(text) = message else { continue };
                // The command object is one level around what the HTTP endpoint takes as its
                // body, so content may nest exactly as deep as over HTTP.
                if let Err(error) =
                    hearth_core::json::check_depth(text.as_bytes(), hearth_core::json::MAX_DEPTH + 1)
                {
                    let err = error_frame(None, &error);
                    if tx.try_send(frame(&err)).is_err() { break Some(CLOSE_SLOW_CONSUMER); }
                    continue;
                }
                let Ok(command) = serde_json::from_str::<Value>(text.as_str()) else {
                    let err = error_frame(None, &Error::not_json("Frame is not JSON"));
                    if tx.try_send(frame(&err)).is_err() { break Some(CLOSE_SLOW_CONSUMER); }
                    continue;
                };
                if command["type"] == "sync" {
                    if let Some(task) = sync_task.take() { task.abort(); }
                    match sync_request(&hs, &session, &command) {
                        Ok(request) => sync_task = Some(tokio::spawn(sync_loop(hs.clone(), session.clone(), request, tx.clone()))),
                        Err(error) => { let _ = tx.try_send(frame(&error_frame(command.get("id"), &error))); }
                    }
                    continue;
                }
                let reply = match run_command(&hs, &session, &command).await {
                    Ok(result) => json!({"type": "result", "id": command.get("id"), "result": result}),
                    Err(error) => error_frame(command.get("id"), &error),
                };
                if tx.try_send(frame(&reply)).is_err() { break Some(CLOSE_SLOW_CONSUMER); }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > IDLE_TIMEOUT { break Some(CLOSE_IDLE); }
                if tx.try_send(Message::Ping(Vec::new().into())).is_err() { break Some(CLOSE_SLOW_CONSUMER); }
            }
            () = tx.closed() => break None,
            () = &mut shutting_down => break Some(CLOSE_GOING_AWAY),
            ended = sync_ended(&mut sync_task) => {
                sync_task = None;
                if ended == SyncEnd::QueueFull { break Some(CLOSE_SLOW_CONSUMER); }
            }
        }
    };
    if let Some(task) = sync_task.take() {
        task.abort();
    }
    if let Some(code) = close_reason {
        let reason = match code {
            CLOSE_SLOW_CONSUMER => "too slow to keep up",
            CLOSE_GOING_AWAY => "server shutting down",
            _ => "idle",
        };
        // Best effort: a consumer too slow to read frames may not read this one either.
        let _ = tx.try_send(Message::Close(Some(CloseFrame { code, reason: reason.into() })));
    }
    drop(tx);
    if close_reason == Some(CLOSE_SLOW_CONSUMER) {
        // Its backlog is exactly what must not be kept: drop it with the socket.
        writer.abort();
    } else if let Err(_elapsed) = tokio::time::timeout(Duration::from_secs(5), &mut writer).await {
        writer.abort();
    }
    hs.presence_connection(&session.user_id, false);
}

/// Why a connection's sync loop stopped.
#[derive(Debug, PartialEq, Eq)]
enum SyncEnd {
    /// The client is not reading fast enough: its queue is full.
    QueueFull,
    /// The sync failed (the error frame was sent) or the connection is closing.
    Stopped,
}

/// Completes when the running sync loop (if any) ends.
async fn sync_ended(task: &mut Option<tokio::task::JoinHandle<SyncEnd>>) -> SyncEnd {
    match task {
        Some(handle) => handle.await.unwrap_or(SyncEnd::Stopped),
        None => std::future::pending().await,
    }
}

fn sync_request(hs: &Homeserver, session: &Session, command: &Value) -> Result<SyncRequest, Error> {
    let since = match command.get("since").and_then(Value::as_str) {
        Some(t) => Some(
            hearth_core::rooms::view::parse_sync_token(t)
                .ok_or_else(|| Error::invalid_param(format!("Unknown sync token {t}")))?,
        ),
        None => None,
    };
    let filter: FilterDefinition = match command.get("filter") {
        None | Some(Value::Null) => FilterDefinition::default(),
        Some(Value::String(id)) => {
            let stored = hs
                .account_data
                .filter(&session.user_id, id)?
                .ok_or_else(|| Error::invalid_param("Unknown filter"))?;
            serde_json::from_value(stored).map_err(Error::internal)?
        }
        Some(inline) => serde_json::from_value(inline.clone()).map_err(|e| Error::bad_json(e.to_string()))?,
    };
    Ok(SyncRequest {
        since,
        timeout: Duration::ZERO,
        full_state: false,
        use_state_after: false,
        filter,
        set_presence: None,
    })
}

/// Pushes a sync frame for everything new, as soon as it is published, until the connection
/// ends. The first frame comes at once (an initial sync when there is no `since`).
async fn sync_loop(
    hs: Homeserver,
    session: Session,
    mut request: SyncRequest,
    tx: mpsc::Sender<Message>,
) -> SyncEnd {
    let mut first = true;
    loop {
        let result = hs.sync(&session.user_id, &session.txn_device(), &request).await;
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                let _ = tx.try_send(frame(&error_frame(None, &error)));
                return SyncEnd::Stopped;
            }
        };
        let next = hearth_core::rooms::view::parse_sync_token(&response.next_batch);
        let has_content = first || !carries_nothing(&response);
        if has_content {
            let out = SyncFrame { kind: "sync", body: response.into() };
            let text = match serde_json::to_string(&out) {
                Ok(text) => text,
                Err(e) => {
                    let _ = tx.try_send(frame(&error_frame(None, &Error::internal(e))));
                    return SyncEnd::Stopped;
                }
            };
            match tx.try_send(Message::Text(text.into())) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => return SyncEnd::QueueFull,
                Err(mpsc::error::TrySendError::Closed(_)) => return SyncEnd::Stopped,
            }
        }
        first = false;
        request.since = next.or(request.since);
        request.timeout = SYNC_WAIT;
    }
}

/// A sync pushed over the socket: the /sync response body, marked as such.
#[derive(serde::Serialize)]
struct SyncFrame {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    body: crate::sync::SyncBody,
}

fn field<'a>(command: &'a Value, name: &str) -> Result<&'a Value, Error> {
    command.get(name).ok_or_else(|| Error::new(ErrorCode::MissingParam, format!("Missing field {name}")))
}

fn room(command: &Value) -> Result<OwnedRoomId, Error> {
    let id = field(command, "room_id")?
        .as_str()
        .ok_or_else(|| Error::invalid_param("room_id must be a string"))?;
    OwnedRoomId::try_from(id).map_err(|e| Error::invalid_param(format!("Invalid room_id: {e}")))
}

fn event_id(command: &Value, name: &str) -> Result<OwnedEventId, Error> {
    let id = field(command, name)?
        .as_str()
        .ok_or_else(|| Error::invalid_param(format!("{name} must be a string")))?;
    OwnedEventId::try_from(id).map_err(|e| Error::invalid_param(format!("Invalid {name}: {e}")))
}

fn string(command: &Value, name: &str) -> Result<String, Error> {
    field(command, name)?
        .as_str()
        .map(ToOwned::to_owned)
        .ok_or_else(|| Error::invalid_param(format!("{name} must be a string")))
}

/// Runs one client command with the same rules (and errors) as its HTTP endpoint.
async fn run_command(hs: &Homeserver, session: &Session, command: &Value) -> Result<Value, Error> {
    let user = &session.user_id;
    let txn = |c: &Value| {
        let id = c
            .get("txn_id")
            .and_then(Value::as_str)
            .map_or_else(|| hearth_core::util::random_string(16), ToOwned::to_owned);
        Some((session.txn_device(), id))
    };
    // A socket opened before its account was locked stops acting for it.
    hs.users.check_not_locked(user)?;
    let kind = command["type"].as_str().unwrap_or_default();
    if matches!(kind, "send" | "state" | "redact")
        && let Some(fake) = hs.shadow_ban_answer(session)?
    {
        return Ok(json!({"event_id": fake}));
    }
    match kind {
        "ping" => Ok(json!({})),
        "send" => {
            let kind = TimelineEventType::from(string(command, "event_type")?);
            let content = field(command, "content")?.clone();
            let (room_id, txn) = (room(command)?, txn(command));
            hs.check_send_limit(session, &room_id, TxnEndpoint::Send(&kind), txn.as_ref()).await?;
            let event_id = hs.rooms.append(&room_id, user, NewEvent::message(kind, content), txn).await?;
            Ok(json!({"event_id": event_id}))
        }
        "state" => {
            let kind = TimelineEventType::from(string(command, "event_type")?);
            let key = command.get("state_key").and_then(Value::as_str).unwrap_or_default();
            let content = field(command, "content")?.clone();
            let room_id = room(command)?;
            hs.check_send_limit(session, &room_id, TxnEndpoint::Send(&kind), None).await?;
            let event_id = hs.rooms.append(&room_id, user, NewEvent::state(kind, key, content), None).await?;
            Ok(json!({"event_id": event_id}))
        }
        "redact" => {
            let reason = command.get("reason").and_then(Value::as_str).map(ToOwned::to_owned);
            let redacted = event_id(command, "event_id")?;
            let (room_id, txn) = (room(command)?, txn(command));
            hs.check_send_limit(session, &room_id, TxnEndpoint::Redact(&redacted), txn.as_ref()).await?;
            let event_id = hs.rooms.redact(&room_id, user, &redacted, reason, txn).await?;
            Ok(json!({"event_id": event_id}))
        }
        "typing" => {
            let typing = field(command, "typing")?
                .as_bool()
                .ok_or_else(|| Error::invalid_param("typing must be a boolean"))?;
            let timeout = command.get("timeout").and_then(Value::as_u64).unwrap_or(30_000);
            let timeout = typing.then(|| Duration::from_millis(timeout.max(1000)));
            hs.rooms.set_typing(&room(command)?, user, timeout).await?;
            Ok(json!({}))
        }
        "receipt" => {
            let kind = command.get("receipt_type").and_then(Value::as_str).unwrap_or("m.read");
            if !matches!(kind, "m.read" | "m.read.private") {
                return Err(Error::invalid_param(format!("Unknown receipt type {kind}")));
            }
            let thread = command.get("thread_id").and_then(Value::as_str).unwrap_or_default();
            hs.rooms
                .set_receipt(&room(command)?, user, kind, &event_id(command, "event_id")?, thread)
                .await?;
            Ok(json!({}))
        }
        "read_markers" => {
            let room_id = room(command)?;
            if command.get("fully_read").is_some() {
                if hs.rooms.membership(&room_id, user)? != Some(MembershipState::Join) {
                    return Err(Error::forbidden("You are not joined to this room"));
                }
                let content = json!({"event_id": event_id(command, "fully_read")?});
                hs.account_data.set_room_managed(user, &room_id, "m.fully_read", content).await?;
            }
            for (key, kind) in [("read", "m.read"), ("read_private", "m.read.private")] {
                if command.get(key).is_some() {
                    hs.rooms.set_receipt(&room_id, user, kind, &event_id(command, key)?, "").await?;
                }
            }
            Ok(json!({}))
        }
        "presence" => {
            let state = PresenceState::parse(&string(command, "presence")?)?;
            let status = command.get("status_msg").map(|m| m.as_str().map(ToOwned::to_owned));
            hs.set_presence(user, state, status).await?;
            Ok(json!({}))
        }
        other => Err(Error::new(ErrorCode::Unrecognized, format!("Unknown command {other:?}"))),
    }
}

pub const TICKET_PATH: &str = "/_matrix/client/unstable/io.hearth/ws_ticket";

/// `POST /_matrix/client/unstable/io.hearth/ws_ticket`: a single-use ticket, valid for a
/// minute, to open the WebSocket where headers cannot be set.
pub async fn ticket(
    State(hs): State<Homeserver>,
    Query(query): Query<WsQuery>,
    headers: HeaderMap,
) -> Response {
    let query = WsQuery { ticket: None, ..query };
    let result = async {
        let session = authenticate(&hs, &query, &headers).await?;
        let (ticket, ttl) = hs.issue_ws_ticket(&session).await?;
        Ok::<_, Error>(json!({"ticket": ticket, "expires_in_ms": ttl.as_millis()}))
    }
    .await;
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => ApiError(error).into_response(),
    }
}
