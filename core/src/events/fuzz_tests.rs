//! Property tests over what other servers and clients can send: arbitrary JSON through canonical
//! JSON, PDU parsing, hashing and the auth rules. Nothing may panic; canonical JSON round-trips.
//! Bounded case counts keep them in the ordinary test run (cargo-fuzz needs a nightly toolchain).

use proptest::prelude::*;
use ruma::{
    OwnedEventId, RoomVersionId,
    canonical_json::{CanonicalJsonObject, to_canonical_value},
    signatures::{content_hash, reference_hash},
};
use serde_json::{Map, Value, json};

use super::{Pdu, auth};

/// Any JSON value, a few levels deep, with the awkward cases (huge numbers, floats, control
/// characters, empty keys) likely.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,12}".prop_map(Value::String),
        "[\\x00-\\x1f\"\\\\]{0,4}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_.]{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Something shaped like a PDU, with each field either plausible or arbitrary.
fn pdu_like() -> impl Strategy<Value = Value> {
    // Mostly well-typed where parsing needs it, so that most cases get as far as the auth rules.
    let kind = prop_oneof![
        6 => prop::sample::select(vec![
            "m.room.create", "m.room.member", "m.room.power_levels", "m.room.join_rules",
            "m.room.redaction", "m.room.message",
        ])
        .prop_map(|k| json!(k)),
        1 => any_json(),
    ];
    let sender =
        prop_oneof![4 => Just(json!("@alice:example.org")), 4 => Just(json!("@x:y")), 1 => any_json()];
    let ids = prop_oneof![
        3 => Just(json!([])),
        3 => Just(json!(["$abc", "$def"])),
        3 => Just(json!([["$abc:example.org", {"sha256": "x"}]])),
        1 => any_json(),
    ];
    let number = || prop_oneof![6 => (0_i64..1 << 53).prop_map(|n| json!(n)), 1 => any_json()];
    let content = prop_oneof![
        4 => prop::collection::btree_map("[a-z_.]{0,12}", any_json(), 0..6)
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        1 => Just(json!({"membership": "join"})),
        1 => Just(json!({"creator": "@alice:example.org", "room_version": "1"})),
        1 => Just(json!({"users": {"@alice:example.org": 100}, "users_default": "0"})),
        1 => any_json(),
    ];
    let state_key = prop_oneof![
        2 => Just(Value::Null),
        2 => Just(json!("")),
        1 => Just(json!("@alice:example.org")),
        1 => any_json(),
    ];
    (kind, sender, content, state_key, ids.clone(), ids, number(), number()).prop_map(
        |(kind, sender, content, state_key, prev, auth_events, depth, ts)| {
            let mut object = json!({
                "type": kind, "sender": sender, "content": content, "prev_events": prev,
                "auth_events": auth_events, "depth": depth, "origin_server_ts": ts,
                "room_id": "!room:example.org",
            });
            if !state_key.is_null() {
                object["state_key"] = state_key;
            }
            object
        },
    )
}

const VERSIONS: [RoomVersionId; 4] =
    [RoomVersionId::V1, RoomVersionId::V6, RoomVersionId::V11, RoomVersionId::V12];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn canonical_json_never_panics_and_round_trips(value in any_json()) {
        if let Ok(canonical) = to_canonical_value(&value) {
            let text = serde_json::to_string(&canonical).expect("canonical JSON serializes");
            let back: Value = serde_json::from_str(&text).expect("canonical JSON parses back");
            prop_assert_eq!(to_canonical_value(&back).expect("still canonical"), canonical);
        }
    }

    #[test]
    fn pdus_of_any_shape_parse_hash_and_authorize_without_panicking(object in pdu_like()) {
        let text = object.to_string();
        let event_id: OwnedEventId = "$fuzz".try_into().expect("event ID");
        let parsed = Pdu::from_json(event_id, &text);
        if let Ok(Value::Object(map)) = to_canonical_value(&object).map(Value::from) {
            let canonical: Option<CanonicalJsonObject> = serde_json::from_value(Value::Object(map)).ok();
            if let Some(canonical) = canonical {
                for version in &VERSIONS {
                    let rules = version.rules().expect("known version");
                    let _ = reference_hash(&canonical, &rules);
                }
                let _ = content_hash(&canonical);
            }
        }
        if let Ok(pdu) = parsed {
            for version in &VERSIONS {
                let rules = version.rules().expect("known version");
                // With nothing known, and with the event standing in for every lookup.
                let _ = auth::check(&rules, &pdu, |_| None, |_, _| None);
                let _ = auth::check(&rules, &pdu, |_| Some(pdu.clone()), |_, _| Some(pdu.clone()));
            }
        }
    }
}

/// The property above proves little if its PDUs never parse: then it tests only the parser's
/// errors. This keeps the generator honest.
#[test]
fn most_generated_pdus_reach_the_auth_rules() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let parsed = std::cell::Cell::new(0_u32);
    runner
        .run(&pdu_like(), |object| {
            let event_id: OwnedEventId = "$fuzz".try_into().expect("event ID");
            if Pdu::from_json(event_id, &object.to_string()).is_ok() {
                parsed.set(parsed.get() + 1);
            }
            Ok(())
        })
        .expect("the generator runs");
    assert!(parsed.get() >= 120, "only {} of 400 generated PDUs parsed", parsed.get());
}
