//! The WebSocket channel: tickets, the ack, sync frames pushed as things happen, commands over
//! the socket, resuming without a gap, and refusals before the upgrade.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hearth_conformance_tests::{
    Client, TestServer,
    ws::{Socket, next_frame},
};
use serde_json::{Value, json};
use tokio_tungstenite::{MaybeTlsStream, connect_async, tungstenite::Message};

const V3: &str = "/_matrix/client/v3";

async fn ticket(client: &Client) -> String {
    let reply = client.post("/_matrix/client/unstable/io.hearth/ws_ticket", json!({})).await;
    reply.assert_ok()["ticket"].as_str().unwrap().to_owned()
}

async fn open(server: &TestServer, ticket: &str) -> Socket {
    let url = format!("ws://{}/ws?ticket={ticket}", server.addr);
    connect_async(url).await.expect("upgrade").0
}

async fn send(socket: &mut Socket, value: Value) {
    socket.send(Message::Text(value.to_string().into())).await.unwrap();
}

fn timeline_bodies(frame: &Value, room: &str) -> Vec<String> {
    frame["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .map(|events| {
            events.iter().filter_map(|e| e["content"]["body"].as_str().map(ToOwned::to_owned)).collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn push_commands_and_resume_without_a_gap() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.post(&format!("{V3}/createRoom"), json!({"preset": "public_chat"})).await;
    let room = room.assert_ok()["room_id"].as_str().unwrap().to_owned();
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();

    let mut socket = open(&server, &ticket(&bob).await).await;
    let ack = next_frame(&mut socket).await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["user_id"], "@bob:localhost");
    assert!(ack["server_time"].is_u64());

    send(&mut socket, json!({"type": "sync"})).await;
    let first = next_frame(&mut socket).await;
    assert_eq!(first["type"], "sync");
    assert!(first["rooms"]["join"][&room].is_object(), "{first}");

    // A message sent over HTTP by another user is pushed without any request.
    alice
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/h1"),
            json!({"msgtype": "m.text", "body": "over http"}),
        )
        .await
        .assert_ok();
    let pushed = next_frame(&mut socket).await;
    assert_eq!(timeline_bodies(&pushed, &room), vec!["over http"]);
    let mut since = pushed["next_batch"].as_str().unwrap().to_owned();

    // A send over the socket answers with a result and is visible over HTTP.
    send(
        &mut socket,
        json!({"type": "send", "id": 7, "room_id": room, "event_type": "m.room.message",
        "content": {"msgtype": "m.text", "body": "over the socket"}}),
    )
    .await;
    let mut event_id = None;
    for _ in 0..3 {
        let frame = next_frame(&mut socket).await;
        if frame["type"] == "result" {
            assert_eq!(frame["id"], 7);
            event_id = frame["result"]["event_id"].as_str().map(ToOwned::to_owned);
        } else if frame["type"] == "sync" {
            since = frame["next_batch"].as_str().unwrap().to_owned();
        }
        if event_id.is_some() {
            break;
        }
    }
    let event_id = event_id.expect("a result frame");
    let seen = alice.get(&format!("{V3}/rooms/{room}/event/{event_id}")).await;
    assert_eq!(seen.assert_ok()["content"]["body"], "over the socket");

    // Errors carry the command's id and the HTTP errcodes.
    send(&mut socket, json!({"type": "send", "id": "x", "room_id": "!nowhere:localhost", "event_type": "m.room.message", "content": {}})).await;
    send(&mut socket, json!({"type": "dance", "id": "y"})).await;
    let mut errors = Vec::new();
    while errors.len() < 2 {
        let frame = next_frame(&mut socket).await;
        if frame["type"] == "error" {
            errors.push((frame["id"].clone(), frame["errcode"].as_str().unwrap().to_owned()));
        } else if frame["type"] == "sync" {
            since = frame["next_batch"].as_str().unwrap().to_owned();
        }
    }
    assert!(errors.contains(&(json!("x"), "M_NOT_FOUND".to_owned())), "{errors:?}");
    assert!(errors.contains(&(json!("y"), "M_UNRECOGNIZED".to_owned())), "{errors:?}");

    // Drop the connection; messages sent meanwhile arrive after resuming from the last token.
    socket.close(None).await.ok();
    drop(socket);
    for i in 0..3 {
        alice
            .put(
                &format!("{V3}/rooms/{room}/send/m.room.message/gap{i}"),
                json!({"msgtype": "m.text", "body": format!("missed {i}")}),
            )
            .await
            .assert_ok();
    }
    let mut socket = open(&server, &ticket(&bob).await).await;
    assert_eq!(next_frame(&mut socket).await["type"], "ack");
    send(&mut socket, json!({"type": "sync", "since": since})).await;
    let resumed = next_frame(&mut socket).await;
    let bodies = timeline_bodies(&resumed, &room);
    assert!(
        bodies.ends_with(&["missed 0".to_owned(), "missed 1".to_owned(), "missed 2".to_owned()]),
        "{bodies:?}"
    );
    assert!(!bodies.contains(&"over http".to_owned()), "a message was delivered twice: {bodies:?}");
}

#[tokio::test]
async fn refusals_happen_before_the_upgrade() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let status = |result: Result<_, tokio_tungstenite::tungstenite::Error>| match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().clone().unwrap_or_default();
            let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            (response.status().as_u16(), json["errcode"].as_str().unwrap_or_default().to_owned())
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("the upgrade should have been refused"),
    };
    let base = format!("ws://{}", server.addr);
    assert_eq!(
        status(connect_async(format!("{base}/ws?ticket=garbage")).await),
        (401, "M_UNKNOWN_TOKEN".into())
    );
    assert_eq!(status(connect_async(format!("{base}/ws")).await), (401, "M_MISSING_TOKEN".into()));
    let one = ticket(&alice).await;
    let _socket = open(&server, &one).await;
    assert_eq!(
        status(connect_async(format!("{base}/ws?ticket={one}")).await),
        (401, "M_UNKNOWN_TOKEN".into()),
        "reused ticket"
    );
    // The long path works too, and so does a bearer token where headers can be set.
    let ticket2 = ticket(&alice).await;
    let (mut socket, _) =
        connect_async(format!("{base}/_matrix/client/unstable/io.hearth.ws?ticket={ticket2}")).await.unwrap();
    assert_eq!(next_frame(&mut socket).await["type"], "ack");
    server
        .client()
        .post("/_matrix/client/unstable/io.hearth/ws_ticket", json!({}))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn a_consumer_that_stops_reading_is_disconnected() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();

    // Bob's socket has a tiny receive buffer, asks for a sync, and then never reads again.
    let one = ticket(&bob).await;
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let stream = tcp.connect(server.addr).await.unwrap();
    let url = format!("ws://{}/ws?ticket={one}", server.addr);
    let (mut socket, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await.unwrap();
    assert_eq!(next_frame(&mut socket).await["type"], "ack");
    send(&mut socket, json!({"type": "sync"})).await;

    // Each message becomes a frame of its own of ~40 KB: far more than the kernel buffers and
    // the server's bounded queue can hold between them.
    let body = "x".repeat(40_000);
    for i in 0..700 {
        alice.send_text(&room, &format!("big-{i}"), &body).await;
    }

    // The server has given up on bob: reading what was buffered ends in a close, not in an
    // endless stream, and far short of all 700 messages.
    let mut delivered = 0;
    let mut close_code = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), socket.next()).await.expect("the socket ends") {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(text.as_str()).unwrap();
                delivered += timeline_bodies(&frame, &room).len();
            }
            Some(Ok(Message::Close(frame))) => {
                close_code = frame.map(|f| u16::from(f.code));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    assert!(delivered < 700, "a consumer that never read got everything: {delivered}");
    assert!(close_code.is_none_or(|c| c == 4008), "close code {close_code:?}");

    // Nothing was lost for bob: over HTTP, or a new socket, the messages are all there.
    let page = bob.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=5")).await;
    assert_eq!(page.assert_ok()["chunk"][0]["content"]["body"].as_str().unwrap().len(), 40_000);
    let mut fresh = open(&server, &ticket(&bob).await).await;
    assert_eq!(next_frame(&mut fresh).await["type"], "ack");
}

#[tokio::test]
async fn a_command_nested_past_the_limit_is_refused_and_one_at_the_limit_is_served() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.post(&format!("{V3}/createRoom"), json!({})).await;
    let room = room.assert_ok()["room_id"].as_str().unwrap().to_owned();
    let mut socket = open(&server, &ticket(&alice).await).await;
    assert_eq!(next_frame(&mut socket).await["type"], "ack");

    // The same limit as an HTTP body (64 levels) for the content inside the command.
    let nest = |levels: usize| (0..levels).fold(json!(0), |inner, _| json!({ "a": inner }));
    for (id, levels) in [(1, 64), (2, 65)] {
        let content = json!({"msgtype": "m.text", "body": format!("depth {levels}"), "d": nest(levels - 1)});
        let command = json!({"type": "send", "id": id, "room_id": room, "event_type": "m.room.message", "content": content});
        send(&mut socket, command).await;
    }
    let (accepted, refused) = (next_frame(&mut socket).await, next_frame(&mut socket).await);
    assert_eq!(accepted["type"], "result", "{accepted}");
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["errcode"], "M_BAD_JSON", "{refused}");
    let event_id = accepted["result"]["event_id"].as_str().unwrap();
    let seen = alice.get(&format!("{V3}/rooms/{room}/event/{event_id}")).await;
    assert_eq!(seen.assert_ok()["content"]["body"], "depth 64");
    alice.get(&format!("{V3}/sync?timeout=0")).await.assert_ok();
}
