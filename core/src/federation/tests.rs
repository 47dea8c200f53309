//! PDU verification as a receiving server does it: the event ID is recomputed, a forged
//! signature is refused, and a content change under a valid signature keeps only the redacted
//! event.

use ruma::{CanonicalJsonValue, RoomVersionId};
use serde_json::{json, value::RawValue};

use hearth_storage::{records::OutboxItem, schema::FederationOutbox};

use crate::{
    Homeserver,
    config::HomeserverConfig,
    events::{NewEvent, pdu::parse_object},
    json::{MAX_FEDERATION_ITEM_DEPTH, nested},
    rooms::CreateRoom,
    users::NewAccount,
};

async fn signed_message(hs: &Homeserver) -> (ruma::OwnedEventId, String) {
    let new = NewAccount { localpart: Some("alice".into()), inhibit_login: true, ..Default::default() };
    let alice = hs.users.register(new).await.unwrap().user_id;
    let mut create = CreateRoom::new();
    create.version = Some(RoomVersionId::V12);
    let room = hs.rooms.create_room(&alice, json!({}), create).await.unwrap();
    let body = json!({"msgtype": "m.text", "body": "signed"});
    let new = NewEvent::message(ruma::events::TimelineEventType::RoomMessage, body);
    let event_id = hs.rooms.append(&room, &alice, new, None).await.unwrap();
    let json = hs.rooms.pdu_record(&event_id).unwrap().unwrap().json;
    (event_id, json)
}

fn raw(object: &ruma::CanonicalJsonObject) -> Box<RawValue> {
    RawValue::from_string(serde_json::to_string(object).unwrap()).unwrap()
}

#[tokio::test]
async fn a_valid_pdu_verifies_a_forged_one_does_not_and_a_tampered_one_is_redacted() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let rules = RoomVersionId::V12.rules().unwrap();
    let (event_id, json) = signed_message(&hs).await;

    let (id, verified) = hs.verify_pdu(&RawValue::from_string(json.clone()).unwrap(), &rules).await.unwrap();
    assert_eq!(id, event_id);
    assert!(verified.contains("\"body\":\"signed\""));

    // Another signature in place of ours.
    let mut forged = parse_object(&json).unwrap();
    let server = hs.server_name().to_string();
    let key_id = hs.signing_key.key_id.clone();
    forged.insert(
        "signatures".into(),
        serde_json::from_value::<CanonicalJsonValue>(json!({ server: { key_id: "A".repeat(86) } })).unwrap(),
    );
    let error = hs.verify_pdu(&raw(&forged), &rules).await.unwrap_err();
    assert!(error.to_string().contains("signature"), "{error}");

    // Content changed after signing: the signature covers the redacted form, which is kept.
    let mut tampered = parse_object(&json).unwrap();
    tampered.insert(
        "content".into(),
        serde_json::from_value::<CanonicalJsonValue>(json!({"msgtype": "m.text", "body": "changed"}))
            .unwrap(),
    );
    let (_, kept) = hs.verify_pdu(&raw(&tampered), &rules).await.unwrap();
    assert!(!kept.contains("changed") && !kept.contains("\"body\""), "{kept}");
}

#[tokio::test]
async fn send_results_name_every_refused_pdu_signature_and_nesting_failures_included() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let (_, json) = signed_message(&hs).await;
    let server = hs.server_name().to_string();
    let key_id = hs.signing_key.key_id.clone();
    let rules = RoomVersionId::V12.rules().unwrap();

    let mut forged = parse_object(&json).unwrap();
    forged.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(12345u32.into()));
    forged.insert(
        "signatures".into(),
        serde_json::from_value::<CanonicalJsonValue>(json!({ server.clone(): { key_id: "A".repeat(86) } }))
            .unwrap(),
    );
    let forged_id = crate::federation::inbound::identify_pdu(&raw(&forged), &rules).unwrap().0;

    let mut deep = parse_object(&json).unwrap();
    deep.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(54321u32.into()));
    let content =
        format!(r#"{{"msgtype":"m.text","body":"deep","d":{}}}"#, nested(MAX_FEDERATION_ITEM_DEPTH));
    deep.insert("content".into(), serde_json::from_str(&content).unwrap());
    let deep_id = crate::federation::inbound::identify_pdu(&raw(&deep), &rules).unwrap().0;

    let results = hs
        .receive_transaction(hs.server_name(), "t1", vec![raw(&forged), raw(&deep)], Vec::new())
        .await
        .unwrap();
    let forged_error = results.get(&forged_id).expect("an entry for the forged PDU").as_ref().unwrap_err();
    assert!(forged_error.contains("signature"), "{forged_error}");
    let deep_error = results.get(&deep_id).expect("an entry for the deep PDU").as_ref().unwrap_err();
    assert!(deep_error.contains("nested"), "{deep_error}");
}

#[tokio::test]
async fn an_item_that_cannot_be_signed_is_dropped_and_the_rest_still_goes() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let (event_id, _) = signed_message(&hs).await;
    let dest = ruma::server_name!("remote.test");
    let items = [
        // A float is not canonical JSON: the transaction around it could never be signed.
        OutboxItem::Edu { edu: json!({"edu_type": "m.direct_to_device", "content": {"x": 1.5}}) },
        OutboxItem::Edu {
            edu: json!({"edu_type": "m.typing", "content": {"d": serde_json::from_str::<serde_json::Value>(&nested(MAX_FEDERATION_ITEM_DEPTH)).unwrap()}}),
        },
        OutboxItem::Pdu { event_id: event_id.clone() },
        OutboxItem::Edu { edu: json!({"edu_type": "m.typing", "content": {"typing": true}}) },
    ];
    for (seq, item) in items.iter().enumerate() {
        hs.db.put::<FederationOutbox>(&(dest.to_string(), seq as u64 + 1), item).unwrap();
    }
    let batch = hs.outbox_batch(dest).unwrap();
    assert_eq!(batch.seqs, vec![1, 2, 3, 4], "the dropped items are cleared with the rest");
    assert_eq!(batch.pdus.len(), 1);
    // A PDU's JSON does not carry its own ID (the reference hash); its body tells it apart.
    assert!(batch.pdus[0].get().contains(r#""body":"signed""#));
    assert_eq!(batch.edus.len(), 1);
    assert!(batch.edus[0].json().get().contains("\"typing\":true"));
}

#[tokio::test]
async fn a_pdu_that_names_itself_gets_an_error_even_when_its_room_is_unknown() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let pdu = json!({"event_id": "$v1event:remote.test", "room_id": "!unknown:remote.test", "type": "m.room.message"});
    let no_room = json!({"event_id": "$v1other:remote.test", "type": "m.room.message"});
    let raws = [pdu, no_room].map(|v| RawValue::from_string(v.to_string()).unwrap()).into();
    let results = hs.receive_transaction(hs.server_name(), "t2", raws, Vec::new()).await.unwrap();
    for id in ["$v1event:remote.test", "$v1other:remote.test"] {
        let id = ruma::OwnedEventId::try_from(id).unwrap();
        assert!(results.get(&id).is_some_and(Result::is_err), "{results:?}");
    }
}
