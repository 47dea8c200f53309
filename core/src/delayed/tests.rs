//! Delayed events on an in-memory homeserver, with the timer task running as in the binary.

use crate::test_support::user;
use std::time::Duration;

use hearth_storage::records::FinalisedDelayedRecord;
use ruma::{OwnedRoomId, OwnedUserId, device_id, events::TimelineEventType};
use serde_json::{Value, json};

use super::DelayAction;
use crate::{Error, ErrorCode, Homeserver, config::HomeserverConfig, events::NewEvent, rooms::CreateRoom};

const CALL: &str = "org.matrix.msc3401.call.member";

fn start(hs: &Homeserver) -> tokio::task::JoinHandle<()> {
    let hs = hs.clone();
    tokio::spawn(async move { hs.run_delayed_sender(std::future::pending()).await })
}

async fn room(hs: &Homeserver, creator: &OwnedUserId, member: &OwnedUserId) -> OwnedRoomId {
    let mut create = CreateRoom::new();
    create.public = true;
    let room = hs.rooms.create_room(creator, json!({}), create).await.unwrap();
    hs.rooms.join(&room, member, json!({}), None).await.unwrap();
    // Members may set call state, as Element Call's rooms allow.
    let power = hs.rooms.current_state_event(&room, "m.room.power_levels", "").unwrap().unwrap();
    let mut content = power.content_json();
    content["events"][CALL] = json!(0);
    hs.rooms
        .append(&room, creator, NewEvent::state(TimelineEventType::RoomPowerLevels, "", content), None)
        .await
        .unwrap();
    room
}

async fn schedule(
    hs: &Homeserver,
    who: &OwnedUserId,
    room: &OwnedRoomId,
    key: &str,
    content: Value,
    delay: u64,
) -> Result<String, Error> {
    let state_key = Some(key.to_owned());
    hs.schedule_delayed(who, device_id!("D"), room, CALL.to_owned(), state_key, content, delay, None).await
}

fn call_state(hs: &Homeserver, room: &OwnedRoomId, key: &str) -> Option<Value> {
    hs.rooms.current_state_event(room, CALL, key).unwrap().map(|p| p.content_json())
}

/// Waits (bounded) until the call state under `key` is `wanted`.
async fn until_state(hs: &Homeserver, room: &OwnedRoomId, key: &str, wanted: &Value) -> bool {
    for _ in 0..200 {
        if call_state(hs, room, key).as_ref() == Some(wanted) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// `who`'s finalised delayed events once there are at least `n` (the timer records what it
/// sent just after sending it); bounded.
async fn finalised_at_least(hs: &Homeserver, who: &OwnedUserId, n: usize) -> Vec<FinalisedDelayedRecord> {
    for _ in 0..200 {
        let (_, finalised) = hs.delayed_events_of(who).await.unwrap();
        if finalised.len() >= n {
            return finalised;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("fewer than {n} finalised delayed events");
}

#[tokio::test]
async fn a_silent_client_leaves_by_its_delayed_event_and_an_alive_one_stays() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let timer = start(&hs);
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = room(&hs, &alice, &bob).await;
    let key = format!("_{bob}_D_m.call");

    // Bob joins the call the way MatrixRTC does: the delayed leave first, then the membership.
    let leave = schedule(&hs, &bob, &room, &key, json!({}), 60_000).await.unwrap();
    let member = json!({"application": "m.call", "device_id": "D"});
    hs.rooms
        .append(&room, &bob, NewEvent::state(CALL.into(), key.clone(), member.clone()), None)
        .await
        .unwrap();
    let (scheduled, _) = hs.delayed_events_of(&bob).await.unwrap();
    assert_eq!(scheduled.len(), 1, "his own membership does not cancel his delayed leave");
    let before = scheduled[0].1.running_since;
    tokio::time::sleep(Duration::from_millis(5)).await;
    hs.update_delayed(&leave, DelayAction::Restart).await.unwrap();
    let (scheduled, _) = hs.delayed_events_of(&bob).await.unwrap();
    assert!(scheduled[0].1.running_since > before, "a restart starts the delay again");
    assert_eq!(call_state(&hs, &room, &key), Some(member.clone()));

    // Bob goes silent with a short delay: the server takes him out of the call.
    hs.update_delayed(&leave, DelayAction::Cancel).await.unwrap();
    schedule(&hs, &bob, &room, &key, json!({}), 50).await.unwrap();
    assert!(until_state(&hs, &room, &key, &json!({})).await, "the delayed leave was sent");
    let finalised = finalised_at_least(&hs, &bob, 2).await;
    let (scheduled, _) = hs.delayed_events_of(&bob).await.unwrap();
    assert!(scheduled.is_empty());
    let outcomes: Vec<(&str, &str)> =
        finalised.iter().map(|f| (f.outcome.as_str(), f.reason.as_str())).collect();
    assert_eq!(outcomes, [("send", "delay"), ("cancel", "action")], "newest first");
    assert!(finalised[0].event_id.is_some());

    // Whatever is cancelled is never sent; an unknown ID is not found.
    let err = hs.update_delayed(&leave, DelayAction::Send).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    timer.abort();
}

#[tokio::test]
async fn send_now_state_set_by_others_and_permissions_at_send_time() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let timer = start(&hs);
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = room(&hs, &alice, &bob).await;

    let id = schedule(&hs, &bob, &room, "k1", json!({"n": 1}), 60_000).await.unwrap();
    hs.update_delayed(&id, DelayAction::Send).await.unwrap();
    assert_eq!(call_state(&hs, &room, "k1"), Some(json!({"n": 1})), "sent at once");

    // Someone else sets the same state meanwhile: theirs stands.
    schedule(&hs, &bob, &room, "k2", json!({"by": "bob"}), 100).await.unwrap();
    hs.rooms
        .append(&room, &alice, NewEvent::state(CALL.into(), "k2", json!({"by": "alice"})), None)
        .await
        .unwrap();
    let finalised = finalised_at_least(&hs, &bob, 2).await;
    assert_eq!(call_state(&hs, &room, "k2"), Some(json!({"by": "alice"})));
    assert_eq!(finalised[0].error.as_ref().unwrap()["errcode"], json!("M_CANCELLED_BY_STATE_UPDATE"));

    // Checked when sent: Bob has left, so his event is refused then, and listed as such.
    let id = schedule(&hs, &bob, &room, "k3", json!({}), 60_000).await.unwrap();
    hs.rooms.leave(&room, &bob, None).await.unwrap();
    let err = hs.update_delayed(&id, DelayAction::Send).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Forbidden);
    let (_, finalised) = hs.delayed_events_of(&bob).await.unwrap();
    assert_eq!((finalised[0].outcome.as_str(), finalised[0].reason.as_str()), ("cancel", "error"));
    assert_eq!(finalised[0].error.as_ref().unwrap()["errcode"], json!("M_FORBIDDEN"));
    timer.abort();
}

#[tokio::test]
async fn limits_and_what_falls_due_while_the_server_is_down() {
    let mut config = HomeserverConfig::for_tests();
    config.calls.max_delay_ms = 10_000;
    config.calls.max_delayed_per_user = 2;
    let hs = Homeserver::for_tests(config.clone());
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = room(&hs, &alice, &bob).await;

    let too_long = schedule(&hs, &bob, &room, "k", json!({}), 10_001).await.unwrap_err();
    assert!(matches!(too_long, Error::MaxDelayExceeded { max_delay_ms: 10_000 }));
    schedule(&hs, &bob, &room, "a", json!({"due": true}), 1).await.unwrap();
    schedule(&hs, &bob, &room, "b", json!({}), 10_000).await.unwrap();
    let full = schedule(&hs, &bob, &room, "c", json!({}), 1).await.unwrap_err();
    assert_eq!(full.code(), ErrorCode::LimitExceeded);

    // No timer ran ("the server was down"); a new one on the same database sends what is due.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let again = Homeserver::new(config, hs.db.clone(), hs.ephemeral.clone()).unwrap();
    let timer = start(&again);
    assert!(until_state(&again, &room, "a", &json!({"due": true})).await);
    let (scheduled, _) = again.delayed_events_of(&bob).await.unwrap();
    assert_eq!(scheduled.len(), 1, "the one not yet due stays scheduled");
    timer.abort();

    let mut off = HomeserverConfig::for_tests();
    off.calls.max_delay_ms = 0;
    let hs = Homeserver::for_tests(off);
    let carol = user(&hs, "carol").await;
    let dave = user(&hs, "dave").await;
    let elsewhere = self::room(&hs, &carol, &dave).await;
    let refused = schedule(&hs, &carol, &elsewhere, "k", json!({}), 1).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Forbidden);
}

#[tokio::test]
async fn deactivating_an_account_cancels_what_it_scheduled() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = room(&hs, &alice, &bob).await;
    let id = schedule(&hs, &bob, &room, "k", json!({}), 60_000).await.unwrap();
    hs.users.deactivate(&bob).await.unwrap();
    let (scheduled, _) = hs.delayed_events_of(&bob).await.unwrap();
    assert!(scheduled.is_empty());
    assert_eq!(hs.update_delayed(&id, DelayAction::Send).await.unwrap_err().code(), ErrorCode::NotFound);
}
