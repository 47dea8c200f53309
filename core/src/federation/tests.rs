//! PDU verification as a receiving server does it: the event ID is recomputed, a forged
//! signature is refused, and a content change under a valid signature keeps only the redacted
//! event.

use ruma::{CanonicalJsonValue, RoomVersionId};
use serde_json::{json, value::RawValue};

use crate::{
    Homeserver,
    config::HomeserverConfig,
    events::{NewEvent, pdu::parse_object},
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
