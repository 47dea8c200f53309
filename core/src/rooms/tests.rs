//! Rooms on an in-memory homeserver: every stored PDU is hashed and signed correctly, and the
//! write path enforces the auth rules.

use crate::test_support::user;
use hearth_storage::schema::Pdus;
use ruma::{
    CanonicalJsonValue, OwnedRoomId, RoomVersionId,
    events::TimelineEventType,
    room_version_rules::EventIdFormatVersion,
    serde::Base64,
    signatures::{PublicKeyMap, Verified, reference_hash, verify_event},
};
use serde_json::json;

use super::CreateRoom;
use crate::{
    Error, ErrorCode, Homeserver,
    config::HomeserverConfig,
    events::{NewEvent, pdu::parse_object},
};

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
    // Every version this server creates: their redaction and hashing rules differ.
    for version in super::CREATABLE_VERSIONS {
        let room_id = room(&hs, &alice, version.clone()).await;
        hs.rooms.join(&room_id, &bob, json!({}), None).await.unwrap();
        let msg = hs.rooms.append(&room_id, &bob, text("hi"), None).await.unwrap();
        let redaction = NewEvent {
            kind: TimelineEventType::RoomRedaction,
            content: json!({}),
            state_key: None,
            redacts: Some(msg.clone()),
            origin_server_ts: None,
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
            if rules.event_id_format == EventIdFormatVersion::V1 {
                assert_eq!(object["event_id"], CanonicalJsonValue::String(event_id.to_string()));
                assert_eq!(event_id.server_name(), Some(hs.server_name()), "{event_id}");
                let prev = &object["prev_events"];
                let CanonicalJsonValue::Array(prev) = prev else { panic!("{prev:?}") };
                assert!(prev.iter().all(|p| matches!(p, CanonicalJsonValue::Array(pair) if pair.len() == 2)));
            } else {
                let hash = reference_hash(&object, &rules).unwrap();
                assert_eq!(event_id.as_str(), format!("${hash}"), "event ID is the reference hash");
            }
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

/// Rewrites a stored event's content nested `levels` deep, as the API let in before the limit.
fn bury(hs: &Homeserver, event_id: &ruma::EventId, levels: usize) {
    let mut record = hs.rooms.pdu_record(event_id).unwrap().unwrap();
    let mut object = parse_object(&record.json).unwrap();
    // Spliced in as text: serde_json would refuse to build anything deeper than 128.
    let content = format!(r#"{{"body":"buried","d":{}}}"#, crate::json::nested(levels));
    object.insert("content".into(), ruma::CanonicalJsonValue::String("CONTENT".into()));
    record.json = serde_json::to_string(&object).unwrap().replace(r#""CONTENT""#, &content);
    hs.db.put::<Pdus>(&event_id.to_owned(), &record).unwrap();
}

#[tokio::test]
async fn a_stored_event_too_deep_to_serve_is_skipped_and_can_still_be_redacted() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let room_id = room(&hs, &alice, RoomVersionId::V12).await;
    hs.rooms.append(&room_id, &alice, text("before"), None).await.unwrap();
    let bad = hs.rooms.append(&room_id, &alice, text("bad"), None).await.unwrap();
    let topic = NewEvent::state(TimelineEventType::RoomTopic, "", json!({"topic": "t"}));
    let bad_state = hs.rooms.append(&room_id, &alice, topic, None).await.unwrap();
    hs.rooms.append(&room_id, &alice, text("after"), None).await.unwrap();
    // Past what any parser with serde_json's limit reads (130), and past what is still served
    // inside a response's envelopes (120).
    bury(&hs, &bad, 130);
    bury(&hs, &bad_state, 120);

    let page = hs
        .rooms
        .page(&room_id, &alice, None, None, super::PageDirection::Backward, 50, &|_| Ok(true))
        .unwrap();
    let ids: Vec<_> = page.events.iter().map(|(_, pdu, _)| pdu.event_id.clone()).collect();
    assert!(!ids.contains(&bad) && !ids.contains(&bad_state), "{ids:?}");
    assert!(page.events.len() >= 3, "the others are still there: {ids:?}");
    for (_, pdu, record) in &page.events {
        hs.rooms.client_event(&pdu.event_id, record, &alice, None).unwrap();
    }

    let group = hs.rooms.room(&room_id).unwrap().unwrap().current_state_group;
    let state = hs.rooms.state_events(group).unwrap();
    assert!(!state.iter().any(|(id, ..)| id == &bad_state));
    assert!(state.iter().any(|(_, _, pdu)| pdu.kind == TimelineEventType::RoomCreate));
    assert!(hs.rooms.visible_event(&room_id, &bad, &alice).unwrap().is_none());

    let redaction = NewEvent {
        kind: TimelineEventType::RoomRedaction,
        content: json!({}),
        state_key: None,
        redacts: Some(bad.clone()),
        origin_server_ts: None,
    };
    hs.rooms.append(&room_id, &alice, redaction, None).await.unwrap();
    let redacted = hs.rooms.visible_event(&room_id, &bad, &alice).unwrap().expect("servable once redacted");
    assert!(!redacted.1.json.contains("buried"));
}

/// The cached joined-member list against a fresh read of the membership table.
fn assert_joined_matches_storage(hs: &Homeserver, room_id: &ruma::RoomId) -> Vec<ruma::OwnedUserId> {
    let mut stored = Vec::new();
    for entry in hs.db.scan_prefix::<hearth_storage::schema::RoomMembers, _>(&room_id.to_owned()).unwrap() {
        let ((_, user), membership) = entry.unwrap();
        if membership == ruma::events::room::member::MembershipState::Join {
            stored.push(user);
        }
    }
    let members = hs.rooms.members(room_id).unwrap();
    assert_eq!(members.joined, stored);
    assert_eq!(&*members.local, stored.as_slice(), "every member is local here");
    assert!(members.servers.is_empty());
    stored
}

#[tokio::test]
async fn the_joined_member_cache_follows_every_membership_change() {
    use super::MembershipAction::{Ban, Invite, Kick, Unban};
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    let bob = user(&hs, "bob").await;
    let carol = user(&hs, "carol").await;
    let room_id = room(&hs, &alice, RoomVersionId::V12).await;
    assert_eq!(assert_joined_matches_storage(&hs, &room_id), std::slice::from_ref(&alice));

    let mut bob_wakes = hs.notifier.subscribe(&bob);
    hs.rooms.join(&room_id, &bob, json!({}), None).await.unwrap();
    assert_eq!(assert_joined_matches_storage(&hs, &room_id), [alice.clone(), bob.clone()]);
    // A send right after the join (the list was cached before it) wakes the new member.
    bob_wakes.mark_unchanged();
    hs.rooms.append(&room_id, &alice, text("welcome"), None).await.unwrap();
    assert!(bob_wakes.has_changed().unwrap(), "the joiner's /sync is woken");

    let change = |target: &ruma::OwnedUserId, action| {
        let (hs, room_id, alice, target) = (hs.clone(), room_id.clone(), alice.clone(), target.clone());
        async move { hs.rooms.change_membership(&room_id, &alice, &target, action, None, false).await.unwrap() }
    };
    change(&carol, Invite).await;
    assert_eq!(assert_joined_matches_storage(&hs, &room_id).len(), 2, "an invite is no join");
    assert_eq!(hs.rooms.members(&room_id).unwrap().invited, std::slice::from_ref(&carol));
    hs.rooms.join(&room_id, &carol, json!({}), None).await.unwrap();
    assert_eq!(assert_joined_matches_storage(&hs, &room_id).len(), 3);
    assert!(hs.rooms.members(&room_id).unwrap().invited.is_empty(), "the invitee joined");
    change(&bob, Kick).await;
    assert_eq!(assert_joined_matches_storage(&hs, &room_id), [alice.clone(), carol.clone()]);
    change(&carol, Ban).await;
    assert_eq!(assert_joined_matches_storage(&hs, &room_id), std::slice::from_ref(&alice));
    change(&carol, Unban).await;
    hs.rooms.join(&room_id, &bob, json!({}), None).await.unwrap();
    assert_eq!(assert_joined_matches_storage(&hs, &room_id), [alice.clone(), bob.clone()]);

    // A member who left is no longer woken by the room.
    hs.rooms.leave(&room_id, &bob, None).await.unwrap();
    assert_joined_matches_storage(&hs, &room_id);
    bob_wakes.mark_unchanged();
    hs.rooms.append(&room_id, &alice, text("gone"), None).await.unwrap();
    assert!(!bob_wakes.has_changed().unwrap(), "a leaver's /sync is not woken");
}

#[test]
fn a_failed_read_in_a_callback_is_an_error_not_a_missing_event() {
    let reads = super::Reads::default();
    assert_eq!(reads.keep(Ok(Some(1))), Some(1));
    assert_eq!(reads.keep::<u8>(Err(Error::internal("disk"))), None);
    assert_eq!(reads.keep::<u8>(Ok(None)), None);
    assert!(reads.finish(()).is_err(), "the failure comes back after the call");
    assert!(super::Reads::default().finish(()).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_creations_at_once_make_different_rooms() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let alice = user(&hs, "alice").await;
    // Since v12 a room's ID is its create event's hash: the same creator and content in the
    // same millisecond must still make rooms of their own.
    let creations = (0..8).map(|_| {
        let hs = hs.clone();
        let alice = alice.clone();
        tokio::spawn(async move {
            let mut create = CreateRoom::new();
            create.version = Some(RoomVersionId::V12);
            hs.rooms.create_room(&alice, json!({}), create).await
        })
    });
    let mut ids = std::collections::BTreeSet::new();
    for creation in creations.collect::<Vec<_>>() {
        ids.insert(creation.await.unwrap().unwrap());
    }
    assert_eq!(ids.len(), 8);
    for id in &ids {
        assert!(hs.rooms.current_state_event(id, "m.room.join_rules", "").unwrap().is_some(), "{id}");
    }
}

/// An in-memory engine whose reads of one key fail while `failing` is set: a disk error.
struct FlakyEngine {
    inner: hearth_storage::MemEngine,
    failing: std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>,
}

impl FlakyEngine {
    fn check(&self, cf: &str, key: &[u8]) -> hearth_storage::Result<()> {
        let failing = self.failing.lock().unwrap();
        match failing.as_deref() {
            Some(needle) if cf == "pdus" && key.windows(needle.len()).any(|w| w == needle) => {
                Err(hearth_storage::Error::Engine("injected read failure".into()))
            }
            _ => Ok(()),
        }
    }
}

impl hearth_storage::KvEngine for FlakyEngine {
    fn get(&self, cf: &'static str, key: &[u8]) -> hearth_storage::Result<Option<Vec<u8>>> {
        self.check(cf, key)?;
        self.inner.get(cf, key)
    }
    fn write(&self, ops: Vec<hearth_storage::engine::WriteOp>, sync: bool) -> hearth_storage::Result<()> {
        self.inner.write(ops, sync)
    }
    fn range(
        &self,
        cf: &'static str,
        lower: std::ops::Bound<Vec<u8>>,
        upper: std::ops::Bound<Vec<u8>>,
        reverse: bool,
    ) -> hearth_storage::Result<hearth_storage::engine::RawIter<'_>> {
        self.inner.range(cf, lower, upper, reverse)
    }
    fn flush(&self) -> hearth_storage::Result<()> {
        self.inner.flush()
    }
}

#[tokio::test]
async fn a_storage_error_during_auth_of_an_incoming_event_fails_the_request_and_rejects_nothing() {
    let failing = std::sync::Arc::new(std::sync::Mutex::new(None));
    let engine = FlakyEngine {
        inner: hearth_storage::MemEngine::new(hearth_storage::schema::ALL_TABLES),
        failing: failing.clone(),
    };
    let db = hearth_storage::Db::from_engine(Box::new(engine), false).unwrap();
    let ephemeral = std::sync::Arc::new(crate::ephemeral::LocalEphemeral::new());
    let hs = Homeserver::new(HomeserverConfig::for_tests(), db, ephemeral).unwrap();
    let alice = user(&hs, "alice").await;
    let room_id = room(&hs, &alice, RoomVersionId::V12).await;

    // An event as it would arrive from another server: built on the room's current graph.
    let (event_id, object) = hs.rooms.prepare_blocking(&room_id, &alice, &text("from afar")).unwrap();
    let json = crate::events::pdu::to_json_string(&object).unwrap();
    let power_levels =
        hs.rooms.current_state_event(&room_id, "m.room.power_levels", "").unwrap().unwrap().event_id;

    // Reading one of its auth events fails: the request fails, and nothing is decided.
    *failing.lock().unwrap() = Some(power_levels.as_bytes().to_vec());
    let err = hs.rooms.receive_pdu(&room_id, &event_id, json.clone()).await.unwrap_err();
    assert!(err.to_string().contains("injected read failure"), "{err}");
    *failing.lock().unwrap() = None;
    assert!(hs.rooms.pdu_record(&event_id).unwrap().is_none(), "neither rejected nor soft-failed");

    // Once the disk answers again, the same event is accepted.
    let received = hs.rooms.receive_pdu(&room_id, &event_id, json).await.unwrap();
    assert!(matches!(received, super::remote::Received::Accepted), "{received:?}");
    let page = hs.rooms.page(&room_id, &alice, None, None, super::PageDirection::Backward, 1, &|_| Ok(true));
    assert_eq!(page.unwrap().events[0].1.event_id, event_id);
}
