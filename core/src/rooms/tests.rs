//! Rooms on an in-memory homeserver: every stored PDU is hashed and signed correctly, and the
//! write path enforces the auth rules.

use hearth_storage::schema::Pdus;
use ruma::{
    OwnedRoomId, RoomVersionId,
    events::TimelineEventType,
    serde::Base64,
    signatures::{PublicKeyMap, Verified, reference_hash, verify_event},
};
use serde_json::json;

use super::CreateRoom;
use crate::{
    Error, ErrorCode, Homeserver,
    config::HomeserverConfig,
    events::{NewEvent, pdu::parse_object},
    users::NewAccount,
};

async fn user(hs: &Homeserver, name: &str) -> ruma::OwnedUserId {
    let new = NewAccount { localpart: Some(name.into()), inhibit_login: true, ..Default::default() };
    hs.users.register(new).await.unwrap().user_id
}

async fn room(hs: &Homeserver, creator: &ruma::UserId, version: RoomVersionId) -> OwnedRoomId {
    let mut create = CreateRoom::new();
    create.version = Some(version);
    create.public = true;
    hs.rooms.create_room(creator, json!({"displayname": "x"}), create).await.unwrap()
}

fn text(body: &str) -> NewEvent {
    NewEvent::message(TimelineEventType::RoomMessage, json!({"msgtype": "m.text", "body": body}))
}

#[tokio::test]
async fn every_stored_pdu_verifies_with_the_server_key() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let mut redacted = Vec::new();
    for version in [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12] {
        let room_id = room(&hs, &alice, version).await;
        hs.rooms.join(&room_id, &bob, json!({}), None).await.unwrap();
        let msg = hs.rooms.append(&room_id, &bob, text("hi"), None).await.unwrap();
        let redaction = NewEvent {
            kind: TimelineEventType::RoomRedaction,
            content: json!({}),
            state_key: None,
            redacts: Some(msg.clone()),
        };
        hs.rooms.append(&room_id, &bob, redaction, None).await.unwrap();
        redacted.push(msg);
    }

    let mut keys = PublicKeyMap::new();
    let key = Base64::parse(hs.signing_key.public_key_base64()).unwrap();
    keys.insert(hs.server_name().to_string(), [(hs.signing_key.key_id.clone(), key)].into());
    let mut checked = 0;
    for entry in hs.db.scan_prefix_all::<Pdus>().unwrap() {
        let (event_id, record) = entry.unwrap();
        let room = hs.rooms.room(&record.room_id).unwrap().unwrap();
        let (_, rules) = hs.rooms.version(&room).unwrap();
        let object = parse_object(&record.json).unwrap();
        let verified = verify_event(&keys, &object, &rules).unwrap();
        if redacted.contains(&event_id) {
            // Redaction strips the content, so only the signature still holds.
            assert_eq!(verified, Verified::Signatures, "{event_id}");
        } else {
            assert_eq!(verified, Verified::All, "{event_id}");
            let hash = reference_hash(&object, &rules).unwrap();
            assert_eq!(event_id.as_str(), format!("${hash}"), "event ID is the reference hash");
        }
        checked += 1;
    }
    assert!(checked > 20, "only {checked} PDUs checked");
}

#[tokio::test]
async fn the_write_path_enforces_auth_rules() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let mut create = CreateRoom::new();
    create.version = Some(RoomVersionId::V11);
    let room_id = hs.rooms.create_room(&alice, json!({}), create).await.unwrap();

    #[allow(clippy::needless_pass_by_value)]
    fn forbidden<T>(r: Result<T, Error>) -> bool {
        matches!(r, Err(Error::Matrix { code: ErrorCode::Forbidden, .. }))
    }
    // Not a member: cannot send, cannot join an invite-only room.
    assert!(forbidden(hs.rooms.append(&room_id, &bob, text("x"), None).await));
    assert!(forbidden(hs.rooms.join(&room_id, &bob, json!({}), None).await));
    hs.rooms
        .change_membership(&room_id, &alice, &bob, super::MembershipAction::Invite, None, false)
        .await
        .unwrap();
    hs.rooms.join(&room_id, &bob, json!({}), None).await.unwrap();
    assert_eq!(hs.rooms.joined_rooms(&bob).unwrap(), vec![room_id.clone()]);
    // Member without power: no power-protected state.
    let name = NewEvent::state(TimelineEventType::RoomName, "", json!({"name": "x"}));
    assert!(forbidden(hs.rooms.append(&room_id, &bob, name.clone(), None).await));
    hs.rooms.append(&room_id, &alice, name, None).await.unwrap();
    // A v11 room gives the creator 100 in the power levels; a v12 room privileges creators.
    assert_eq!(hs.rooms.power_level(&room_id, &alice).unwrap(), 100);
    let v12 = room(&hs, &alice, RoomVersionId::V12).await;
    assert_eq!(hs.rooms.power_level(&v12, &alice).unwrap(), i64::MAX);
    assert!(v12.server_name().is_none(), "v12 room IDs carry no server name");
}
