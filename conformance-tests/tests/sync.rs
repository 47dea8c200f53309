//! /sync: initial and incremental, gaps filled from prev_batch, long-polling, restarts,
//! invites and leaves, account data and ephemeral events, filters.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

async fn sync(client: &Client, since: Option<&str>, extra: &str) -> Value {
    let mut path = format!("{V3}/sync?timeout=0{extra}");
    if let Some(since) = since {
        path.push_str(&format!("&since={since}"));
    }
    client.get(&path).await.assert_ok().clone()
}

fn timeline<'a>(response: &'a Value, room: &str) -> &'a Value {
    &response["rooms"]["join"][room]["timeline"]
}

fn ids(events: &Value) -> Vec<String> {
    events
        .as_array()
        .map_or_else(Vec::new, |a| a.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect())
}

#[tokio::test]
async fn initial_then_incremental_never_misses_or_repeats() {
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"name": "Sync", "invite": ["@bob:localhost"]})).await;
    bob.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();

    let first = sync(&bob, None, "").await;
    let joined = &first["rooms"]["join"][&room];
    assert!(joined.is_object(), "{first}");
    assert_eq!(joined["summary"]["m.joined_member_count"], 2);
    let mut seen: Vec<String> = ids(&joined["timeline"]["events"]);
    let mut since = first["next_batch"].as_str().unwrap().to_owned();

    // Several rounds of send-then-sync, some with gaps bigger than the timeline limit.
    let mut sent = Vec::new();
    for round in 0..6 {
        let burst = if round % 2 == 0 { 3 } else { 25 };
        for i in 0..burst {
            sent.push(alice.send_text(&room, &format!("r{round}m{i}"), &format!("{round}/{i}")).await);
        }
        let next = sync(&bob, Some(&since), "").await;
        let tl = timeline(&next, &room);
        let mut got = ids(&tl["events"]);
        if tl["limited"] == json!(true) {
            // Fill the gap from prev_batch back to what the client already has.
            let mut from = tl["prev_batch"].as_str().unwrap().to_owned();
            let mut earlier = Vec::new();
            'fill: loop {
                let page = bob.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=7&from={from}")).await;
                let body = page.assert_ok().clone();
                for id in ids(&body["chunk"]) {
                    if seen.contains(&id) {
                        break 'fill;
                    }
                    earlier.push(id);
                }
                match body["end"].as_str() {
                    Some(end) => from = end.to_owned(),
                    None => break,
                }
            }
            earlier.reverse();
            earlier.extend(got);
            got = earlier;
        }
        seen.extend(got);
        since = next["next_batch"].as_str().unwrap().to_owned();
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an event was delivered twice");
    let messages: Vec<&String> = seen.iter().filter(|id| sent.contains(id)).collect();
    assert_eq!(messages, sent.iter().collect::<Vec<_>>(), "every message, once, in order");

    // Nothing new: an incremental sync with a timeout of 0 is empty.
    let idle = sync(&bob, Some(&since), "").await;
    // Empty sections may be left out, as Synapse does.
    assert!(idle["rooms"]["join"].as_object().is_none_or(serde_json::Map::is_empty), "{idle}");
    // A sync token is also a pagination boundary: back from it are the latest messages.
    let back = bob.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=1&from={since}")).await;
    assert_eq!(ids(&back.assert_ok()["chunk"]), vec![sent.last().unwrap().clone()]);
    let members = bob.get(&format!("{V3}/rooms/{room}/members?at={since}")).await;
    assert_eq!(members.assert_ok()["chunk"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn long_poll_returns_when_another_member_sends() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let since = sync(&bob, None, "").await["next_batch"].as_str().unwrap().to_owned();

    let waiter = {
        let bob = bob.clone();
        let since = since.clone();
        tokio::spawn(async move { bob.get(&format!("{V3}/sync?timeout=60000&since={since}")).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "the long-poll returned before anything happened");
    let event = alice.send_text(&room, "ping", "ping").await;
    let reply = tokio::time::timeout(std::time::Duration::from_secs(30), waiter).await.unwrap().unwrap();
    assert_eq!(ids(&timeline(reply.assert_ok(), &room)["events"]), vec![event]);

    // A user outside the room is not woken by it.
    let carol = Client::register(&server.base_url, "carol", "pw").await;
    let carol_since = sync(&carol, None, "").await["next_batch"].as_str().unwrap().to_owned();
    let carol_wait = {
        let carol = carol.clone();
        tokio::spawn(async move { carol.get(&format!("{V3}/sync?timeout=1500&since={carol_since}")).await })
    };
    alice.send_text(&room, "ping2", "ping2").await;
    let reply = carol_wait.await.unwrap();
    assert!(reply.assert_ok()["rooms"]["join"].as_object().is_none_or(serde_json::Map::is_empty));
}

#[tokio::test]
async fn an_old_since_token_works_across_a_restart() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({})).await;
    let since = sync(&alice, None, "").await["next_batch"].as_str().unwrap().to_owned();
    let server = server.restart().await;
    let alice = Client { base_url: server.base_url.clone(), ..alice };
    let event = alice.send_text(&room, "after", "after restart").await;
    let next = sync(&alice, Some(&since), "").await;
    assert_eq!(ids(&timeline(&next, &room)["events"]), vec![event]);
    alice.get(&format!("{V3}/sync?since=nonsense")).await.assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn invites_leaves_account_data_and_ephemeral() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let since = sync(&bob, None, "").await["next_batch"].as_str().unwrap().to_owned();
    let room = alice.create_room(json!({"name": "Party", "invite": ["@bob:localhost"]})).await;

    let invited = sync(&bob, Some(&since), "").await;
    let state = &invited["rooms"]["invite"][&room]["invite_state"]["events"];
    let types: Vec<&str> = state.as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"m.room.name") && types.contains(&"m.room.member"), "{types:?}");
    let since = invited["next_batch"].as_str().unwrap().to_owned();

    bob.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
    let joined = sync(&bob, Some(&since), "").await;
    let room_state = &joined["rooms"]["join"][&room];
    assert!(room_state.is_object(), "{joined}");
    let since = joined["next_batch"].as_str().unwrap().to_owned();

    bob.put(&format!("{V3}/user/@bob:localhost/account_data/m.direct"), json!({"@alice:localhost": [room]}))
        .await
        .assert_ok();
    alice
        .put(&format!("{V3}/rooms/{room}/typing/@alice:localhost"), json!({"typing": true, "timeout": 30000}))
        .await
        .assert_ok();
    let event = alice.send_text(&room, "hey", "hey").await;
    bob.post(&format!("{V3}/rooms/{room}/receipt/m.read/{event}"), json!({})).await.assert_ok();
    let next = sync(&bob, Some(&since), "").await;
    let data = next["account_data"]["events"].as_array().unwrap();
    assert!(data.iter().any(|e| e["type"] == "m.direct"), "{next}");
    let ephemeral = next["rooms"]["join"][&room]["ephemeral"]["events"].as_array().unwrap().clone();
    let typing = ephemeral.iter().find(|e| e["type"] == "m.typing").unwrap();
    assert_eq!(typing["content"]["user_ids"], json!(["@alice:localhost"]));
    let receipt = ephemeral.iter().find(|e| e["type"] == "m.receipt").unwrap();
    assert!(receipt["content"][&event]["m.read"]["@bob:localhost"]["ts"].is_u64());
    let since = next["next_batch"].as_str().unwrap().to_owned();

    bob.post(&format!("{V3}/rooms/{room}/leave"), json!({})).await.assert_ok();
    let left = sync(&bob, Some(&since), "").await;
    let leave = &left["rooms"]["leave"][&room];
    let last = leave["timeline"]["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["content"]["membership"], "leave");
    assert!(left["rooms"]["join"].get(&room).is_none());
}

#[tokio::test]
async fn filters_and_lazy_loading() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let mut members = Vec::new();
    for i in 0..4 {
        let user = Client::register(&server.base_url, &format!("m{i}"), "pw").await;
        user.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
        members.push(user);
    }
    for i in 0..15 {
        members[0].send_text(&room, &format!("x{i}"), "filler").await;
    }
    let filter = json!({"room": {"timeline": {"limit": 3}, "state": {"lazy_load_members": true}}});
    let created = alice.post(&format!("{V3}/user/@alice:localhost/filter"), filter).await;
    let filter_id = created.assert_ok()["filter_id"].as_str().unwrap().to_owned();
    let response = sync(&alice, None, &format!("&filter={filter_id}")).await;
    let joined = &response["rooms"]["join"][&room];
    assert_eq!(joined["timeline"]["events"].as_array().unwrap().len(), 3);
    assert_eq!(joined["timeline"]["limited"], true);
    let member_keys: Vec<&str> = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| e["state_key"].as_str().unwrap())
        .collect();
    // Only the timeline's sender and the syncing user, not all five members.
    assert_eq!(member_keys.len(), 2, "{member_keys:?}");
    assert_eq!(joined["summary"]["m.joined_member_count"], 5);
    alice.get(&format!("{V3}/sync?filter=424242")).await.assert_error(400, "M_INVALID_PARAM");
    let inline =
        sync(&alice, None, "&filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A1%7D%7D%7D").await;
    assert_eq!(inline["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn state_changed_by_events_the_timeline_filter_drops_still_arrives() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({"name": "first"})).await;
    let filter = r#"{"room":{"timeline":{"not_types":["m.room.name"],"limit":5}}}"#;
    let filter: String = filter
        .chars()
        .map(|c| match c {
            '{' => "%7B".to_owned(),
            '}' => "%7D".to_owned(),
            '"' => "%22".to_owned(),
            '[' => "%5B".to_owned(),
            ']' => "%5D".to_owned(),
            ':' => "%3A".to_owned(),
            ',' => "%2C".to_owned(),
            c => c.to_string(),
        })
        .collect();
    let extra = format!("&filter={filter}");
    let since = sync(&alice, None, &extra).await["next_batch"].as_str().unwrap().to_owned();
    alice.send_text(&room, "m1", "hello").await;
    alice.put(&format!("{V3}/rooms/{room}/state/m.room.name/"), json!({"name": "second"})).await.assert_ok();

    let name_in_state = |response: &Value| -> Option<String> {
        response["rooms"]["join"][&room]["state"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "m.room.name")
            .map(|e| e["content"]["name"].as_str().unwrap().to_owned())
    };
    for response in [sync(&alice, Some(&since), &extra).await, sync(&alice, None, &extra).await] {
        let timeline = &response["rooms"]["join"][&room]["timeline"]["events"];
        assert!(timeline.as_array().unwrap().iter().all(|e| e["type"] != "m.room.name"), "{timeline}");
        assert_eq!(name_in_state(&response).as_deref(), Some("second"), "{response}");
    }
}

#[tokio::test]
async fn members_at_a_full_syncs_prev_batch_are_those_the_timeline_ends_with() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    alice.send_text(&room, "t1", "Hello world!").await;
    // The whole history fits in the timeline: as with Synapse, prev_batch is the sync's own
    // position, not a point before the room existed.
    let full = sync(&alice, None, "").await;
    let timeline = &full["rooms"]["join"][&room]["timeline"];
    assert_eq!(timeline["limited"], false, "{timeline}");
    let at = timeline["prev_batch"].as_str().unwrap().to_owned();
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    bob.send_text(&room, "t2", "Hello back").await;

    let members = alice.get(&format!("{V3}/rooms/{room}/members?at={at}")).await;
    let chunk = members.assert_ok()["chunk"].as_array().unwrap().clone();
    let who: Vec<&str> = chunk.iter().map(|e| e["state_key"].as_str().unwrap()).collect();
    assert_eq!(who, [alice.user_id()]);
    assert!(chunk.iter().all(|e| e["room_id"] == json!(room)));

    // A timeline cut short keeps a prev_batch that leads to what it left out.
    let limited =
        sync(&alice, None, "&filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A1%7D%7D%7D").await;
    let timeline = &limited["rooms"]["join"][&room]["timeline"];
    assert_eq!(timeline["limited"], true, "{timeline}");
    let from = timeline["prev_batch"].as_str().unwrap();
    let back = alice.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=1&from={from}")).await;
    let chunk = back.assert_ok()["chunk"].as_array().unwrap().clone();
    assert_eq!(chunk[0]["type"], "m.room.member", "{chunk:?}");
}

#[tokio::test]
async fn the_room_summary_is_sent_when_membership_may_have_moved() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let first = sync(&alice, None, "").await;
    assert_eq!(first["rooms"]["join"][&room]["summary"]["m.joined_member_count"], 1);
    let since = first["next_batch"].as_str().unwrap().to_owned();
    // A message alone moves no membership: the client keeps the summary it has.
    alice.send_text(&room, "t1", "hello").await;
    let quiet = sync(&alice, Some(&since), "").await;
    let summary = &quiet["rooms"]["join"][&room]["summary"];
    assert!(summary.as_object().is_none_or(serde_json::Map::is_empty), "{quiet}");
    let since = quiet["next_batch"].as_str().unwrap().to_owned();
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let joined = sync(&alice, Some(&since), "").await;
    let summary = &joined["rooms"]["join"][&room]["summary"];
    assert_eq!(summary["m.joined_member_count"], 2, "{joined}");
    assert_eq!(summary["m.heroes"], json!([bob.user_id()]));
}
