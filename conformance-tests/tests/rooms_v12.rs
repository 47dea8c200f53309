//! Room version 12's privileged creators (MSC4289) and room IDs from the create event
//! (MSC4291), as clients meet them: createRoom, power levels, kicks, upgrades.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";
/// The largest integer canonical JSON can carry.
const MAX_INT: i64 = (1 << 53) - 1;

async fn three(server: &TestServer) -> (Client, Client, Client) {
    (
        Client::register(&server.base_url, "alice", "pw").await,
        Client::register(&server.base_url, "bob", "pw").await,
        Client::register(&server.base_url, "charlie", "pw").await,
    )
}

async fn state(client: &Client, room: &str, kind: &str) -> Value {
    client.get(&format!("{V3}/rooms/{room}/state/{kind}/")).await.assert_ok().clone()
}

async fn set_users(client: &Client, room: &str, users: Value) -> hearth_conformance_tests::client::Reply {
    let mut content = state(client, room, "m.room.power_levels").await;
    content["users"] = users;
    client.put(&format!("{V3}/rooms/{room}/state/m.room.power_levels/"), content).await
}

async fn kick(client: &Client, room: &str, user: &str) -> hearth_conformance_tests::client::Reply {
    client.post(&format!("{V3}/rooms/{room}/kick"), json!({"user_id": user})).await
}

#[tokio::test]
async fn creators_have_no_power_level_entry_and_outrank_every_admin() {
    let server = TestServer::start().await;
    let (alice, bob, _) = three(&server).await;
    let room = alice.create_room(json!({"room_version": "12", "preset": "public_chat"})).await;
    let pl = state(&alice, &room, "m.room.power_levels").await;
    assert_eq!(pl["users"], json!({}), "{pl}");
    assert_eq!(pl["events"]["m.room.tombstone"], json!(150), "{pl}");

    // Neither a client nor createRoom's override may list a creator.
    set_users(&alice, &room, json!({alice.user_id(): 100})).await.assert_error(400, "M_BAD_JSON");
    let override_creator = alice
        .post(
            &format!("{V3}/createRoom"),
            json!({"room_version": "12", "power_level_content_override": {"users": {alice.user_id(): 100}}}),
        )
        .await;
    override_creator.assert_error(400, "M_BAD_JSON");
    let with_bob = alice
        .create_room(json!({
            "room_version": "12",
            "invite": [bob.user_id()],
            "power_level_content_override": {"users": {bob.user_id(): 100}},
        }))
        .await;
    assert_eq!(state(&alice, &with_bob, "m.room.power_levels").await["users"], json!({bob.user_id(): 100}));
    // Beyond canonical JSON's range is not a level.
    set_users(&alice, &room, json!({bob.user_id(): MAX_INT + 1})).await.assert_error(400, "M_BAD_JSON");

    // An admin at the largest level still ranks below the creator, not the other way round.
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    set_users(&alice, &room, json!({bob.user_id(): MAX_INT})).await.assert_ok();
    kick(&bob, &room, alice.user_id()).await.assert_error(403, "M_FORBIDDEN");
    kick(&alice, &room, bob.user_id()).await.assert_ok();
}

#[tokio::test]
async fn additional_creators_are_validated_merged_and_privileged() {
    let server = TestServer::start().await;
    let (alice, bob, charlie) = three(&server).await;
    for bad in [
        json!("not-an-array"),
        json!(["@foo:example.com", 42]),
        json!(["@foo:example.com", "nope"]),
        json!(["@invalid:dom$ain$.com"]),
    ] {
        let reply = alice
            .post(
                &format!("{V3}/createRoom"),
                json!({"room_version": "12", "creation_content": {"additional_creators": bad}}),
            )
            .await;
        reply.assert_error(400, "M_BAD_JSON");
    }
    alice
        .create_room(json!({"room_version": "12", "creation_content": {"additional_creators": ["@foo:example.com", "@bar:baz.code"]}}))
        .await;

    let room = alice
        .create_room(json!({
            "room_version": "12",
            "preset": "public_chat",
            "creation_content": {"additional_creators": [bob.user_id()]},
        }))
        .await;
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    kick(&alice, &room, bob.user_id()).await.assert_error(403, "M_FORBIDDEN");
    bob.put(&format!("{V3}/rooms/{room}/state/m.room.name/"), json!({"name": "Bob's"})).await.assert_ok();
    set_users(&alice, &room, json!({bob.user_id(): 100})).await.assert_error(400, "M_BAD_JSON");

    // Trusted private chats make invitees creators, next to those named explicitly.
    let dm = alice
        .create_room(json!({
            "room_version": "12",
            "preset": "trusted_private_chat",
            "is_direct": true,
            "invite": [bob.user_id()],
            "creation_content": {"additional_creators": [charlie.user_id()]},
        }))
        .await;
    let create = state(&alice, &dm, "m.room.create").await;
    let mut creators: Vec<&str> =
        create["additional_creators"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    creators.sort_unstable();
    assert_eq!(creators, vec![bob.user_id(), charlie.user_id()]);
}

#[tokio::test]
async fn the_create_event_cannot_be_sent_again() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    for version in ["11", "12"] {
        let room = alice.create_room(json!({"room_version": version})).await;
        let reply = alice
            .put(
                &format!("{V3}/rooms/{room}/state/m.room.create/"),
                json!({"room_version": version, "entropy": 100}),
            )
            .await;
        reply.assert_error(400, "M_BAD_JSON");
    }
}

/// One upgrade case: who creates, the users map set before, who upgrades with which
/// additional creators, and the users map and creators the new room must have.
struct Upgrade<'a> {
    version: &'a str,
    users: Value,
    upgrader: &'a Client,
    additional: Vec<&'a str>,
    want_users: Value,
}

#[tokio::test]
async fn upgrades_to_v12_move_creators_out_of_the_users_map() {
    let server = TestServer::start().await;
    let (alice, bob, charlie) = three(&server).await;
    let (a, b, c) = (alice.user_id(), bob.user_id(), charlie.user_id());
    let cases = [
        Upgrade {
            version: "11",
            users: json!({b: 100}),
            upgrader: &bob,
            additional: vec![],
            want_users: json!({}),
        },
        Upgrade {
            version: "11",
            users: json!({b: 100, c: 100}),
            upgrader: &bob,
            additional: vec![],
            want_users: json!({c: 100}),
        },
        Upgrade {
            version: "12",
            users: json!({b: 150}),
            upgrader: &bob,
            additional: vec![c],
            want_users: json!({}),
        },
        Upgrade {
            version: "12",
            users: json!({b: 150, c: 50}),
            upgrader: &bob,
            additional: vec![c],
            want_users: json!({}),
        },
        Upgrade {
            version: "11",
            users: json!({a: 100, b: 100}),
            upgrader: &alice,
            additional: vec![b],
            want_users: json!({}),
        },
        Upgrade {
            version: "11",
            users: json!({a: 100, b: 100, c: 50}),
            upgrader: &alice,
            additional: vec![b],
            want_users: json!({c: 50}),
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let old = alice.create_room(json!({"room_version": case.version, "preset": "public_chat"})).await;
        for member in [&bob, &charlie] {
            member.post(&format!("{V3}/join/{old}"), json!({})).await.assert_ok();
        }
        set_users(&alice, &old, case.users.clone()).await.assert_ok();
        let mut body = json!({"new_version": "12"});
        if !case.additional.is_empty() {
            body["additional_creators"] = json!(case.additional);
        }
        let reply = case.upgrader.post(&format!("{V3}/rooms/{old}/upgrade"), body).await;
        let new = reply.assert_ok()["replacement_room"].as_str().unwrap().to_owned();

        let create = state(case.upgrader, &new, "m.room.create").await;
        assert_eq!(create["room_version"], "12", "case {i}");
        if case.additional.is_empty() {
            assert!(create.get("additional_creators").is_none(), "case {i}: {create}");
        } else {
            assert_eq!(create["additional_creators"], json!(case.additional), "case {i}");
        }
        assert_eq!(create["predecessor"], json!({"room_id": old}), "case {i}");
        let pl = state(case.upgrader, &new, "m.room.power_levels").await;
        assert_eq!(pl["users"], case.want_users, "case {i}: {pl}");
        let tombstone = state(case.upgrader, &old, "m.room.tombstone").await;
        assert_eq!(tombstone["replacement_room"], json!(new), "case {i}");
    }
}

#[tokio::test]
async fn upgrades_to_older_versions_keep_the_users_map() {
    let server = TestServer::start().await;
    let (alice, bob, _) = three(&server).await;
    let old = alice.create_room(json!({"room_version": "10", "preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{old}"), json!({})).await.assert_ok();
    set_users(&alice, &old, json!({alice.user_id(): 100, bob.user_id(): 50})).await.assert_ok();
    let reply = alice.post(&format!("{V3}/rooms/{old}/upgrade"), json!({"new_version": "11"})).await;
    let new = reply.assert_ok()["replacement_room"].as_str().unwrap().to_owned();
    let pl = state(&alice, &new, "m.room.power_levels").await;
    assert_eq!(pl["users"], json!({alice.user_id(): 100, bob.user_id(): 50}), "{pl}");
}

#[tokio::test]
async fn every_read_path_gives_the_create_event_its_room_id() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({"room_version": "12"})).await;
    let message = alice.send_text(&room, "t1", "hello").await;
    // MSC4291: the room ID is the create event's ID with another sigil.
    let create_id = format!("${}", room.trim_start_matches('!'));
    let find_create = |events: &Value| -> Value {
        events
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "m.room.create")
            .cloned()
            .expect("create event")
    };
    let all_state = alice.get(&format!("{V3}/rooms/{room}/state")).await.assert_ok().clone();
    let messages =
        alice.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=100")).await.assert_ok().clone();
    let event = alice.get(&format!("{V3}/rooms/{room}/event/{create_id}")).await.assert_ok().clone();
    let direct = alice.get(&format!("{V3}/rooms/{room}/context/{create_id}")).await.assert_ok().clone();
    let context =
        alice.get(&format!("{V3}/rooms/{room}/context/{message}?limit=100")).await.assert_ok().clone();
    let formatted =
        alice.get(&format!("{V3}/rooms/{room}/state/m.room.create/?format=event")).await.assert_ok().clone();
    for (path, create) in [
        ("/state", find_create(&all_state)),
        ("/messages", find_create(&messages["chunk"])),
        ("/event", event),
        ("/context direct", direct["event"].clone()),
        ("/context before", find_create(&context["events_before"])),
        ("/context state", find_create(&context["state"])),
        ("/state?format=event", formatted),
    ] {
        assert_eq!(create["event_id"], json!(create_id), "{path}: {create}");
        assert_eq!(create["room_id"], json!(room), "{path}: {create}");
    }
}
