//! What /sync and the room reads show around membership: rooms newly joined (their gap and
//! their members' presence), archived and forgotten rooms, ignored inviters, the viewer's
//! membership on each event, and profile changes carried into rooms.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

async fn sync(client: &Client, since: Option<&str>, filter: Option<Value>) -> Value {
    let mut path = format!("{V3}/sync?timeout=0");
    if let Some(since) = since {
        path.push_str(&format!("&since={since}"));
    }
    if let Some(filter) = filter {
        let encoded: String = url_encode(&filter.to_string());
        path.push_str(&format!("&filter={encoded}"));
    }
    client.get(&path).await.assert_ok().clone()
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn next_batch(response: &Value) -> String {
    response["next_batch"].as_str().unwrap().to_owned()
}

fn presence_senders(response: &Value) -> Vec<String> {
    response["presence"]["events"]
        .as_array()
        .map_or_else(Vec::new, |a| a.iter().map(|e| e["sender"].as_str().unwrap().to_owned()).collect())
}

#[tokio::test]
async fn a_newly_joined_room_is_a_gap_and_brings_its_members_presence() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    // Both have been active, so both have a presence to tell.
    sync(&alice, None, None).await;
    for i in 0..4 {
        alice.send_text(&room, &format!("a{i}"), &format!("before {i}")).await;
    }
    let bob_since = next_batch(&sync(&bob, None, None).await);
    let alice_since = next_batch(&sync(&alice, None, None).await);
    for i in 0..4 {
        alice.send_text(&room, &format!("b{i}"), &format!("after {i}")).await;
    }
    bob.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();

    // Bob's messages-only timeline holds all eight messages, but the room is new to his
    // client and its history goes back further than the timeline: a gap.
    let only_messages =
        json!({"room": {"timeline": {"limit": 10, "types": ["m.room.message"]}, "state": {"types": []}}});
    let bobs = sync(&bob, Some(&bob_since), Some(only_messages)).await;
    let tl = &bobs["rooms"]["join"][&room]["timeline"];
    let events = tl["events"].as_array().unwrap();
    assert_eq!(events.len(), 8, "{tl}");
    assert!(events.iter().all(|e| e["type"] == "m.room.message"), "{tl}");
    assert_eq!(tl["limited"], true, "{tl}");
    // The members Bob now shares a room with come with their presence...
    assert!(presence_senders(&bobs).contains(&"@alice:localhost".to_owned()), "{bobs}");
    let again = sync(&bob, Some(&next_batch(&bobs)), None).await;
    assert!(!presence_senders(&again).contains(&"@alice:localhost".to_owned()), "{again}");

    // ...and so does the new member for those already there.
    let alices = sync(&alice, Some(&alice_since), None).await;
    assert!(presence_senders(&alices).contains(&"@bob:localhost".to_owned()), "{alices}");
}

#[tokio::test]
async fn a_room_joined_from_its_creation_is_not_a_gap() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let since = next_batch(&sync(&alice, None, None).await);
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let next = sync(&alice, Some(&since), None).await;
    let tl = &next["rooms"]["join"][&room]["timeline"];
    assert_eq!(tl["events"][0]["type"], "m.room.create", "{tl}");
    assert_eq!(tl["limited"], false, "{tl}");
}

#[tokio::test]
async fn a_presence_set_before_joining_reaches_existing_members() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.put(&format!("{V3}/presence/@bob:localhost/status"), json!({"presence": "online"})).await.assert_ok();
    let since = next_batch(&sync(&alice, None, None).await);
    bob.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
    let next = sync(&alice, Some(&since), None).await;
    assert!(presence_senders(&next).contains(&"@bob:localhost".to_owned()), "{next}");
}

#[tokio::test]
async fn an_archived_room_with_an_empty_timeline_has_the_state_at_the_leave() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
    let state = format!("{V3}/rooms/{room}/state/a.madeup.test.state/");
    alice.put(&state, json!({"my_key": "before"})).await.assert_ok();
    bob.post(&format!("{V3}/rooms/{room}/leave"), json!({})).await.assert_ok();
    alice.put(&state, json!({"my_key": "after"})).await.assert_ok();

    let filter = json!({"room": {"timeline": {"limit": 0}, "include_leave": true}});
    let response = sync(&bob, None, Some(filter)).await;
    let left = &response["rooms"]["leave"][&room];
    assert_eq!(left["timeline"]["events"], json!([]), "{left}");
    assert_eq!(left["timeline"]["limited"], true, "{left}");
    let state = left["state"]["events"].as_array().unwrap();
    let madeup = state.iter().find(|e| e["type"] == "a.madeup.test.state").expect("the made-up state");
    assert_eq!(madeup["content"]["my_key"], "before", "{left}");
    let own = state
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == "@bob:localhost")
        .expect("bob's membership");
    assert_eq!(own["content"]["membership"], "leave", "{left}");
}

#[tokio::test]
async fn a_forgotten_room_is_unreadable_but_its_leave_still_syncs() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
    alice.send_text(&room, "t1", "Hello world!").await;
    let before_leave = next_batch(&sync(&alice, None, None).await);
    alice.post(&format!("{V3}/rooms/{room}/leave"), json!({})).await.assert_ok();
    // Before forgetting, a departed member can still read up to their leave.
    alice.get(&format!("{V3}/rooms/{room}/messages?dir=b")).await.assert_ok();
    alice.post(&format!("{V3}/rooms/{room}/forget"), json!({})).await.assert_ok();
    bob.send_text(&room, "t2", "after").await;

    alice.get(&format!("{V3}/rooms/{room}/messages?dir=b")).await.assert_error(403, "M_FORBIDDEN");
    alice.get(&format!("{V3}/rooms/{room}/members")).await.assert_error(403, "M_FORBIDDEN");

    let include_leave = json!({"room": {"include_leave": true}});
    let incremental = sync(&alice, Some(&before_leave), Some(include_leave.clone())).await;
    let left = &incremental["rooms"]["leave"][&room];
    let events = left["timeline"]["events"].as_array().expect("the leave shows in the incremental sync");
    assert_eq!(events.len(), 1, "{left}");
    assert_eq!(events[0]["content"]["membership"], "leave", "{left}");

    let initial = sync(&alice, None, Some(include_leave)).await;
    assert!(initial["rooms"]["leave"].get(&room).is_none(), "{initial}");
    assert!(initial["rooms"]["join"].get(&room).is_none(), "{initial}");

    // Coming back brings the history back.
    alice.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
    alice.get(&format!("{V3}/rooms/{room}/messages?dir=b")).await.assert_ok();
}

#[tokio::test]
async fn invites_from_ignored_users_are_not_shown() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let chris = Client::register(&server.base_url, "chris", "pw").await;
    alice
        .put(
            &format!("{V3}/user/@alice:localhost/account_data/m.ignored_user_list"),
            json!({"ignored_users": {"@bob:localhost": {}}}),
        )
        .await
        .assert_ok();
    let since = next_batch(&sync(&alice, None, None).await);
    let bobs_room = bob.create_room(json!({"preset": "private_chat", "invite": ["@alice:localhost"]})).await;
    let chris_room =
        chris.create_room(json!({"preset": "private_chat", "invite": ["@alice:localhost"]})).await;

    for response in [sync(&alice, Some(&since), None).await, sync(&alice, None, None).await] {
        let invites = &response["rooms"]["invite"];
        assert!(invites.get(&bobs_room).is_none(), "{response}");
        assert!(invites.get(&chris_room).is_some(), "{response}");
    }
}

#[tokio::test]
async fn events_carry_the_viewers_membership_at_them() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    alice.send_text(&room, "t1", "prejoin").await;
    bob.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
    alice.send_text(&room, "t2", "postjoin").await;

    let response = sync(&bob, None, None).await;
    let events = response["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().clone();
    let messages = bob.get(&format!("{V3}/rooms/{room}/messages?dir=f&limit=50")).await.assert_ok().clone();
    for events in [events, messages["chunk"].as_array().unwrap().clone()] {
        assert!(events.iter().any(|e| e["content"]["body"] == "prejoin"), "{events:?}");
        let mut joined = false;
        for event in &events {
            if event["type"] == "m.room.member" && event["state_key"] == "@bob:localhost" {
                joined = true;
            }
            let expected = if joined { "join" } else { "leave" };
            assert_eq!(event["unsigned"]["membership"], expected, "{event}");
        }
        assert!(joined, "{events:?}");
    }
}

#[tokio::test]
async fn profile_changes_reach_the_rooms_member_events() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
    let since = next_batch(&sync(&bob, None, None).await);

    let profile = format!("{V3}/profile/@alice:localhost");
    alice.put(&format!("{profile}/displayname"), json!({"displayname": "LemurLover"})).await.assert_ok();
    // Not an mxc URI: accepted and carried as it is, as Synapse does.
    alice.put(&format!("{profile}/avatar_url"), json!({"avatar_url": "LemurLover"})).await.assert_ok();

    let next = sync(&bob, Some(&since), None).await;
    let members: Vec<&Value> = next["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member" && e["state_key"] == "@alice:localhost")
        .collect();
    assert_eq!(members.len(), 2, "{next}");
    assert_eq!(members[0]["content"]["displayname"], "LemurLover");
    assert_eq!(members[1]["content"]["displayname"], "LemurLover");
    assert_eq!(members[1]["content"]["avatar_url"], "LemurLover");
    assert_eq!(members[1]["content"]["membership"], "join");
    let state =
        bob.get(&format!("{V3}/rooms/{room}/state/m.room.member/@alice:localhost")).await.assert_ok().clone();
    assert_eq!(state["displayname"], "LemurLover");
}

#[tokio::test]
async fn a_full_sync_shows_bans_and_kicks_but_not_rooms_left_by_choice() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let mut rooms = Vec::new();
    for _ in 0..3 {
        let room = alice.create_room(json!({"preset": "public_chat"})).await;
        bob.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
        rooms.push(room);
    }
    let (banned, kicked, left) = (&rooms[0], &rooms[1], &rooms[2]);
    alice.post(&format!("{V3}/rooms/{banned}/ban"), json!({"user_id": bob.user_id()})).await.assert_ok();
    alice.post(&format!("{V3}/rooms/{kicked}/kick"), json!({"user_id": bob.user_id()})).await.assert_ok();
    bob.post(&format!("{V3}/rooms/{left}/leave"), json!({})).await.assert_ok();

    let full = sync(&bob, None, None).await;
    let shown = &full["rooms"]["leave"];
    let membership = |room: &str| {
        let events = shown[room]["timeline"]["events"].as_array().cloned().unwrap_or_default();
        // The last word on bob's membership in what the timeline shows.
        events
            .iter()
            .rev()
            .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id())
            .map(|e| e["content"]["membership"].as_str().unwrap().to_owned())
    };
    assert_eq!(membership(banned).as_deref(), Some("ban"), "{shown}");
    assert_eq!(membership(kicked).as_deref(), Some("leave"), "{shown}");
    assert!(shown.get(left).is_none(), "{shown}");
    // Asked for, the room left by choice is there too.
    let with_leave = sync(&bob, None, Some(json!({"room": {"include_leave": true}}))).await;
    assert!(with_leave["rooms"]["leave"].get(left).is_some(), "{with_leave}");
}
