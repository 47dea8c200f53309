//! Events from other servers on an in-memory homeserver: what is rejected, soft-failed,
//! repeated, and how forked state is resolved and merged. Events are built by hand on chosen
//! prev events, as another server would send them.

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId, UserId, events::TimelineEventType};
use serde_json::json;

use super::{CreateRoom, MembershipAction, PageDirection, remote::Received};
use crate::{
    ErrorCode, Homeserver,
    config::HomeserverConfig,
    events::{
        NewEvent,
        pdu::{Placement, build_and_sign, to_json_string},
    },
    test_support::user,
};

async fn public_room(hs: &Homeserver, creator: &UserId) -> OwnedRoomId {
    let mut create = CreateRoom::new();
    create.version = Some(RoomVersionId::V12);
    create.public = true;
    hs.rooms.create_room(creator, json!({}), create).await.unwrap()
}

/// The current state's event for `(kind, key)`.
fn current(hs: &Homeserver, room_id: &OwnedRoomId, kind: &str, key: &str) -> OwnedEventId {
    hs.rooms.current_state_event(room_id, kind, key).unwrap().unwrap().event_id
}

/// An event as another server would send it: on `prev`, with `auth_events` (room version 12:
/// the create event is implied).
fn from_afar(
    hs: &Homeserver,
    room_id: &OwnedRoomId,
    sender: &UserId,
    new: &NewEvent,
    prev: &[OwnedEventId],
    auth_events: &[OwnedEventId],
) -> (OwnedEventId, String) {
    let room = hs.rooms.room(room_id).unwrap().unwrap();
    let placement =
        Placement { room_id: Some(room_id), prev_events: prev, auth_events, depth: room.max_depth + 1 };
    let rules = RoomVersionId::V12.rules().unwrap();
    let (event_id, object) =
        build_and_sign(new, sender, &placement, &rules, hs.server_name(), &hs.signing_key).unwrap();
    (event_id, to_json_string(&object).unwrap())
}

fn text(body: &str) -> NewEvent {
    NewEvent::message(TimelineEventType::RoomMessage, json!({"msgtype": "m.text", "body": body}))
}

fn extremities(hs: &Homeserver, room_id: &OwnedRoomId) -> Vec<OwnedEventId> {
    hs.rooms.room(room_id).unwrap().unwrap().forward_extremities
}

fn in_timeline(hs: &Homeserver, room_id: &OwnedRoomId, viewer: &UserId, event_id: &OwnedEventId) -> bool {
    let page =
        hs.rooms.page(room_id, viewer, None, None, PageDirection::Backward, 50, &|_| Ok(true)).unwrap();
    page.events.iter().any(|(_, pdu, _)| pdu.event_id == *event_id)
}

async fn remote_member(hs: &Homeserver, room_id: &OwnedRoomId, name: &str) -> (OwnedUserId, OwnedEventId) {
    let member = UserId::parse(format!("@{name}:remote.test")).unwrap();
    let join = NewEvent::state(TimelineEventType::RoomMember, member.as_str(), json!({"membership": "join"}));
    let (join_id, json) = from_afar(
        hs,
        room_id,
        &member,
        &join,
        &extremities(hs, room_id),
        &[current(hs, room_id, "m.room.power_levels", ""), current(hs, room_id, "m.room.join_rules", "")],
    );
    assert_eq!(hs.rooms.receive_pdu(room_id, &join_id, json).await.unwrap(), Received::Accepted);
    (member, join_id)
}

#[tokio::test]
async fn an_event_its_auth_events_forbid_is_rejected_and_nothing_is_stored() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let room_id = public_room(&hs, &alice).await;
    // Mallory never joined: her message's auth events do not let her speak.
    let mallory = UserId::parse("@mallory:remote.test").unwrap();
    let (event_id, json) = from_afar(
        &hs,
        &room_id,
        &mallory,
        &text("let me in"),
        &extremities(&hs, &room_id),
        &[current(&hs, &room_id, "m.room.power_levels", "")],
    );
    let err = hs.rooms.receive_pdu(&room_id, &event_id, json).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Forbidden, "{err}");
    assert!(hs.rooms.pdu_record(&event_id).unwrap().is_none());
    assert!(!extremities(&hs, &room_id).contains(&event_id));
}

#[tokio::test]
async fn an_event_the_current_state_forbids_is_soft_failed_hidden_and_kept() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let room_id = public_room(&hs, &alice).await;
    let (bob, bob_join) = remote_member(&hs, &room_id, "bob").await;
    hs.rooms.change_membership(&room_id, &alice, &bob, MembershipAction::Ban, None, false).await.unwrap();

    // Bob's server sends a message built before it heard of the ban: allowed by its own auth
    // events and the state before it, not by the room's state now.
    let power = current(&hs, &room_id, "m.room.power_levels", "");
    let (event_id, json) = from_afar(
        &hs,
        &room_id,
        &bob,
        &text("too late"),
        std::slice::from_ref(&bob_join),
        &[power, bob_join.clone()],
    );
    let received = hs.rooms.receive_pdu(&room_id, &event_id, json.clone()).await.unwrap();
    assert_eq!(received, Received::SoftFailed);
    // Stored (its descendants can still be authorized) but in no timeline.
    let record = hs.rooms.pdu_record(&event_id).unwrap().expect("a soft-failed event is kept");
    assert!(record.stream_pos.is_none());
    assert!(!in_timeline(&hs, &room_id, &alice, &event_id));
    // Sent again, it is known and decided: nothing changes.
    assert_eq!(hs.rooms.receive_pdu(&room_id, &event_id, json).await.unwrap(), Received::Duplicate);
    assert!(!in_timeline(&hs, &room_id, &alice, &event_id));
}

#[tokio::test]
async fn concurrent_state_on_two_branches_resolves_the_same_in_any_order_and_the_branches_merge() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let room_id = public_room(&hs, &alice).await;
    let fork = extremities(&hs, &room_id);
    let auth = [
        current(&hs, &room_id, "m.room.power_levels", ""),
        current(&hs, &room_id, "m.room.member", alice.as_str()),
    ];
    let name = |n: &str| NewEvent::state(TimelineEventType::RoomName, "", json!({"name": n}));
    let (one, one_json) = from_afar(&hs, &room_id, &alice, &name("one"), &fork, &auth);
    let (two, two_json) = from_afar(&hs, &room_id, &alice, &name("two"), &fork, &auth);
    assert_eq!(hs.rooms.receive_pdu(&room_id, &one, one_json).await.unwrap(), Received::Accepted);
    assert_eq!(hs.rooms.receive_pdu(&room_id, &two, two_json).await.unwrap(), Received::Accepted);

    // Two branches now end the room's graph, and its state is their resolution, whichever
    // order they are resolved in.
    let mut ends = extremities(&hs, &room_id);
    ends.sort();
    let mut both = vec![one.clone(), two.clone()];
    both.sort();
    assert_eq!(ends, both);
    let after = |id: &OwnedEventId| {
        hs.rooms.state_map(hs.rooms.pdu_record(id).unwrap().unwrap().state_group).unwrap()
    };
    let rules = RoomVersionId::V12.rules().unwrap();
    let forward = hs.rooms.resolve_states(&rules, &[after(&one), after(&two)]).unwrap();
    let backward = hs.rooms.resolve_states(&rules, &[after(&two), after(&one)]).unwrap();
    assert_eq!(forward, backward);
    let room_name = current(&hs, &room_id, "m.room.name", "");
    assert_eq!(forward.get(&("m.room.name".to_owned(), String::new())), Some(&room_name));
    assert!(room_name == one || room_name == two);

    // An event on both branches merges them: one end again, the resolved name kept.
    let (merge, merge_json) = from_afar(&hs, &room_id, &alice, &text("both"), &both, &auth);
    assert_eq!(hs.rooms.receive_pdu(&room_id, &merge, merge_json).await.unwrap(), Received::Accepted);
    assert_eq!(extremities(&hs, &room_id), std::slice::from_ref(&merge));
    assert_eq!(current(&hs, &room_id, "m.room.name", ""), room_name);
    assert!(in_timeline(&hs, &room_id, &alice, &merge));
}

#[tokio::test]
async fn an_event_for_another_room_or_an_unknown_room_is_refused() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let room_id = public_room(&hs, &alice).await;
    let other = public_room(&hs, &alice).await;
    let auth = [
        current(&hs, &room_id, "m.room.power_levels", ""),
        current(&hs, &room_id, "m.room.member", alice.as_str()),
    ];
    let (event_id, json) =
        from_afar(&hs, &room_id, &alice, &text("here"), &extremities(&hs, &room_id), &auth);
    let err = hs.rooms.receive_pdu(&other, &event_id, json.clone()).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadRequest, "{err}");
    let unknown = ruma::RoomId::parse("!nowhere:remote.test").unwrap();
    let err = hs.rooms.receive_pdu(&unknown, &event_id, json).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    assert!(hs.rooms.pdu_record(&event_id).unwrap().is_none());
}
