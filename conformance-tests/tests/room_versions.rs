//! Rooms of every room version this server supports: created, joined, written to, read back
//! through sync and redacted, with each version's own create content and auth rules (knocking
//! from version 7, restricted joins from version 8), locally and across two Hearths.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";
const A: &str = "hs-a.test";

/// The versions createRoom accepts, oldest first.
const VERSIONS: [&str; 12] = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"];

/// An event ID as a path segment: version 3 IDs are standard base64, with `/` and `+`.
fn path_id(event_id: &str) -> String {
    event_id.replace('$', "%24").replace('/', "%2F").replace('+', "%2B")
}

/// Waits until `viewer`'s server shows `user`'s membership in `room` as `membership`.
async fn wait_for_membership(viewer: &Client, room: &str, user: &str, membership: &str) {
    for _ in 0..100 {
        let reply = viewer.get(&format!("{V3}/rooms/{room}/state/m.room.member/{user}")).await;
        if reply.status.is_success() && reply.body["membership"] == membership {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{user} never showed as {membership} in {room} to {:?}", viewer.user_id);
}

async fn member_content(client: &Client, room: &str, user: &str) -> Value {
    client.get(&format!("{V3}/rooms/{room}/state/m.room.member/{user}")).await.assert_ok().clone()
}

#[tokio::test]
async fn rooms_of_every_version_are_created_joined_synced_and_redacted() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;

    let caps = alice.get(&format!("{V3}/capabilities")).await;
    let available = &caps.assert_ok()["capabilities"]["m.room_versions"]["available"];
    for version in VERSIONS {
        assert_eq!(available[version], "stable", "{available}");
    }

    let since = bob.since_now().await;
    let mut rooms = Vec::new();
    for version in VERSIONS {
        let room = alice.create_room(json!({"room_version": version, "preset": "public_chat"})).await;
        let create = alice.get(&format!("{V3}/rooms/{room}/state/m.room.create")).await;
        let create = create.assert_ok();
        assert_eq!(create["room_version"], version);
        // `creator` went away in version 11, where the create event's sender is the creator.
        let numeric: u32 = version.parse().unwrap();
        if numeric < 11 {
            assert_eq!(create["creator"], alice.user_id(), "v{version}: {create}");
        } else {
            assert!(create.get("creator").is_none(), "v{version}: {create}");
        }
        bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
        let text = format!("hello in v{version}");
        let sent = alice.send_text(&room, &format!("t{version}"), &text).await;
        bob.send_text(&room, &format!("b{version}"), &format!("reply in v{version}")).await;
        let redacted = alice
            .put(&format!("{V3}/rooms/{room}/redact/{}/r{version}", path_id(&sent)), json!({"reason": "x"}))
            .await;
        redacted.assert_ok();
        let event = alice.get(&format!("{V3}/rooms/{room}/event/{}", path_id(&sent))).await;
        assert!(event.assert_ok()["content"].as_object().unwrap().is_empty(), "v{version}: {:?}", event.body);
        rooms.push((room, version));
    }
    // Bob's sync shows every room with both messages.
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    bob.sync_until(Some(&since), "every room's reply", |body| {
        let mut seen = seen.lock().unwrap();
        for (room, version) in &rooms {
            let events = &body["rooms"]["join"][room]["timeline"]["events"];
            let reply = format!("reply in v{version}");
            if events.as_array().into_iter().flatten().any(|e| e["content"]["body"] == reply.as_str()) {
                seen.insert(room.clone());
            }
        }
        seen.len() == rooms.len()
    })
    .await;

    for version in ["13", "banana"] {
        alice
            .post(&format!("{V3}/createRoom"), json!({"room_version": version}))
            .await
            .assert_error(400, "M_UNSUPPORTED_ROOM_VERSION");
    }
}

#[tokio::test]
async fn knocking_needs_room_version_7() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let carol = Client::register(&server.base_url, "carol", "pw").await;
    let knock_rule =
        json!([{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]);
    let v7 = alice.create_room(json!({"room_version": "7", "initial_state": knock_rule})).await;
    let v6 = alice.create_room(json!({"room_version": "6", "initial_state": knock_rule})).await;

    carol.post(&format!("{V3}/knock/{v7}"), json!({"reason": "please"})).await.assert_ok();
    let members = alice.get(&format!("{V3}/rooms/{v7}/members?membership=knock")).await;
    assert_eq!(members.assert_ok()["chunk"][0]["state_key"], carol.user_id());
    alice.post(&format!("{V3}/rooms/{v7}/invite"), json!({"user_id": carol.user_id()})).await.assert_ok();
    carol.post(&format!("{V3}/rooms/{v7}/join"), json!({})).await.assert_ok();

    // Version 6 knows no knocking: the auth rules refuse the knock.
    carol.post(&format!("{V3}/knock/{v6}"), json!({})).await.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn restricted_joins_from_room_version_8() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let space = alice.create_room(json!({"preset": "public_chat", "room_version": "9"})).await;
    let rule = json!([{"type": "m.room.join_rules", "state_key": "", "content": {
        "join_rule": "restricted",
        "allow": [{"type": "m.room_membership", "room_id": space}],
    }}]);
    let mut restricted = Vec::new();
    for version in ["7", "8", "9"] {
        let room = alice.create_room(json!({"room_version": version, "initial_state": rule})).await;
        restricted.push((version, room));
    }
    // Not in the allowed room yet: refused everywhere.
    for (_, room) in &restricted {
        bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_error(403, "M_FORBIDDEN");
    }
    bob.post(&format!("{V3}/join/{space}"), json!({})).await.assert_ok();
    for (version, room) in &restricted {
        let reply = bob.post(&format!("{V3}/join/{room}"), json!({})).await;
        if *version == "7" {
            // Version 7 has no restricted join rule, so the room admits no one uninvited.
            reply.assert_error(403, "M_FORBIDDEN");
            continue;
        }
        reply.assert_ok();
        let member = member_content(&alice, room, bob.user_id()).await;
        assert_eq!(member["membership"], "join");
        assert_eq!(member["join_authorised_via_users_server"], alice.user_id(), "v{version}: {member}");
        bob.send_text(room, &format!("r{version}"), "let in").await;
    }
}

#[tokio::test]
async fn a_version_9_room_is_joined_across_servers() {
    join_across_servers("9").await;
}

/// Version 2: event IDs chosen by their server and carried in the event, references as
/// `[id, hashes]` pairs.
#[tokio::test]
async fn a_version_2_room_is_joined_across_servers() {
    join_across_servers("2").await;
}

/// Version 1: as 2, with state resolution v1.
#[tokio::test]
async fn a_version_1_room_is_joined_across_servers() {
    join_across_servers("1").await;
}

async fn join_across_servers(version: &str) {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let room = alice
        .create_room(
            json!({"room_version": version, "preset": "public_chat", "name": "old", "topic": "old rules"}),
        )
        .await;

    let joined = bob.post(&format!("{V3}/join/{room}?via={A}"), json!({})).await;
    assert_eq!(joined.assert_ok()["room_id"], json!(room), "{:?}", joined.body);
    let create = bob.get(&format!("{V3}/rooms/{room}/state/m.room.create")).await;
    assert_eq!(create.assert_ok()["room_version"], version);
    assert_eq!(create.body["creator"], alice.user_id());
    let name = bob.get(&format!("{V3}/rooms/{room}/state/m.room.name")).await;
    assert_eq!(name.assert_ok()["name"], "old");
    wait_for_membership(&alice, &room, bob.user_id(), "join").await;

    alice.send_text(&room, "a1", "hello from A").await;
    bob.wait_for_bodies(&room, &["hello from A"]).await;
    bob.send_text(&room, "b1", "hello from B").await;
    alice.wait_for_bodies(&room, &["hello from B"]).await;

    let topic = bob.put(&format!("{V3}/rooms/{room}/state/m.room.topic"), json!({"topic": "from B"})).await;
    // Bob has power 0 and topics need 50: refused on B already.
    topic.assert_error(403, "M_FORBIDDEN");
    alice
        .put(&format!("{V3}/rooms/{room}/state/m.room.topic"), json!({"topic": "new rules"}))
        .await
        .assert_ok();
    for _ in 0..100 {
        let topic = bob.get(&format!("{V3}/rooms/{room}/state/m.room.topic")).await;
        if topic.body["topic"] == "new rules" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let topic = bob.get(&format!("{V3}/rooms/{room}/state/m.room.topic")).await;
    assert_eq!(topic.assert_ok()["topic"], "new rules");

    // Leaving and rejoining over federation.
    bob.post(&format!("{V3}/rooms/{room}/leave"), json!({})).await.assert_ok();
    wait_for_membership(&alice, &room, bob.user_id(), "leave").await;
    bob.post(&format!("{V3}/join/{room}?via={A}"), json!({})).await.assert_ok();
    wait_for_membership(&alice, &room, bob.user_id(), "join").await;
    alice.send_text(&room, "a2", "welcome back").await;
    bob.wait_for_bodies(&room, &["welcome back"]).await;
}

#[tokio::test]
async fn a_restricted_version_9_room_is_joined_across_servers() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let space = alice.create_room(json!({"preset": "public_chat", "room_version": "9"})).await;
    let rule = json!([{"type": "m.room.join_rules", "state_key": "", "content": {
        "join_rule": "restricted",
        "allow": [{"type": "m.room_membership", "room_id": space}],
    }}]);
    let room =
        alice.create_room(json!({"room_version": "9", "initial_state": rule, "name": "members only"})).await;

    // Not in the allowed room: A refuses to make the join.
    bob.post(&format!("{V3}/join/{room}?via={A}"), json!({})).await.assert_error(403, "M_FORBIDDEN");

    bob.post(&format!("{V3}/join/{space}?via={A}"), json!({})).await.assert_ok();
    wait_for_membership(&alice, &space, bob.user_id(), "join").await;
    // Now one of A's users vouches for the join and A signs it.
    let joined = bob.post(&format!("{V3}/join/{room}?via={A}"), json!({})).await;
    assert_eq!(joined.assert_ok()["room_id"], json!(room), "{:?}", joined.body);
    wait_for_membership(&alice, &room, bob.user_id(), "join").await;
    let member = member_content(&alice, &room, bob.user_id()).await;
    assert_eq!(member["join_authorised_via_users_server"], alice.user_id(), "{member}");
    let on_b = member_content(&bob, &room, bob.user_id()).await;
    assert_eq!(on_b["membership"], "join");
    let name = bob.get(&format!("{V3}/rooms/{room}/state/m.room.name")).await;
    assert_eq!(name.assert_ok()["name"], "members only");

    bob.send_text(&room, "b1", "vouched for").await;
    alice.wait_for_bodies(&room, &["vouched for"]).await;
}
