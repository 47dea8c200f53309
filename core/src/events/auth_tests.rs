//! The auth rules, driven by `core/tests/fixtures/auth_rules.json`: each case builds a room
//! (Alice creates it; `@mod` has power 50), applies its setup memberships, then checks one
//! event against the resulting state, for every room version it names (default 10, 11, 12).

use ruma::{
    OwnedEventId, OwnedUserId, RoomId, RoomVersionId, events::TimelineEventType, state_res::StateMap,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{NewEvent, test_graph::Graph};

#[derive(Deserialize)]
struct Case {
    name: String,
    #[serde(default)]
    versions: Option<Vec<String>>,
    #[serde(default)]
    join_rule: Option<String>,
    #[serde(default)]
    invite_level: Option<i64>,
    #[serde(default)]
    events_default: Option<i64>,
    #[serde(default)]
    setup: Vec<(OwnedUserId, String, OwnedUserId)>,
    event: CaseEvent,
    allow: bool,
}

#[derive(Deserialize)]
struct CaseEvent {
    sender: OwnedUserId,
    #[serde(rename = "type")]
    kind: String,
    state_key: Option<String>,
    content: Value,
    redacts: Option<OwnedEventId>,
}

fn room(version: &RoomVersionId, case: &Case) -> (Graph, StateMap<OwnedEventId>, OwnedEventId) {
    let alice: OwnedUserId = "@alice:example.org".try_into().unwrap();
    let mut g = Graph::new(version);
    let mut create = json!({"room_version": version.as_str()});
    if !g.rules.authorization.use_room_create_sender {
        create["creator"] = json!(alice);
    }
    if !g.rules.authorization.room_create_event_id_as_room_id {
        g.room_id = Some(RoomId::parse("!room:example.org").unwrap());
    }
    let (create, s) = g.add(&StateMap::new(), &[], &alice, "m.room.create", "", create);
    let (last, s) =
        g.add(&s, &[create], &alice, "m.room.member", alice.as_str(), json!({"membership": "join"}));
    let mut users = json!({"@mod:example.org": 50});
    if !g.rules.authorization.explicitly_privilege_room_creators {
        users["@alice:example.org"] = json!(100);
    }
    let pl = json!({
        "users": users, "state_default": 50, "ban": 50, "kick": 50, "redact": 50,
        "invite": case.invite_level.unwrap_or(0), "events_default": case.events_default.unwrap_or(0),
        "events": {"m.room.name": 50, "m.room.power_levels": 100, "m.room.redaction": 50},
    });
    let (last, s) = g.add(&s, &[last], &alice, "m.room.power_levels", "", pl);
    let rule = case.join_rule.clone().unwrap_or_else(|| "public".to_owned());
    let mut rules = json!({"join_rule": rule});
    if rule.contains("restricted") {
        rules["allow"] = json!([{"type": "m.room_membership", "room_id": "!other:example.org"}]);
    }
    let (mut last, mut s) = g.add(&s, &[last], &alice, "m.room.join_rules", "", rules);
    for (sender, membership, target) in &case.setup {
        // A moderator joins by invitation if the room is not public.
        if membership == "join" && rule != "public" && sender != &alice {
            let (l, s2) =
                g.add(&s, &[last], &alice, "m.room.member", target.as_str(), json!({"membership": "invite"}));
            (last, s) = (l, s2);
        }
        let (l, s2) =
            g.add(&s, &[last], sender, "m.room.member", target.as_str(), json!({"membership": membership}));
        (last, s) = (l, s2);
    }
    (g, s, last)
}

#[test]
fn auth_rule_fixtures() {
    let cases: Vec<Case> =
        serde_json::from_str(include_str!("../../tests/fixtures/auth_rules.json")).unwrap();
    assert!(cases.len() >= 25);
    let mut failures = Vec::new();
    for case in &cases {
        let versions = case.versions.clone().unwrap_or_else(|| vec!["10".into(), "11".into(), "12".into()]);
        for version in versions {
            let version = RoomVersionId::try_from(version.as_str()).unwrap();
            let (g, state, last) = room(&version, case);
            let e = &case.event;
            let new = NewEvent {
                kind: TimelineEventType::from(e.kind.as_str()),
                content: e.content.clone(),
                state_key: e.state_key.clone(),
                redacts: e.redacts.clone(),
                origin_server_ts: None,
            };
            let pdu = g.build(&state, &[last], &e.sender, &new);
            let outcome = g.check(&state, &pdu);
            if outcome.is_ok() != case.allow {
                failures.push(format!(
                    "{} (v{version}): expected allow={}, got {outcome:?}",
                    case.name, case.allow
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
