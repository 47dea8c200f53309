//! Rooms over the Client-Server API: creation, membership, messages, state, redaction,
//! aliases, and the forbidden case of each.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

/// Pages `/messages` backwards from the end until the server says there is no more.
async fn all_messages_backwards(client: &Client, room: &str, limit: u32) -> Vec<Value> {
    let mut events = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut path = format!("{V3}/rooms/{room}/messages?dir=b&limit={limit}");
        if let Some(from) = &from {
            path.push_str(&format!("&from={from}"));
        }
        let reply = client.get(&path).await;
        let body = reply.assert_ok();
        events.extend(body["chunk"].as_array().unwrap().iter().cloned());
        match body.get("end").and_then(Value::as_str) {
            Some(end) => from = Some(end.to_owned()),
            None => return events,
        }
    }
}

#[tokio::test]
async fn two_users_exchange_a_thousand_messages_and_page_through_all() {
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "private_chat", "name": "Chat"})).await;
    alice.post(&format!("{V3}/rooms/{room}/invite"), json!({"user_id": "@bob:localhost"})).await.assert_ok();
    // An empty body means an empty object, as on Synapse (matrix-nio sends joins that way).
    bob.request_raw(Method::POST, &format!("{V3}/rooms/{room}/join"), Vec::new()).await.assert_ok();

    let mut sent = Vec::new();
    for i in 0..1000 {
        let sender = if i % 2 == 0 { &alice } else { &bob };
        sent.push(sender.send_text(&room, &format!("txn{i}"), &format!("message {i}")).await);
    }

    let events = all_messages_backwards(&bob, &room, 73).await;
    let messages: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = sent.iter().rev().map(String::as_str).collect();
    assert_eq!(messages.len(), 1000, "every message exactly once");
    assert_eq!(messages, expected, "newest first, no gap, no duplicate");
    // The whole history down to the create event is there too.
    assert_eq!(events.last().unwrap()["type"], "m.room.create");

    // Forward pagination from the start sees the same messages in send order.
    let mut forward = Vec::new();
    let mut from = "t0".to_owned();
    loop {
        let reply = alice.get(&format!("{V3}/rooms/{room}/messages?dir=f&limit=250&from={from}")).await;
        let body = reply.assert_ok().clone();
        forward.extend(
            body["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .map(|e| e["event_id"].as_str().unwrap().to_owned()),
        );
        match body.get("end").and_then(Value::as_str) {
            Some(end) => from = end.to_owned(),
            None => break,
        }
    }
    assert_eq!(forward, sent);

    // Someone who was never in the room reads nothing.
    let carol = Client::register(&server.base_url, "carol", "pw").await;
    carol.get(&format!("{V3}/rooms/{room}/messages?dir=b")).await.assert_error(403, "M_FORBIDDEN");
    // A single event of a room one cannot read does not exist, as on Synapse.
    carol.get(&format!("{V3}/rooms/{room}/event/{}", sent[0])).await.assert_error(404, "M_NOT_FOUND");
    carol.get(&format!("{V3}/rooms/{room}/state")).await.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn send_is_idempotent_per_transaction_and_filters_apply() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({})).await;
    let first = alice.send_text(&room, "same", "once").await;
    let again = alice.send_text(&room, "same", "once").await;
    assert_eq!(first, again, "a retried transaction must not create a second event");
    let other_device = Client::login(&server.base_url, "alice", "pw").await;
    let third = other_device.send_text(&room, "same", "once").await;
    assert_ne!(first, third, "transaction IDs are per device");

    // The sending device sees its transaction ID; another device does not.
    let event = alice.get(&format!("{V3}/rooms/{room}/event/{first}")).await;
    assert_eq!(event.assert_ok()["unsigned"]["transaction_id"], "same");
    let event = other_device.get(&format!("{V3}/rooms/{room}/event/{first}")).await;
    assert!(event.assert_ok()["unsigned"].get("transaction_id").is_none());

    let filter = json!({"types": ["m.room.message"], "limit": 10}).to_string();
    let path = format!("{V3}/rooms/{room}/messages?dir=b&filter={}", urlencode(&filter));
    let reply = alice.get(&path).await;
    let chunk = reply.assert_ok()["chunk"].as_array().unwrap().clone();
    assert_eq!(chunk.len(), 2);
    assert!(chunk.iter().all(|e| e["type"] == "m.room.message"));
    let filter = json!({"not_types": ["m.room.*"]}).to_string();
    let reply = alice.get(&format!("{V3}/rooms/{room}/messages?dir=b&filter={}", urlencode(&filter))).await;
    assert!(reply.assert_ok()["chunk"].as_array().unwrap().is_empty());

    alice
        .get(&format!("{V3}/rooms/{room}/messages?dir=b&from=garbage"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .put(&format!("{V3}/rooms/{room}/send/m.room.message/f1"), json!({"body": 1.5}))
        .await
        .assert_error(400, "M_BAD_JSON");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn redaction() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let bobs = bob.send_text(&room, "b1", "oops").await;
    let alices = alice.send_text(&room, "a1", "important").await;

    // Without the redact power level, only one's own events.
    bob.put(&format!("{V3}/rooms/{room}/redact/{alices}/r1"), json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    let reply = bob.put(&format!("{V3}/rooms/{room}/redact/{bobs}/r2"), json!({"reason": "typo"})).await;
    let redaction = reply.assert_ok()["event_id"].as_str().unwrap().to_owned();
    // A moderator may redact anyone's.
    alice.put(&format!("{V3}/rooms/{room}/redact/{alices}/r3"), json!({})).await.assert_ok();

    let event = alice.get(&format!("{V3}/rooms/{room}/event/{bobs}")).await;
    let event = event.assert_ok();
    assert_eq!(event["content"], json!({}), "content is gone: {event}");
    assert_eq!(event["unsigned"]["redacted_because"]["event_id"], json!(redaction));
    assert_eq!(event["unsigned"]["redacted_because"]["content"]["reason"], "typo");
    // Pagination returns the redacted form too.
    let events = all_messages_backwards(&alice, &room, 50).await;
    let paged = events.iter().find(|e| e["event_id"] == json!(bobs)).unwrap();
    assert_eq!(paged["content"], json!({}));
    // An event this server does not have is redacted all the same, as Synapse does (it may be
    // another server's that has not arrived).
    bob.put(&format!("{V3}/rooms/{room}/redact/$nonexistent/r4"), json!({})).await.assert_ok();
}

#[tokio::test]
async fn membership_rules_are_enforced() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let carol = Client::register(&server.base_url, "carol", "pw").await;
    let room = alice.create_room(json!({"preset": "private_chat"})).await;

    // Invite-only: an uninvited user cannot join.
    carol.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_error(403, "M_FORBIDDEN");
    // A member without power cannot invite... (invite level is 0 in private_chat, so bob can once joined)
    alice.post(&format!("{V3}/rooms/{room}/invite"), json!({"user_id": "@bob:localhost"})).await.assert_ok();
    bob.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
    let joined = bob.get(&format!("{V3}/joined_rooms")).await;
    assert_eq!(joined.assert_ok()["joined_rooms"], json!([room]));

    // ... but cannot kick, ban or set power-protected state.
    bob.post(&format!("{V3}/rooms/{room}/kick"), json!({"user_id": "@alice:localhost"}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    bob.post(&format!("{V3}/rooms/{room}/ban"), json!({"user_id": "@carol:localhost"}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    bob.put(&format!("{V3}/rooms/{room}/state/m.room.name"), json!({"name": "mine"}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    bob.put(
        &format!("{V3}/rooms/{room}/state/m.room.power_levels"),
        json!({"users": {"@bob:localhost": 100}}),
    )
    .await
    .assert_error(403, "M_FORBIDDEN");

    // The moderator kicks, bans; a banned user cannot rejoin, even when invited.
    alice
        .post(&format!("{V3}/rooms/{room}/kick"), json!({"user_id": "@bob:localhost", "reason": "bye"}))
        .await
        .assert_ok();
    alice
        .post(&format!("{V3}/rooms/{room}/kick"), json!({"user_id": "@bob:localhost"}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    alice.post(&format!("{V3}/rooms/{room}/ban"), json!({"user_id": "@bob:localhost"})).await.assert_ok();
    bob.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_error(403, "M_FORBIDDEN");
    alice
        .post(&format!("{V3}/rooms/{room}/invite"), json!({"user_id": "@bob:localhost"}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    bob.get(&format!("{V3}/joined_rooms")).await.assert_ok();
    alice
        .post(&format!("{V3}/rooms/{room}/unban"), json!({"user_id": "@carol:localhost"}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    alice.post(&format!("{V3}/rooms/{room}/unban"), json!({"user_id": "@bob:localhost"})).await.assert_ok();
    alice.post(&format!("{V3}/rooms/{room}/invite"), json!({"user_id": "@bob:localhost"})).await.assert_ok();
    bob.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();

    // Members and joined members.
    let members = alice.get(&format!("{V3}/rooms/{room}/joined_members")).await;
    let joined = members.assert_ok()["joined"].as_object().unwrap().clone();
    assert_eq!(joined.len(), 2);
    assert_eq!(joined["@alice:localhost"]["display_name"], "alice");
    carol.get(&format!("{V3}/rooms/{room}/joined_members")).await.assert_error(403, "M_FORBIDDEN");
    let members = alice.get(&format!("{V3}/rooms/{room}/members?membership=join")).await;
    assert_eq!(members.assert_ok()["chunk"].as_array().unwrap().len(), 2);
    let members = alice.get(&format!("{V3}/rooms/{room}/members?not_membership=join")).await;
    assert!(members.assert_ok()["chunk"].as_array().unwrap().is_empty());

    // Leaving: history up to the leave stays readable, later messages are not.
    alice.send_text(&room, "before", "before leave").await;
    bob.post(&format!("{V3}/rooms/{room}/leave"), json!({})).await.assert_ok();
    let after = alice.send_text(&room, "after", "after leave").await;
    let seen = all_messages_backwards(&bob, &room, 100).await;
    assert!(seen.iter().any(|e| e["content"]["body"] == "before leave"));
    assert!(!seen.iter().any(|e| e["event_id"] == json!(after)), "a departed member saw a later message");
    bob.get(&format!("{V3}/rooms/{room}/event/{after}")).await.assert_error(404, "M_NOT_FOUND");
    bob.post(&format!("{V3}/rooms/{room}/forget"), json!({})).await.assert_ok();
    alice.post(&format!("{V3}/rooms/{room}/forget"), json!({})).await.assert_error(400, "M_UNKNOWN");

    // Unknown rooms.
    alice
        .post(&format!("{V3}/rooms/!nowhere:localhost/join"), json!({}))
        .await
        .assert_error(404, "M_NOT_FOUND");
    alice
        .get(&format!("{V3}/rooms/!nowhere:localhost/messages?dir=b"))
        .await
        .assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn state_aliases_and_room_versions() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(
        json!({"preset": "public_chat", "name": "Lobby", "topic": "Say hi", "room_alias_name": "lobby",
               "initial_state": [{"type": "m.room.avatar", "state_key": "", "content": {"url": "mxc://localhost/a"}}]}),
    )
    .await;
    let name = alice.get(&format!("{V3}/rooms/{room}/state/m.room.name/")).await;
    assert_eq!(name.assert_ok()["name"], "Lobby");
    let avatar = alice.get(&format!("{V3}/rooms/{room}/state/m.room.avatar")).await;
    assert_eq!(avatar.assert_ok()["url"], "mxc://localhost/a");
    let alias = alice.get(&format!("{V3}/rooms/{room}/state/m.room.canonical_alias")).await;
    assert_eq!(alias.assert_ok()["alias"], "#lobby:localhost");
    alice.get(&format!("{V3}/rooms/{room}/state/m.room.nothing")).await.assert_error(404, "M_NOT_FOUND");
    let all = alice.get(&format!("{V3}/rooms/{room}/state")).await;
    let types: Vec<String> =
        all.assert_ok().as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect();
    for t in [
        "m.room.create",
        "m.room.member",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.history_visibility",
        "m.room.topic",
    ] {
        assert!(types.iter().any(|x| x == t), "{t} missing from {types:?}");
    }
    let updated = alice.put(&format!("{V3}/rooms/{room}/state/m.room.topic"), json!({"topic": "New"})).await;
    updated.assert_ok();
    let topic = alice.get(&format!("{V3}/rooms/{room}/state/m.room.topic?format=event")).await;
    assert_eq!(topic.assert_ok()["unsigned"]["prev_content"]["topic"], "Say hi");
    assert_eq!(topic.body["unsigned"]["prev_sender"], json!(alice.user_id()));

    // Aliases: resolve, join by alias, duplicates, deletion rights.
    let resolved = bob.get(&format!("{V3}/directory/room/%23lobby:localhost")).await;
    assert_eq!(resolved.assert_ok()["room_id"], json!(room));
    bob.post(&format!("{V3}/join/%23lobby:localhost"), json!({})).await.assert_ok();
    create_room_error(&bob, json!({"room_alias_name": "lobby"}), 400, "M_ROOM_IN_USE").await;
    bob.put(&format!("{V3}/directory/room/%23lobby:localhost"), json!({"room_id": room}))
        .await
        .assert_error(409, "M_UNKNOWN");
    bob.put(&format!("{V3}/directory/room/%23bobs:localhost"), json!({"room_id": room})).await.assert_ok();
    let aliases = alice.get(&format!("{V3}/rooms/{room}/aliases")).await;
    assert_eq!(aliases.assert_ok()["aliases"].as_array().unwrap().len(), 2);
    bob.request(Method::DELETE, &format!("{V3}/directory/room/%23lobby:localhost"), None)
        .await
        .assert_error(403, "M_FORBIDDEN");
    bob.request(Method::DELETE, &format!("{V3}/directory/room/%23bobs:localhost"), None).await.assert_ok();
    bob.get(&format!("{V3}/directory/room/%23bobs:localhost")).await.assert_error(404, "M_NOT_FOUND");
    // A canonical alias must point at the room.
    alice
        .put(
            &format!("{V3}/rooms/{room}/state/m.room.canonical_alias"),
            json!({"alias": "#elsewhere:localhost"}),
        )
        .await
        .assert_error(400, "M_BAD_ALIAS");

    // Room versions.
    for version in ["10", "11", "12"] {
        let room = alice.create_room(json!({"room_version": version})).await;
        let create = alice.get(&format!("{V3}/rooms/{room}/state/m.room.create")).await;
        assert_eq!(create.assert_ok()["room_version"], version);
        alice.send_text(&room, "v", "works").await;
    }
    create_room_error(&alice, json!({"room_version": "13"}), 400, "M_UNSUPPORTED_ROOM_VERSION").await;
    // A bad initial state is refused before anything is created.
    let before =
        alice.get(&format!("{V3}/joined_rooms")).await.assert_ok()["joined_rooms"].as_array().unwrap().len();
    let bad = json!({"initial_state": [{"type": "m.room.topic", "state_key": "", "content": {"topic": "x", "weight": 1.5}}]});
    create_room_error(&alice, bad, 400, "M_BAD_JSON").await;
    let bad = json!({"initial_state": [{"type": "m.room.member", "state_key": "@alice:localhost", "content": {"membership": "join"}}]});
    create_room_error(&alice, bad, 400, "M_BAD_JSON").await;
    let after =
        alice.get(&format!("{V3}/joined_rooms")).await.assert_ok()["joined_rooms"].as_array().unwrap().len();
    assert_eq!(before, after, "a refused createRoom left a room behind");
    create_room_error(&alice, json!({"room_version": "banana"}), 400, "M_UNSUPPORTED_ROOM_VERSION").await;
}

async fn create_room_error(client: &Client, body: Value, status: u16, errcode: &str) {
    client.post(&format!("{V3}/createRoom"), body).await.assert_error(status, errcode);
}

#[tokio::test]
async fn events_survive_kill_9() {
    use hearth_conformance_tests::binary::HearthProcess;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let env = [("HEARTH_STORAGE__PATH", db.to_str().unwrap())];
    let process = HearthProcess::spawn(&[], &env);
    let alice = Client::register(&process.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({})).await;
    let mut sent = Vec::new();
    for i in 0..50 {
        sent.push(alice.send_text(&room, &format!("k{i}"), &format!("m{i}")).await);
    }
    process.kill9();
    let process = HearthProcess::spawn(&[], &env);
    let alice = Client { base_url: process.base_url.clone(), ..alice };
    let events = all_messages_backwards(&alice, &room, 20).await;
    let got: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, sent.into_iter().rev().collect::<Vec<_>>());
    // The room keeps working after the restart, on the same graph.
    alice.send_text(&room, "after", "after restart").await;
}
