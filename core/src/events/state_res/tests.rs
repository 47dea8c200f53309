//! Forks resolved as the spec describes, built from real signed PDUs.

use ruma::{
    RoomId, RoomVersionId,
    events::{StateEventType, TimelineEventType},
    owned_user_id,
};
use serde_json::json;

use super::*;
use crate::events::{NewEvent, test_graph::Graph};

/// Alice creates a room and gives Bob moderator power; then, concurrently, Alice bans Bob and
/// Bob renames the room. Resolution orders power events first: the ban stands, and Bob's
/// rename, no longer authorized once he is banned, is dropped.
fn ban_races_rename(version: &RoomVersionId) {
    let alice = owned_user_id!("@alice:example.org");
    let bob = owned_user_id!("@bob:example.org");
    let mut g = Graph::new(version);
    // Before v11 the create event names its creator; from v11 the sender is the creator.
    let create_content = if g.rules.authorization.use_room_create_sender {
        json!({"room_version": version.as_str()})
    } else {
        json!({"room_version": version.as_str(), "creator": alice})
    };
    if !g.rules.authorization.room_create_event_id_as_room_id {
        g.room_id = Some(RoomId::parse("!room:example.org").unwrap());
    }
    let (create, s) = g.add(&StateMap::new(), &[], &alice, "m.room.create", "", create_content);
    let (a_join, s) =
        g.add(&s, &[create], &alice, "m.room.member", alice.as_str(), json!({"membership": "join"}));
    let users = if g.rules.authorization.explicitly_privilege_room_creators {
        json!({"@bob:example.org": 50})
    } else {
        json!({"@alice:example.org": 100, "@bob:example.org": 50})
    };
    let pl = json!({"users": users, "state_default": 50, "ban": 50, "events": {"m.room.name": 50}});
    let (pl_id, s) = g.add(&s, &[a_join], &alice, "m.room.power_levels", "", pl);
    let (jr, s) = g.add(
        &s,
        std::slice::from_ref(&pl_id),
        &alice,
        "m.room.join_rules",
        "",
        json!({"join_rule": "public"}),
    );
    let (b_join, s) = g.add(&s, &[jr], &bob, "m.room.member", bob.as_str(), json!({"membership": "join"}));

    let (ban, banned) = g.add(
        &s,
        std::slice::from_ref(&b_join),
        &alice,
        "m.room.member",
        bob.as_str(),
        json!({"membership": "ban"}),
    );
    let (rename, renamed) = g.add(&s, &[b_join], &bob, "m.room.name", "", json!({"name": "Bob's now"}));

    let events = g.events.clone();
    let fetch = move |id: &EventId| events.get(id).cloned();
    let resolved = resolve(&g.rules, &[banned, renamed], &fetch).unwrap();
    let member_key = (StateEventType::RoomMember, bob.to_string());
    assert_eq!(resolved.get(&member_key), Some(&ban), "{version}: the ban must win");
    let name = resolved.get(&(StateEventType::RoomName, String::new()));
    if matches!(g.rules.state_res, ruma::room_version_rules::StateResolutionVersion::V1) {
        // v1 conflicts only keys both sides set: the rename, on one side only, stands. This
        // is the weakness v2 was made for.
        assert_eq!(name, Some(&rename), "{version}");
    } else {
        assert_eq!(
            name, None,
            "{version}: the banned user's concurrent rename must be dropped, not {rename}"
        );
    }
    assert_eq!(resolved.get(&(StateEventType::RoomPowerLevels, String::new())), Some(&pl_id));
}

#[test]
fn ban_beats_concurrent_rename_v10() {
    ban_races_rename(&RoomVersionId::V10);
}

#[test]
fn ban_beats_concurrent_rename_v11() {
    ban_races_rename(&RoomVersionId::V11);
}

#[test]
fn ban_beats_concurrent_rename_v12_state_res_2_1() {
    ban_races_rename(&RoomVersionId::V12);
}

#[test]
fn unconflicted_state_passes_through() {
    let alice = owned_user_id!("@alice:example.org");
    let mut g = Graph::new(&RoomVersionId::V11);
    g.room_id = Some(RoomId::parse("!room:example.org").unwrap());
    let (create, s) =
        g.add(&StateMap::new(), &[], &alice, "m.room.create", "", json!({"room_version": "11"}));
    let (_, s) = g.add(&s, &[create], &alice, "m.room.member", alice.as_str(), json!({"membership": "join"}));
    let events = g.events.clone();
    let resolved = resolve(&g.rules, &[s.clone(), s.clone()], &move |id| events.get(id).cloned()).unwrap();
    assert_eq!(resolved, s);
}

#[test]
fn ban_beats_concurrent_membership_v1() {
    ban_races_rename(&RoomVersionId::V1);
}

#[test]
fn ban_beats_concurrent_rename_v2() {
    ban_races_rename(&RoomVersionId::V2);
}

/// v1: of two names set on both sides, the deeper one wins when allowed; one its sender may
/// no longer set loses to the older one.
#[test]
fn v1_conflicts_go_to_the_newest_allowed_event() {
    let alice = owned_user_id!("@alice:example.org");
    let bob = owned_user_id!("@bob:example.org");
    let mut g = Graph::new(&RoomVersionId::V1);
    g.room_id = Some(RoomId::parse("!room:example.org").unwrap());
    let (create, s) = g.add(&StateMap::new(), &[], &alice, "m.room.create", "", json!({"creator": alice}));
    let (join, s) =
        g.add(&s, &[create], &alice, "m.room.member", alice.as_str(), json!({"membership": "join"}));
    let pl =
        json!({"users": {"@alice:example.org": 100}, "state_default": 50, "events": {"m.room.name": 50}});
    let (pl, s) = g.add(&s, &[join], &alice, "m.room.power_levels", "", pl);
    let (jr, s) = g.add(&s, &[pl], &alice, "m.room.join_rules", "", json!({"join_rule": "public"}));
    let (b_join, s) = g.add(&s, &[jr], &bob, "m.room.member", bob.as_str(), json!({"membership": "join"}));
    let (name_a, s1) =
        g.add(&s, std::slice::from_ref(&b_join), &alice, "m.room.name", "", json!({"name": "a"}));
    let (topic, s2) =
        g.add(&s, std::slice::from_ref(&b_join), &alice, "m.room.topic", "", json!({"topic": "t"}));
    let (name_b, s2) =
        g.add(&s2, std::slice::from_ref(&topic), &alice, "m.room.name", "", json!({"name": "b"}));
    let events = g.events.clone();
    let fetch = move |id: &EventId| events.get(id).cloned();
    let resolved = resolve(&g.rules, &[s1.clone(), s2.clone()], &fetch).unwrap();
    let name_key = (StateEventType::RoomName, String::new());
    assert_eq!(resolved.get(&name_key), Some(&name_b), "the deeper name wins over {name_a}");

    // Bob (power 0) cannot set a name: his deeper one is not allowed, so Alice's stands.
    let (name_c, s3) =
        g.add(&s2, std::slice::from_ref(&name_b), &alice, "m.room.name", "", json!({"name": "c"}));
    let mut forged = s3.clone();
    let bobs = NewEvent::state(TimelineEventType::RoomName, "", json!({"name": "bob's"}));
    let bob_pdu = g.build(&s3, &[name_c], &bob, &bobs);
    let bob_name = bob_pdu.event_id.clone();
    g.events.insert(bob_name.clone(), bob_pdu);
    forged.insert(name_key.clone(), bob_name.clone());
    let events = g.events.clone();
    let fetch = move |id: &EventId| events.get(id).cloned();
    let resolved = resolve(&g.rules, &[s1, forged], &fetch).unwrap();
    assert_eq!(resolved.get(&name_key), Some(&name_a), "not {bob_name}: the next allowed is the oldest");
    assert_eq!(resolved.get(&(StateEventType::RoomTopic, String::new())), Some(&topic));
}
