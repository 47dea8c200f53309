//! Events pushed with prev events we lack, between two in-memory servers on a [`FakeNet`]: the
//! gap is closed with `get_missing_events`, or with the state at it (`/state_ids`, then
//! `/event` or `/state`); a broken auth chain never reaches the room's state; a lying server's
//! state is resolved against ours; a server that does not answer is left alone for a while; a
//! join whose `send_join` answer carries events that cannot be verified drops them and joins.
//! The outbox sender does not run here, so nothing reaches the other server unless a test
//! pushes it.

use crate::test_support::user;
use std::sync::Arc;

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId, ServerName, events::TimelineEventType};
use serde_json::{json, value::RawValue};

use super::fake_net::{FakeNet, error_response};
use crate::{Homeserver, events::NewEvent, rooms::CreateRoom};

const A: &str = "a.test";
const B: &str = "b.test";

struct Pair {
    net: Arc<FakeNet>,
    a: Homeserver,
    b: Homeserver,
    alice: OwnedUserId,
    room: OwnedRoomId,
}

/// Alice on A creates a public room; bob on B joins it through A.
async fn pair() -> Pair {
    let net = FakeNet::new();
    let (a, b) = (net.server(A), net.server(B));
    let alice = user(&a, "alice").await;
    let bob = user(&b, "bob").await;
    let mut create = CreateRoom::new();
    create.version = Some(RoomVersionId::V12);
    create.public = true;
    let room = a.rooms.create_room(&alice, json!({}), create).await.unwrap();
    b.join_room(&room, &bob, json!({}), None, &[ServerName::parse(A).unwrap()]).await.unwrap();
    net.clear_log();
    Pair { net, a, b, alice, room }
}

impl Pair {
    async fn say(&self, body: &str) -> OwnedEventId {
        let new =
            NewEvent::message(TimelineEventType::RoomMessage, json!({"msgtype": "m.text", "body": body}));
        self.a.rooms.append(&self.room, &self.alice, new, None).await.unwrap()
    }

    async fn set_state(&self, kind: &str, key: &str, content: serde_json::Value) -> OwnedEventId {
        let new = NewEvent::state(kind.into(), key, content);
        self.a.rooms.append(&self.room, &self.alice, new, None).await.unwrap()
    }

    /// Pushes A's copy of `event` to B in a transaction of its own; B's verdict on it.
    async fn push(&self, txn: &str, event: &OwnedEventId) -> Result<(), String> {
        let json = self.a.rooms.pdu_record(event).unwrap().unwrap().json;
        let pdus = vec![RawValue::from_string(json).unwrap()];
        let results =
            self.b.receive_transaction(&ServerName::parse(A).unwrap(), txn, pdus, Vec::new()).await.unwrap();
        results.get(event).cloned().unwrap()
    }

    /// Whether B has the event in the room's timeline.
    fn b_shows(&self, event: &OwnedEventId) -> bool {
        self.b.rooms.pdu_record(event).unwrap().is_some_and(|r| r.stream_pos.is_some())
    }

    fn b_current(&self, kind: &str, key: &str) -> Option<OwnedEventId> {
        self.b.rooms.current_state_event(&self.room, kind, key).unwrap().map(|p| p.event_id)
    }
}

#[tokio::test]
async fn a_small_gap_is_filled_from_get_missing_events_alone() {
    let p = pair().await;
    let mut missed = Vec::new();
    for i in 0..5 {
        missed.push(p.say(&format!("missed {i}")).await);
    }
    let last = p.say("last").await;

    assert_eq!(p.push("t1", &last).await, Ok(()));
    assert!(p.b_shows(&last));
    for id in &missed {
        assert!(p.b_shows(id), "{id} was not fetched");
    }
    assert_eq!(p.net.requests("get_missing_events"), 1);
    assert_eq!(p.net.requests("/state"), 0, "no state is needed when the gap closes");
}

#[tokio::test]
async fn a_wide_gap_takes_the_state_at_it_from_the_sender() {
    let p = pair().await;
    let renamed = p.set_state("m.room.name", "", json!({"name": "renamed in the gap"})).await;
    for i in 0..14 {
        p.say(&format!("missed {i}")).await;
    }
    let last = p.say("last").await;

    assert_eq!(p.push("t1", &last).await, Ok(()));
    assert!(p.b_shows(&last));
    assert_eq!(p.net.requests("GET /_matrix/federation/v1/state_ids/"), 1);
    // The rename happened in the part of the gap nobody sent us; the state at the gap has it.
    assert_eq!(p.b_current("m.room.name", ""), Some(renamed));
}

#[tokio::test]
async fn a_server_that_only_answers_state_ids_is_asked_event_by_event() {
    let p = pair().await;
    // Most of the state is new to B, so B prefers one `/state` request, which A refuses.
    for i in 0..6 {
        p.set_state("org.example.filler", &i.to_string(), json!({"i": i})).await;
    }
    for i in 0..14 {
        p.say(&format!("missed {i}")).await;
    }
    let last = p.say("last").await;
    p.net.intercept(|_, line| {
        line.starts_with("GET /_matrix/federation/v1/state/").then(|| Ok(error_response(404, "not here")))
    });

    assert_eq!(p.push("t1", &last).await, Ok(()));
    assert!(p.b_shows(&last));
    assert_eq!(p.net.requests("GET /_matrix/federation/v1/state/"), 1);
    assert!(p.b_current("org.example.filler", "5").is_some());
}

#[tokio::test]
async fn an_event_whose_auth_chain_cannot_be_had_never_enters_the_state() {
    let p = pair().await;
    let original = p.b_current("m.room.member", p.alice.as_str()).unwrap();
    let mut renames = Vec::new();
    for name in ["A", "B", "C", "D", "E"] {
        let id = p.set_state(
            "m.room.member",
            p.alice.as_str(),
            json!({"membership": "join", "displayname": name}),
        );
        renames.push(id.await);
    }
    for i in 0..14 {
        p.say(&format!("missed {i}")).await;
    }
    let last = p.say("last").await;
    // A answers `/state_ids` but neither `/state` nor `/event` for rename B.
    let b_rename = format!("/event/{}", renames[1]);
    p.net.intercept(move |_, line| {
        (line.starts_with("GET /_matrix/federation/v1/state/") || line.ends_with(&b_rename))
            .then(|| Ok(error_response(404, "not here")))
    });

    assert!(p.push("t1", &last).await.is_err(), "its gap cannot be closed");
    assert!(!p.b_shows(&last));
    assert!(p.net.requests(&format!("/event/{}", renames[1])) >= 1, "B was asked for");
    for later in &renames[2..] {
        assert!(!p.b.rooms.has_event(later).unwrap(), "{later} depends on the missing rename");
    }
    assert_eq!(p.b_current("m.room.member", p.alice.as_str()), Some(original));
}

#[tokio::test]
async fn state_at_a_gap_is_resolved_against_ours_not_taken_as_it_is() {
    let p = pair().await;
    let public = p.b_current("m.room.join_rules", "").unwrap();
    let invite = p.set_state("m.room.join_rules", "", json!({"join_rule": "invite"})).await;
    assert_eq!(p.push("t1", &invite).await, Ok(()));
    for i in 0..14 {
        p.say(&format!("missed {i}")).await;
    }
    let last = p.say("last").await;
    // A claims the room is still public at the gap.
    let a = p.a.clone();
    let (public_id, invite_id) = (public.clone(), invite.clone());
    p.net.intercept(move |_, line| {
        let event = line.strip_prefix("GET /_matrix/federation/v1/state_ids/")?.split("event_id=").nth(1)?;
        let event = ruma::EventId::parse(event).ok()?;
        let room = a.rooms.pdu(&event).ok()??.room_id?;
        let (chain, ids) = a.state_ids_for_server(&ServerName::parse(B).unwrap(), &room, &event).ok()?;
        let ids = ids.into_iter().map(|id| if id == invite_id { public_id.clone() } else { id }).collect();
        let response = ruma::api::federation::event::get_room_state_ids::v1::Response::new(chain, ids);
        Some(super::fake_net::reply(response))
    });

    assert_eq!(p.push("t2", &last).await, Ok(()));
    assert!(p.b_shows(&last));
    assert_eq!(p.b_current("m.room.join_rules", ""), Some(invite));
}

#[tokio::test]
async fn a_server_that_does_not_answer_is_not_asked_again_at_once() {
    let p = pair().await;
    p.say("missed").await;
    let first = p.say("first").await;
    p.net.intercept(|destination, _| {
        (destination.as_str() == A)
            .then(|| Err(crate::Error::new(crate::ErrorCode::RemoteUnavailable, "unreachable")))
    });
    assert!(p.push("t1", &first).await.is_err());
    let asked = p.net.requests("get_missing_events");
    assert_eq!(asked, 1);

    let second = p.say("second").await;
    assert!(p.push("t2", &second).await.is_err());
    assert_eq!(p.net.requests("get_missing_events"), asked, "A is in backoff");
}

/// Replaces the signatures of the events in a `send_join` answer for which `pick` says so.
fn tamper(body: &mut serde_json::Value, pick: &dyn Fn(&serde_json::Value) -> Option<serde_json::Value>) {
    for list in ["state", "auth_chain"] {
        for event in body[list].as_array_mut().into_iter().flatten() {
            if let Some(signatures) = pick(event) {
                event["signatures"] = signatures;
            }
        }
    }
}

#[tokio::test]
async fn a_join_drops_the_events_it_cannot_verify_instead_of_failing() {
    let net = FakeNet::new();
    let (a, b) = (net.server(A), net.server(B));
    let alice = user(&a, "alice").await;
    let carol = user(&a, "carol").await;
    let bob = user(&b, "bob").await;
    let mut create = CreateRoom::new();
    create.version = Some(RoomVersionId::V12);
    create.public = true;
    let room = a.rooms.create_room(&alice, json!({}), create).await.unwrap();
    let state =
        |kind: &str, key: &str, content: serde_json::Value| NewEvent::state(kind.into(), key, content);
    a.rooms.append(&room, &alice, state("m.room.name", "", json!({"name": "unsigned"})), None).await.unwrap();
    a.rooms
        .append(&room, &alice, state("m.room.topic", "", json!({"topic": "unknown key"})), None)
        .await
        .unwrap();
    a.rooms.join(&room, &carol, json!({}), None).await.unwrap();
    let rename = state("m.room.member", carol.as_str(), json!({"membership": "join", "displayname": "c"}));
    a.rooms.append(&room, &carol, rename, None).await.unwrap();

    let key_id = a.signing_key.key_id.clone();
    let carol_id = carol.to_string();
    net.rewrite(move |_, line, body| {
        if !line.contains("/send_join/") {
            return;
        }
        tamper(body, &|event| match (event["type"].as_str(), event["state_key"].as_str()) {
            // No signature at all.
            (Some("m.room.name"), _) => Some(json!({})),
            // Signed with a key its server does not have.
            (Some("m.room.topic"), _) => Some(json!({ A: { "ed25519:bogus": "A".repeat(86) } })),
            // A signature that does not match, on an event another one needs as an auth event.
            (Some("m.room.member"), Some(key))
                if key == carol_id && event["content"].get("displayname").is_none() =>
            {
                Some(json!({ A: { key_id.clone(): "A".repeat(86) } }))
            }
            _ => None,
        });
    });

    b.join_room(&room, &bob, json!({}), None, &[ServerName::parse(A).unwrap()]).await.unwrap();
    let current = |kind: &str, key: &str| b.rooms.current_state_event(&room, kind, key).unwrap();
    assert!(current("m.room.member", bob.as_str()).is_some(), "bob joined");
    assert!(current("m.room.join_rules", "").is_some());
    assert!(current("m.room.name", "").is_none(), "the unsigned name was dropped");
    assert!(current("m.room.topic", "").is_none(), "the topic signed with an unknown key was dropped");
    assert!(
        current("m.room.member", carol.as_str()).is_none(),
        "carol's rename was dropped with the join it depends on"
    );
}

#[tokio::test]
async fn missing_events_from_before_a_server_could_see_them_are_given_redacted() {
    for (visibility, redacted) in
        [("world_readable", false), ("shared", false), ("invited", true), ("joined", true)]
    {
        let net = FakeNet::new();
        let (a, b) = (net.server(A), net.server(B));
        let alice = user(&a, "alice").await;
        let bob = user(&b, "bob").await;
        let mut create = CreateRoom::new();
        create.version = Some(RoomVersionId::V12);
        create.public = true;
        let room = a.rooms.create_room(&alice, json!({}), create).await.unwrap();
        let hv = NewEvent::state(
            "m.room.history_visibility".into(),
            "",
            json!({"history_visibility": visibility}),
        );
        a.rooms.append(&room, &alice, hv, None).await.unwrap();
        let text =
            NewEvent::message(TimelineEventType::RoomMessage, json!({"msgtype": "m.text", "body": "1"}));
        a.rooms.append(&room, &alice, text, None).await.unwrap();
        b.join_room(&room, &bob, json!({}), None, &[ServerName::parse(A).unwrap()]).await.unwrap();

        let create_id = a.rooms.current_state_event(&room, "m.room.create", "").unwrap().unwrap().event_id;
        let join_id =
            a.rooms.current_state_event(&room, "m.room.member", bob.as_str()).unwrap().unwrap().event_id;
        let events =
            a.missing_events(&ServerName::parse(B).unwrap(), &room, &[create_id], &[join_id], 10).unwrap();
        let events: Vec<serde_json::Value> =
            events.iter().map(|e| serde_json::from_str(e).unwrap()).collect();
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        // Oldest first, without the create event the request starts from; no guest access
        // event in a public room.
        let expected = [
            "m.room.member",
            "m.room.power_levels",
            "m.room.join_rules",
            "m.room.history_visibility",
            "m.room.history_visibility",
            "m.room.message",
        ];
        assert_eq!(kinds, expected, "{visibility}");
        let message = events.last().unwrap();
        assert_eq!(message["content"].get("body").is_none(), redacted, "{visibility}: {message}");
    }
}
