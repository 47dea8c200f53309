//! /sync on an in-memory homeserver: what a gap in the received history does to a timeline,
//! and each section (rooms, account data, presence sharing) on its own.

use crate::test_support::user;
use ruma::{
    EventId, RoomVersionId,
    api::client::{filter::FilterDefinition, sync::sync_events::v3::Response},
    device_id,
    events::TimelineEventType,
    serde::Raw,
};
use serde_json::{Value, json};

use super::SyncRequest;
use crate::test_support::shared_room;
use crate::{
    Homeserver,
    config::HomeserverConfig,
    events::{
        NewEvent,
        pdu::{Placement, build_and_sign, to_json_string},
    },
    rooms::CreateRoom,
};

fn text(body: &str) -> NewEvent {
    NewEvent::message(TimelineEventType::RoomMessage, json!({"msgtype": "m.text", "body": body}))
}

async fn sync(hs: &Homeserver, user: &ruma::UserId, since: Option<u64>) -> Response {
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

fn token(response: &Response) -> u64 {
    crate::rooms::view::parse_sync_token(&response.next_batch).unwrap()
}

fn json<T>(event: &Raw<T>) -> Value {
    serde_json::from_str(event.json().get()).unwrap()
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
    let timeline = &response.rooms.join[&room_id].timeline;
    let bodies: Vec<Value> = timeline.events.iter().map(|e| json(e)["content"]["body"].clone()).collect();
    assert_eq!(bodies, [json!("after the gap")], "{timeline:?}");
    assert!(timeline.limited, "{timeline:?}");

    // Without a gap in the window, the same room syncs as usual.
    hs.rooms.append(&room_id, &alice, text("later"), None).await.unwrap();
    let next = sync(&hs, &bob, Some(token(&response))).await;
    let timeline = &next.rooms.join[&room_id].timeline;
    assert_eq!(json(&timeline.events[0])["content"]["body"], "later", "{timeline:?}");
    assert!(!timeline.limited, "{timeline:?}");
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
        seen.extend(response.to_device.events.iter().map(|e| json(e)["content"]["n"].as_u64().unwrap()));
        since = Some(token(&response));
    }
    assert_eq!(seen, (0..150).collect::<Vec<u64>>());
}

/// The position after the latest write, as a sync would hand it out.
fn now(hs: &Homeserver) -> u64 {
    hs.streams.published()
}

#[tokio::test]
async fn account_data_section_initial_has_push_rules_and_incremental_only_what_changed() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let initial = hs.global_account_data(&alice, None).unwrap();
    assert!(initial.iter().any(|e| e["type"] == "m.push_rules"), "defaults before any change: {initial:?}");

    hs.account_data.set_global(&alice, "org.example.a", json!({"n": 1})).await.unwrap();
    let since = now(&hs);
    hs.account_data.set_global(&alice, "org.example.b", json!({"n": 2})).await.unwrap();
    let changed = hs.global_account_data(&alice, Some(since)).unwrap();
    let types: Vec<_> = changed.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["org.example.b"]);

    let room_id = hs.rooms.create_room(&alice, json!({}), CreateRoom::new()).await.unwrap();
    hs.account_data.set_room(&alice, &room_id, "org.example.r", json!({"n": 3})).await.unwrap();
    let in_room = hs.room_account_data(&alice, &room_id, Some(since)).unwrap();
    assert_eq!(in_room.len(), 1);
    assert_eq!(in_room[0]["content"]["n"], json!(3));
    assert!(hs.room_account_data(&alice, &room_id, Some(now(&hs))).unwrap().is_empty());
}

#[tokio::test]
async fn rooms_section_summary_and_stripped_state() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let mut others = Vec::new();
    for name in ["frank", "bob", "erin", "dave", "carol", "gina"] {
        others.push(user(&hs, name).await);
    }
    let mut create = CreateRoom::new();
    create.public = true;
    create.name = Some("Room".to_owned());
    let room_id = hs.rooms.create_room(&alice, json!({}), create).await.unwrap();
    for other in &others[..5] {
        hs.rooms.join(&room_id, other, json!({}), None).await.unwrap();
    }
    hs.rooms.invite(&room_id, &alice, &others[5], None, json!({})).await.unwrap();

    // Heroes: at most five others, sorted, the syncing user never among them.
    let summary = hs.room_summary(&others[0], &room_id).unwrap();
    assert_eq!(summary.joined_member_count, Some(6u32.into()));
    assert_eq!(summary.invited_member_count, Some(1u32.into()));
    let heroes: Vec<&str> = summary.heroes.iter().map(|h| h.as_str()).collect();
    assert_eq!(
        heroes,
        ["@alice:localhost", "@bob:localhost", "@carol:localhost", "@dave:localhost", "@erin:localhost"]
    );

    // An invitee sees the room's name and rules before joining, who invited them, and their
    // own invite last, in full.
    let (_, record) =
        hs.user_memberships(&others[5]).unwrap().into_iter().find(|(r, _)| *r == room_id).unwrap();
    let stripped = hs.stripped_state(&others[5], &room_id, &record).unwrap();
    let types: Vec<&str> = stripped.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert!(types.contains(&"m.room.create") && types.contains(&"m.room.name"), "{types:?}");
    assert!(types.contains(&"m.room.join_rules"));
    let (own, rest) = stripped.split_last().unwrap();
    assert_eq!(
        (own["state_key"].as_str(), own["content"]["membership"].as_str()),
        (Some("@gina:localhost"), Some("invite"))
    );
    assert!(own["event_id"].is_string());
    assert!(rest.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == "@alice:localhost"));
    assert!(rest.iter().all(|e| e.get("event_id").is_none()), "the rest is stripped");
}

#[tokio::test]
async fn sharing_section_knows_who_shares_a_room_and_whose_presence_to_send() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let carol = user(&hs, "carol").await;
    shared_room(&hs, &alice, &[&bob]).await;

    let shares = super::sharing::Sharing::new(&hs, &alice);
    assert!(shares.with(&alice).unwrap(), "everyone shares with themselves");
    assert!(shares.with(&bob).unwrap());
    assert!(!shares.with(&carol).unwrap());

    hs.set_presence(&bob, crate::presence::PresenceState::Online, None).await.unwrap();
    hs.set_presence(&carol, crate::presence::PresenceState::Online, None).await.unwrap();
    let filter = ruma::api::client::filter::Filter::default();
    let none = std::collections::BTreeSet::new();
    let initial = hs.presence_events(true, &none, &none, &filter, &shares).unwrap();
    let senders: Vec<&str> = initial.iter().map(|e| e["sender"].as_str().unwrap()).collect();
    assert!(senders.contains(&"@bob:localhost") && !senders.contains(&"@carol:localhost"), "{senders:?}");
    // Incrementally, only changes of people who share a room.
    let changed: std::collections::BTreeSet<_> = [bob.clone(), carol.clone()].into();
    let incremental = hs.presence_events(false, &changed, &none, &filter, &shares).unwrap();
    assert_eq!(incremental.len(), 1);
    assert_eq!(incremental[0]["sender"], json!("@bob:localhost"));
    let mut no_presence = ruma::api::client::filter::Filter::default();
    no_presence.not_types = vec!["m.presence".to_owned()];
    assert!(hs.presence_events(true, &none, &none, &no_presence, &shares).unwrap().is_empty());
}

#[tokio::test]
async fn device_lists_section_names_whose_keys_to_fetch_and_who_shares_no_room_any_more() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let carol = user(&hs, "carol").await;
    let dave = user(&hs, "dave").await;
    shared_room(&hs, &alice, &[&bob]).await;
    let with_dave = shared_room(&hs, &alice, &[&dave]).await;
    hs.rooms.leave(&with_dave, &dave, None).await.unwrap();

    let shares = super::sharing::Sharing::new(&hs, &alice);
    let keys_changed: std::collections::BTreeSet<_> = [bob.clone(), carol.clone()].into();
    let moves = super::sharing::MembershipMoves {
        newly_sharing: [alice.clone(), bob.clone()].into(),
        maybe_left: [alice.clone(), bob.clone(), dave.clone()].into(),
        joined_now: false,
    };
    let (changed, left) = shares.device_lists(&keys_changed, &moves).unwrap();
    // Carol shares no room: her keys are none of Alice's business. Alice's own devices are
    // listed only when she joined a room in the window.
    assert_eq!(changed, std::slice::from_ref(&bob));
    // Bob still shares a room; Dave no longer does; Alice is never told she left herself.
    assert_eq!(left, std::slice::from_ref(&dave));

    let joined = super::sharing::MembershipMoves { joined_now: true, ..moves };
    let (changed, _) = shares.device_lists(&keys_changed, &joined).unwrap();
    assert_eq!(changed, [alice, bob]);
}
