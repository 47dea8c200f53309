//! /sync on an in-memory homeserver: what a gap in the received history does to a timeline.

use ruma::{
    EventId, RoomVersionId, api::client::filter::FilterDefinition, device_id, events::TimelineEventType,
};
use serde_json::{Value, json};

use super::SyncRequest;
use crate::{
    Homeserver,
    config::HomeserverConfig,
    events::{
        NewEvent,
        pdu::{Placement, build_and_sign, to_json_string},
    },
    rooms::CreateRoom,
    users::NewAccount,
};

async fn user(hs: &Homeserver, name: &str) -> ruma::OwnedUserId {
    let new = NewAccount { localpart: Some(name.into()), inhibit_login: true, ..Default::default() };
    hs.users.register(new).await.unwrap().user_id
}

fn text(body: &str) -> NewEvent {
    NewEvent::message(TimelineEventType::RoomMessage, json!({"msgtype": "m.text", "body": body}))
}

async fn sync(hs: &Homeserver, user: &ruma::UserId, since: Option<u64>) -> Value {
    let req = SyncRequest {
        since,
        timeout: std::time::Duration::ZERO,
        full_state: false,
        use_state_after: false,
        filter: FilterDefinition::default(),
        set_presence: None,
    };
    hs.sync(user, device_id!("DEVICE"), &req).await.unwrap()
}

fn token(response: &Value) -> u64 {
    crate::rooms::view::parse_sync_token(response["next_batch"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn a_timeline_starts_after_the_latest_gap_and_is_limited() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let mut create = CreateRoom::new();
    create.version = Some(RoomVersionId::V12);
    create.public = true;
    let room_id = hs.rooms.create_room(&alice, json!({}), create).await.unwrap();
    hs.rooms.join(&room_id, &bob, json!({}), None).await.unwrap();
    let since = token(&sync(&hs, &bob, None).await);
    hs.rooms.append(&room_id, &alice, text("before the gap"), None).await.unwrap();

    // An event arrives whose prev event this server never got: the history between is missing.
    let room = hs.rooms.room(&room_id).unwrap().unwrap();
    let current = |kind: &str, key: &str| hs.rooms.current_state_event(&room_id, kind, key).unwrap().unwrap();
    // Room version 12: the create event is implied by the room ID, not listed.
    let auth_events =
        [current("m.room.power_levels", "").event_id, current("m.room.member", alice.as_str()).event_id];
    let missing = EventId::parse("$aNeverReceivedEventAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
    let placement = Placement {
        room_id: Some(&room_id),
        prev_events: &[missing],
        auth_events: &auth_events,
        depth: room.max_depth + 10,
    };
    let rules = RoomVersionId::V12.rules().unwrap();
    let (event_id, object) =
        build_and_sign(&text("after the gap"), &alice, &placement, &rules, hs.server_name(), &hs.signing_key)
            .unwrap();
    let state = hs.rooms.state_map(room.current_state_group).unwrap();
    hs.rooms
        .receive_pdu_with_state(&room_id, &event_id, to_json_string(&object).unwrap(), Some(state))
        .await
        .unwrap();

    let response = sync(&hs, &bob, Some(since)).await;
    let timeline = &response["rooms"]["join"][room_id.as_str()]["timeline"];
    let bodies: Vec<&str> =
        timeline["events"].as_array().unwrap().iter().filter_map(|e| e["content"]["body"].as_str()).collect();
    assert_eq!(bodies, ["after the gap"], "{timeline}");
    assert_eq!(timeline["limited"], true, "{timeline}");

    // Without a gap in the window, the same room syncs as usual.
    hs.rooms.append(&room_id, &alice, text("later"), None).await.unwrap();
    let next = sync(&hs, &bob, Some(token(&response))).await;
    let timeline = &next["rooms"]["join"][room_id.as_str()]["timeline"];
    assert_eq!(timeline["events"][0]["content"]["body"], "later", "{timeline}");
    assert_eq!(timeline["limited"], false, "{timeline}");
}

#[tokio::test]
async fn to_device_messages_beyond_one_sync_wait_for_the_next() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    for i in 0..150 {
        let to_bob = std::collections::BTreeMap::from([("DEVICE".to_owned(), json!({"n": i}))]);
        let messages = std::collections::BTreeMap::from([(bob.clone(), to_bob)]);
        hs.send_to_device(&alice, device_id!("A"), "org.example.n", &format!("t{i}"), messages)
            .await
            .unwrap();
    }
    // More than one sync carries: each token acknowledges only what its response carried.
    let mut seen = Vec::new();
    let mut since = None;
    for _ in 0..4 {
        let response = sync(&hs, &bob, since).await;
        let events = response["to_device"]["events"].as_array().unwrap();
        seen.extend(events.iter().map(|e| e["content"]["n"].as_u64().unwrap()));
        since = Some(token(&response));
    }
    assert_eq!(seen, (0..150).collect::<Vec<u64>>());
}
