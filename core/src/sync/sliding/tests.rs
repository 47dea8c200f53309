//! Sliding sync on an in-memory homeserver: ordering, ranges, filters, what is sent again and
//! what is not.

use crate::test_support::user;
use std::time::Duration;

use ruma::{
    OwnedRoomId, UserId,
    api::client::sync::sync_events::v5::{self, response::Room},
    device_id,
    events::TimelineEventType,
};
use serde_json::{Value, json};

use super::{ListFilters, ListRequest, RoomConfig, SlidingRequest};
use crate::{Homeserver, config::HomeserverConfig, events::NewEvent, rooms::CreateRoom};

fn text(body: &str) -> NewEvent {
    NewEvent::message(TimelineEventType::RoomMessage, json!({"msgtype": "m.text", "body": body}))
}

async fn room(hs: &Homeserver, creator: &UserId, name: &str) -> OwnedRoomId {
    let mut create = CreateRoom::new();
    create.public = true;
    create.name = Some(name.to_owned());
    hs.rooms.create_room(creator, json!({}), create).await.unwrap()
}

fn list(ranges: &[(u64, u64)], timeline_limit: usize, filters: ListFilters) -> ListRequest {
    ListRequest {
        ranges: ranges.to_vec(),
        room: RoomConfig {
            required_state: vec![
                ("m.room.create".into(), String::new()),
                ("m.room.member".into(), "$LAZY".into()),
            ],
            timeline_limit,
        },
        filters,
    }
}

async fn sync(
    hs: &Homeserver,
    user: &UserId,
    pos: Option<&str>,
    lists: Vec<(&str, ListRequest)>,
) -> v5::Response {
    let req = SlidingRequest {
        pos: pos.map(str::to_owned),
        lists: lists.into_iter().map(|(n, l)| (n.to_owned(), l)).collect(),
        timeout: Duration::ZERO,
        ..SlidingRequest::default()
    };
    hs.sliding_sync(user, device_id!("DEVICE"), req).await.unwrap()
}

fn bodies(room: &Room) -> Vec<String> {
    room.timeline
        .iter()
        .map(|e| e.deserialize_as_unchecked::<Value>().unwrap())
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn lists_are_sorted_by_recency_and_cut_to_their_ranges() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let mut rooms = Vec::new();
    for i in 0..5 {
        rooms.push(room(&hs, &alice, &format!("room {i}")).await);
    }
    // Room 2 speaks last, then room 0; a state change in room 4 does not bump it.
    hs.rooms.append(&rooms[0], &alice, text("zero"), None).await.unwrap();
    hs.rooms.append(&rooms[2], &alice, text("two"), None).await.unwrap();
    let topic = NewEvent::state(TimelineEventType::RoomTopic, "", json!({"topic": "t"}));
    hs.rooms.append(&rooms[4], &alice, topic, None).await.unwrap();

    let first = sync(&hs, &alice, None, vec![("all", list(&[(0, 1)], 1, ListFilters::default()))]).await;
    assert_eq!(u64::from(first.lists["all"].count), 5);
    let shown: Vec<&OwnedRoomId> = first.rooms.keys().collect();
    assert_eq!(first.rooms.len(), 2, "{shown:?}");
    assert!(first.rooms.contains_key(&rooms[2]) && first.rooms.contains_key(&rooms[0]));
    let two = &first.rooms[&rooms[2]];
    assert_eq!(two.initial, Some(true));
    assert_eq!(two.name.as_deref(), Some("room 2"));
    assert_eq!(bodies(two), ["two"]);
    assert!(two.limited, "older events exist");
    assert!(two.bump_stamp > first.rooms[&rooms[0]].bump_stamp);
    assert_eq!(two.joined_count.map(u64::from), Some(1));
    // The create event and the sender's member event ($LAZY) are the required state.
    let state: Vec<Value> =
        two.required_state.iter().map(|e| e.deserialize_as_unchecked::<Value>().unwrap()).collect();
    let kinds: Vec<&str> = state.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(kinds.contains(&"m.room.create") && kinds.contains(&"m.room.member"), "{kinds:?}");

    // Nothing new: an incremental request answers without rooms (the timeout is zero).
    let quiet =
        sync(&hs, &alice, Some(&first.pos), vec![("all", list(&[(0, 1)], 1, ListFilters::default()))]).await;
    assert!(quiet.rooms.is_empty(), "{:?}", quiet.rooms.keys().collect::<Vec<_>>());

    // A message in room 3 moves it into the window, sent whole; room 0 drops out silently.
    hs.rooms.append(&rooms[3], &alice, text("three"), None).await.unwrap();
    let next =
        sync(&hs, &alice, Some(&quiet.pos), vec![("all", list(&[(0, 1)], 1, ListFilters::default()))]).await;
    assert_eq!(next.rooms.keys().collect::<Vec<_>>(), [&rooms[3]]);
    assert_eq!(next.rooms[&rooms[3]].initial, Some(true));
    assert_eq!(next.rooms[&rooms[3]].num_live.map(u64::from), Some(1));

    // A message in a room already sent comes alone, not as initial.
    hs.rooms.append(&rooms[2], &alice, text("two again"), None).await.unwrap();
    let live =
        sync(&hs, &alice, Some(&next.pos), vec![("all", list(&[(0, 1)], 5, ListFilters::default()))]).await;
    let two = &live.rooms[&rooms[2]];
    assert_eq!(two.initial, None);
    assert_eq!(bodies(two), ["two again"]);
    assert!(!two.limited);

    // A position from an older response than the one just used is refused.
    let stale = SlidingRequest { pos: Some(first.pos.clone()), ..SlidingRequest::default() };
    let error = hs.sliding_sync(&alice, device_id!("DEVICE"), stale).await.unwrap_err();
    assert_eq!(error.code(), crate::error::ErrorCode::UnknownPos);
}

#[tokio::test]
async fn filters_select_invites_encrypted_rooms_and_tags() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let plain = room(&hs, &alice, "plain").await;
    let secret = room(&hs, &alice, "secret").await;
    let encryption =
        NewEvent::state(TimelineEventType::RoomEncryption, "", json!({"algorithm": "m.megolm.v1.aes-sha2"}));
    hs.rooms.append(&secret, &alice, encryption, None).await.unwrap();
    let invited = room(&hs, &bob, "bob's").await;
    hs.rooms.invite(&invited, &bob, &alice, None, json!({"is_direct": true})).await.unwrap();
    hs.account_data.set_room(&alice, &plain, "m.tag", json!({"tags": {"m.favourite": {}}})).await.unwrap();

    let filters = |f: Value| serde_json::from_value::<ListFilters>(f).unwrap();
    let response = sync(
        &hs,
        &alice,
        None,
        vec![
            ("invites", list(&[(0, 9)], 0, filters(json!({"is_invite": true})))),
            ("encrypted", list(&[(0, 9)], 0, filters(json!({"is_encrypted": true})))),
            ("favourites", list(&[(0, 9)], 0, filters(json!({"tags": ["m.favourite"]})))),
            ("dms", list(&[(0, 9)], 0, filters(json!({"is_dm": true})))),
            ("rest", list(&[(0, 9)], 0, filters(json!({"is_invite": false, "not_tags": ["m.favourite"]})))),
        ],
    )
    .await;
    let count = |name: &str| u64::from(response.lists[name].count);
    assert_eq!(
        (count("invites"), count("encrypted"), count("favourites"), count("dms"), count("rest")),
        (1, 1, 1, 1, 1)
    );
    let invite = &response.rooms[&invited];
    assert!(invite.invite_state.as_ref().is_some_and(|s| !s.is_empty()));
    assert_eq!(invite.is_dm, Some(true));
    assert!(invite.timeline.is_empty());
}
