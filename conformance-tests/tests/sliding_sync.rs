//! Simplified sliding sync (MSC4186) over HTTP: lists sorted by recency and cut to their ranges,
//! filters, `required_state` with wildcards, `$ME` and `$LAZY`, room subscriptions, what is
//! sent again and what is not, unknown positions, the long-poll, and each extension.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";
const SLIDING: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

async fn sliding(client: &Client, pos: Option<&str>, body: Value) -> Value {
    let path = match pos {
        Some(pos) => format!("{SLIDING}?pos={pos}&timeout=0"),
        None => SLIDING.to_owned(),
    };
    client.post(&path, body).await.assert_ok().clone()
}

fn pos(response: &Value) -> String {
    response["pos"].as_str().unwrap().to_owned()
}

fn bodies(room: &Value) -> Vec<String> {
    room["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

fn state_keys(room: &Value) -> Vec<(String, String)> {
    let mut keys: Vec<(String, String)> = room["required_state"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["state_key"].as_str().unwrap().to_owned()))
        .collect();
    keys.sort();
    keys
}

fn list(ranges: &Value, timeline_limit: u64, required_state: &Value, filters: &Value) -> Value {
    json!({"ranges": ranges, "timeline_limit": timeline_limit, "required_state": required_state, "filters": filters})
}

#[tokio::test]
async fn lists_follow_recency_ranges_and_required_state() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let versions = alice.get("/_matrix/client/versions").await;
    assert_eq!(versions.assert_ok()["unstable_features"]["org.matrix.simplified_msc3575"], json!(true));

    let mut rooms = Vec::new();
    for i in 0..4 {
        let room = bob.create_room(json!({"name": format!("room {i}"), "preset": "public_chat"})).await;
        alice.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
        rooms.push(room);
    }
    // Unnamed: named after its members.
    let unnamed = bob.create_room(json!({"preset": "public_chat"})).await;
    alice.post(&format!("{V3}/join/{unnamed}"), json!({})).await.assert_ok();
    bob.put(&format!("{V3}/profile/@bob:localhost/displayname"), json!({"displayname": "Bob"}))
        .await
        .assert_ok();
    bob.send_text(&rooms[1], "a", "one").await;
    bob.send_text(&rooms[3], "b", "three").await;
    // A topic change does not move a room up.
    bob.put(&format!("{V3}/rooms/{}/state/m.room.topic/", rooms[0]), json!({"topic": "t"})).await.assert_ok();

    let required = json!([
        ["m.room.name", ""],
        ["m.room.member", "$ME"],
        ["m.room.member", "$LAZY"],
        ["m.room.power_levels", "*"]
    ]);
    let body = json!({"lists": {"recent": list(&json!([[0, 1]]), 2, &required, &json!({}))}});
    let first = sliding(&alice, None, body.clone()).await;
    assert_eq!(first["lists"]["recent"]["count"], 5, "{first}");
    let shown: Vec<&String> = first["rooms"].as_object().unwrap().keys().collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
    let three = &first["rooms"][&rooms[3]];
    let one = &first["rooms"][&rooms[1]];
    assert!(three.is_object() && one.is_object(), "{first}");
    assert!(three["bump_stamp"].as_u64() > one["bump_stamp"].as_u64());
    assert_eq!(three["initial"], true);
    assert_eq!(three["name"], "room 3");
    assert_eq!(three["joined_count"], 2);
    assert_eq!(three["invited_count"], 0);
    assert_eq!(bodies(three), ["three"]);
    assert_eq!(three["timeline"].as_array().unwrap().len(), 2);
    assert_eq!(three["limited"], true);
    assert!(three["prev_batch"].is_string());
    assert_eq!(three["notification_count"], 1, "bob's message is unread: {three}");
    let keys = state_keys(three);
    let bob_id = bob.user_id().to_owned();
    let alice_id = alice.user_id().to_owned();
    for wanted in [
        ("m.room.name".to_owned(), String::new()),
        ("m.room.member".to_owned(), alice_id.clone()),
        ("m.room.member".to_owned(), bob_id.clone()),
        ("m.room.power_levels".to_owned(), String::new()),
    ] {
        assert!(keys.contains(&wanted), "{wanted:?} in {keys:?}");
    }
    assert!(!keys.iter().any(|(t, _)| t == "m.room.join_rules"), "{keys:?}");

    // The back-paginated history continues from prev_batch.
    let prev = three["prev_batch"].as_str().unwrap();
    let page = alice.get(&format!("{V3}/rooms/{}/messages?dir=b&from={prev}&limit=50", rooms[3])).await;
    assert!(page.assert_ok()["chunk"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"));

    // Nothing new: no rooms.
    let quiet = sliding(&alice, Some(&pos(&first)), body.clone()).await;
    assert!(quiet["rooms"].as_object().is_none_or(serde_json::Map::is_empty), "{quiet}");
    assert_eq!(quiet["lists"]["recent"]["count"], 5);

    // A message moves the unnamed room to the top: it arrives whole, with its heroes.
    bob.send_text(&unnamed, "c", "hello").await;
    let next = sliding(&alice, Some(&pos(&quiet)), body.clone()).await;
    let shown: Vec<&String> = next["rooms"].as_object().unwrap().keys().collect();
    assert_eq!(shown, [&unnamed], "{next}");
    let room = &next["rooms"][&unnamed];
    assert_eq!(room["initial"], true);
    assert!(room["name"].is_null());
    assert_eq!(room["heroes"], json!([{"user_id": bob_id, "displayname": "Bob"}]), "{room}");
    assert_eq!(room["num_live"], 1);

    // A room already sent gets only what is new.
    bob.send_text(&rooms[3], "d", "three again").await;
    let live = sliding(&alice, Some(&pos(&next)), body.clone()).await;
    let three = &live["rooms"][&rooms[3]];
    assert!(three["initial"].is_null(), "{three}");
    assert_eq!(bodies(three), ["three again"]);
    assert_ne!(three["limited"], true, "{three}");
    assert_eq!(three["num_live"], 1);
    assert_eq!(three["notification_count"], 2);

    // Reading it clears the count and sends the room again for it.
    let last = three["timeline"][0]["event_id"].as_str().unwrap().to_owned();
    alice.post(&format!("{V3}/rooms/{}/receipt/m.read/{last}", rooms[3]), json!({})).await.assert_ok();
    let read = sliding(&alice, Some(&pos(&live)), body.clone()).await;
    assert_eq!(read["rooms"][&rooms[3]]["notification_count"], 0, "{read}");
    assert!(read["rooms"][&rooms[3]]["timeline"].as_array().is_none_or(Vec::is_empty));

    // A superseded position and a made-up one are refused; a new connection starts afresh.
    alice
        .post(&format!("{SLIDING}?pos={}", pos(&first)), body.clone())
        .await
        .assert_error(400, "M_UNKNOWN_POS");
    alice.post(&format!("{SLIDING}?pos=nonsense"), body.clone()).await.assert_error(400, "M_UNKNOWN_POS");
    let again = sliding(&alice, None, body.clone()).await;
    assert_eq!(again["rooms"].as_object().unwrap().len(), 2);
    // Another connection of the same device keeps its own positions.
    let other = sliding(&alice, None, json!({"conn_id": "other", "lists": {}})).await;
    alice
        .post(&format!("{SLIDING}?pos={}", pos(&other)), json!({"lists": {}}))
        .await
        .assert_error(400, "M_UNKNOWN_POS");
    sliding(&alice, Some(&pos(&other)), json!({"conn_id": "other", "lists": {}})).await;
}

#[tokio::test]
async fn filters_subscriptions_and_wildcards() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let alice_id = alice.user_id().to_owned();
    let plain = alice.create_room(json!({"name": "plain"})).await;
    let encrypted = alice
        .create_room(json!({"name": "secret", "initial_state": [
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]}))
        .await;
    let space = alice.create_room(json!({"name": "space", "creation_content": {"type": "m.space"}})).await;
    alice
        .put(&format!("{V3}/rooms/{space}/state/m.space.child/{plain}"), json!({"via": ["localhost"]}))
        .await
        .assert_ok();
    let dm = bob
        .create_room(json!({"is_direct": true, "invite": [alice_id], "preset": "trusted_private_chat"}))
        .await;
    alice.put(&format!("{V3}/user/{alice_id}/rooms/{plain}/tags/m.favourite"), json!({})).await.assert_ok();
    let stranger = bob.create_room(json!({"name": "not alice's"})).await;

    let all = json!([[0, 20]]);
    let body = json!({
        "lists": {
            "invites": list(&all, 0, &json!([]), &json!({"is_invite": true})),
            "dms": list(&all, 0, &json!([]), &json!({"is_dm": true})),
            "encrypted": list(&all, 0, &json!([]), &json!({"is_encrypted": true})),
            "spaces": list(&all, 0, &json!([]), &json!({"room_types": ["m.space"]})),
            "not_spaces": list(&all, 0, &json!([]), &json!({"not_room_types": ["m.space"], "is_invite": false})),
            "in_space": list(&all, 0, &json!([]), &json!({"spaces": [space]})),
            "favourites": list(&all, 0, &json!([]), &json!({"tags": ["m.favourite"]})),
            "others": list(&all, 0, &json!([]), &json!({"not_tags": ["m.favourite"], "room_types": [null], "is_invite": false})),
        },
        "room_subscriptions": {
            encrypted.clone(): {"required_state": [["*", "*"]], "timeline_limit": 0},
            stranger.clone(): {"required_state": [["*", "*"]], "timeline_limit": 5},
        },
    });
    let response = sliding(&alice, None, body).await;
    let count = |name: &str| response["lists"][name]["count"].as_u64().unwrap();
    assert_eq!(count("invites"), 1, "{response}");
    assert_eq!(count("dms"), 1);
    assert_eq!(count("encrypted"), 1);
    assert_eq!(count("spaces"), 1);
    assert_eq!(count("not_spaces"), 2);
    assert_eq!(count("in_space"), 1);
    assert_eq!(count("favourites"), 1);
    assert_eq!(
        count("others"),
        1,
        "only the encrypted room: plain is a favourite, the rest a space or an invite"
    );

    let invite = &response["rooms"][&dm];
    assert_eq!(invite["is_dm"], true);
    let stripped = invite["invite_state"].as_array().unwrap();
    assert!(stripped.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == alice_id), "{invite}");
    assert!(invite["timeline"].as_array().is_none_or(Vec::is_empty));

    // The subscription's wildcard brings the whole state and no timeline; a room the user is
    // not in is not theirs to subscribe to.
    let secret = &response["rooms"][&encrypted];
    let keys = state_keys(secret);
    for kind in
        ["m.room.create", "m.room.encryption", "m.room.join_rules", "m.room.power_levels", "m.room.name"]
    {
        assert!(keys.iter().any(|(t, _)| t == kind), "{kind} in {keys:?}");
    }
    assert!(secret["timeline"].as_array().is_none_or(Vec::is_empty));
    assert!(response["rooms"][&stranger].is_null(), "{response}");
}

#[tokio::test]
async fn a_long_poll_wakes_for_a_message_and_extensions_carry_the_rest() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let (alice_id, bob_id) = (alice.user_id().to_owned(), bob.user_id().to_owned());
    let room = alice.create_room(json!({"name": "chat", "invite": [bob_id]})).await;
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let otks = json!({"signed_curve25519:AAAA": {"key": "k", "signatures": {}}});
    bob.post(&format!("{V3}/keys/upload"), json!({"one_time_keys": otks})).await.assert_ok();
    bob.put(&format!("{V3}/user/{bob_id}/account_data/org.example.global"), json!({"a": 1}))
        .await
        .assert_ok();
    bob.put(&format!("{V3}/user/{bob_id}/rooms/{room}/account_data/org.example.room"), json!({"b": 2}))
        .await
        .assert_ok();
    let event = alice.send_text(&room, "m1", "first").await;
    alice.post(&format!("{V3}/rooms/{room}/receipt/m.read/{event}"), json!({})).await.assert_ok();

    let extensions = json!({
        "to_device": {"enabled": true},
        "e2ee": {"enabled": true},
        "account_data": {"enabled": true},
        "receipts": {"enabled": true},
        "typing": {"enabled": true},
    });
    let body = |since: Option<&str>| {
        let mut ext = extensions.clone();
        if let Some(since) = since {
            ext["to_device"]["since"] = json!(since);
        }
        json!({"lists": {"all": list(&json!([[0, 9]]), 5, &json!([]), &json!({}))}, "extensions": ext})
    };
    let first = sliding(&bob, None, body(None)).await;
    let ext = &first["extensions"];
    assert_eq!(ext["e2ee"]["device_one_time_keys_count"]["signed_curve25519"], 1, "{ext}");
    assert!(
        ext["account_data"]["global"].as_array().unwrap().iter().any(|e| e["type"] == "org.example.global")
    );
    assert!(ext["account_data"]["global"].as_array().unwrap().iter().any(|e| e["type"] == "m.push_rules"));
    assert_eq!(ext["account_data"]["rooms"][&room][0]["content"], json!({"b": 2}));
    assert!(ext["receipts"]["rooms"][&room]["content"][&event]["m.read"][&alice_id]["ts"].is_u64(), "{ext}");
    let to_device_since = ext["to_device"]["next_batch"].as_str().unwrap().to_owned();

    // A long-poll from there waits, and wakes with the message sent meanwhile.
    let poll = {
        let bob = bob.clone();
        let body = body(Some(&to_device_since));
        let pos = pos(&first);
        tokio::spawn(async move { bob.post(&format!("{SLIDING}?pos={pos}&timeout=20000"), body).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!poll.is_finished(), "nothing happened yet: the long-poll waits");
    alice.send_text(&room, "m2", "second").await;
    let woke = poll.await.unwrap();
    let woke = woke.assert_ok();
    assert_eq!(bodies(&woke["rooms"][&room]), ["second"], "{woke}");

    // Typing, a to-device message, new keys and account data arrive through the extensions.
    alice
        .put(&format!("{V3}/rooms/{room}/typing/{alice_id}"), json!({"typing": true, "timeout": 30000}))
        .await
        .assert_ok();
    let bob_device = bob.device_id.clone().unwrap();
    let message = json!({"messages": {bob_id.clone(): {bob_device: {"hello": "there"}}}});
    alice.put(&format!("{V3}/sendToDevice/org.example.hi/t1"), message).await.assert_ok();
    alice.post(&format!("{V3}/keys/upload"), json!({"device_keys": alice.device_keys()})).await.assert_ok();
    bob.put(&format!("{V3}/user/{bob_id}/rooms/{room}/account_data/org.example.room"), json!({"b": 3}))
        .await
        .assert_ok();
    let mut pos_now = pos(woke);
    let mut since = to_device_since;
    let (mut typing, mut to_device, mut changed, mut room_data) = (false, Vec::new(), false, false);
    for _ in 0..20 {
        let reply = bob.post(&format!("{SLIDING}?pos={pos_now}&timeout=1000"), body(Some(&since))).await;
        let reply = reply.assert_ok();
        let ext = &reply["extensions"];
        typing |= ext["typing"]["rooms"][&room]["content"]["user_ids"] == json!([alice_id]);
        to_device.extend(ext["to_device"]["events"].as_array().into_iter().flatten().cloned());
        changed |=
            ext["e2ee"]["device_lists"]["changed"].as_array().is_some_and(|c| c.contains(&json!(alice_id)));
        room_data |= ext["account_data"]["rooms"][&room]
            .as_array()
            .is_some_and(|d| d.iter().any(|e| e["content"] == json!({"b": 3})));
        pos_now = pos(reply);
        since = ext["to_device"]["next_batch"].as_str().unwrap().to_owned();
        if typing && !to_device.is_empty() && changed && room_data {
            break;
        }
    }
    assert!(typing && changed && room_data, "typing {typing}, keys {changed}, account data {room_data}");
    assert_eq!(to_device.len(), 1, "{to_device:?}");
    assert_eq!(to_device[0]["content"], json!({"hello": "there"}));
    assert_eq!(to_device[0]["sender"], json!(alice_id));
    // Acknowledged by the next request's `since`: not delivered again.
    let after = sliding(&bob, Some(&pos_now), body(Some(&since))).await;
    assert!(after["extensions"]["to_device"]["events"].as_array().is_none_or(Vec::is_empty), "{after}");
}

#[tokio::test]
async fn rooms_back_in_the_window_catch_up_and_extensions_follow_membership() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let carol = Client::register(&server.base_url, "carol", "pw").await;
    let (alice_id, bob_id, carol_id) =
        (alice.user_id().to_owned(), bob.user_id().to_owned(), carol.user_id().to_owned());
    let old = alice.create_room(json!({"name": "old", "preset": "public_chat"})).await;
    let new = alice.create_room(json!({"name": "new", "preset": "public_chat"})).await;
    let gone = alice.create_room(json!({"name": "gone", "preset": "public_chat"})).await;
    for room in [&old, &new, &gone] {
        bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    }
    bob.send_text(&new, "n", "newest").await;
    let extensions = json!({"receipts": {"enabled": true}, "typing": {"enabled": true},
        "account_data": {"enabled": true}});
    // Only the two most recent rooms are in the window: `new` (a message) and `gone` (created last).
    let body = json!({"lists": {"top": list(&json!([[0, 1]]), 1, &json!([]), &json!({}))}, "extensions": extensions});
    let first = sliding(&bob, None, body.clone()).await;
    assert!(first["rooms"][&new].is_object() && first["rooms"][&gone].is_object(), "{first}");
    assert!(first["rooms"][&old].is_null(), "{first}");

    // While `old` is outside the window, alice reads in it and bob tags it.
    let event = alice.send_text(&old, "o", "old news").await;
    alice.post(&format!("{V3}/rooms/{old}/receipt/m.read/{event}"), json!({})).await.assert_ok();
    bob.put(&format!("{V3}/user/{bob_id}/rooms/{old}/account_data/org.example.note"), json!({"n": 1}))
        .await
        .assert_ok();
    // Leaving and forgetting a room in the same window is reported, not refused.
    bob.post(&format!("{V3}/rooms/{gone}/leave"), json!({})).await.assert_ok();
    bob.post(&format!("{V3}/rooms/{gone}/forget"), json!({})).await.assert_ok();
    bob.send_text(&new, "n2", "newer").await;
    let away = sliding(&bob, Some(&pos(&first)), body.clone()).await;
    assert!(away["rooms"][&old].is_null(), "{away}");
    let leave = &away["rooms"][&gone]["timeline"];
    assert!(
        leave
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["content"]["membership"] == "leave" && e["state_key"] == json!(bob_id)),
        "{away}"
    );

    // A message brings `old` back to the top: its receipt and account data come with it.
    alice.send_text(&old, "o2", "old again").await;
    let back = sliding(&bob, Some(&pos(&away)), body.clone()).await;
    assert_eq!(bodies(&back["rooms"][&old]), ["old again"], "{back}");
    let receipts = &back["extensions"]["receipts"]["rooms"][&old]["content"];
    assert!(receipts[&event]["m.read"][&alice_id].is_object(), "{back}");
    let data = back["extensions"]["account_data"]["rooms"][&old].as_array().unwrap();
    assert!(data.iter().any(|e| e["type"] == "org.example.note"), "{back}");

    // An invitee sees the invite, not the room's receipts or typing.
    alice.post(&format!("{V3}/rooms/{old}/invite"), json!({"user_id": carol_id})).await.assert_ok();
    alice
        .put(&format!("{V3}/rooms/{old}/typing/{alice_id}"), json!({"typing": true, "timeout": 30000}))
        .await
        .assert_ok();
    let invited = sliding(&carol, None, body).await;
    assert!(invited["rooms"][&old]["invite_state"].is_array(), "{invited}");
    assert!(invited["extensions"]["receipts"]["rooms"][&old].is_null(), "{invited}");
    assert!(invited["extensions"]["typing"]["rooms"][&old].is_null(), "{invited}");
}

#[tokio::test]
async fn requests_beyond_the_bounds_are_refused() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let ranges: Vec<Value> = (0..101).map(|i| json!([i, i])).collect();
    let body = json!({"lists": {"l": {"ranges": ranges, "timeline_limit": 1}}});
    alice.post(SLIDING, body).await.assert_error(400, "M_INVALID_PARAM");
    let lists: serde_json::Map<String, Value> =
        (0..101).map(|i| (format!("l{i}"), json!({"ranges": [[0, 1]], "timeline_limit": 1}))).collect();
    alice.post(SLIDING, json!({"lists": lists})).await.assert_error(400, "M_INVALID_PARAM");
    // Overlapping ranges show each room once.
    alice.create_room(json!({})).await;
    let body = json!({"lists": {"l": {"ranges": [[0, 5], [0, 5], [0, 0]], "timeline_limit": 1}}});
    let reply = sliding(&alice, None, body).await;
    assert_eq!(reply["rooms"].as_object().unwrap().len(), 1);
}
