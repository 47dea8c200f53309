//! Push rule evaluation on an in-memory homeserver: who is notified and highlighted by what,
//! and what marks it read.

use crate::test_support::user;
use ruma::{
    OwnedRoomId, UserId,
    events::TimelineEventType,
    push::{Action, HighlightTweakValue, NewPatternedPushRule, NewPushRule, Tweak},
};
use serde_json::{Value, json};

use super::{Counts, unread_counts};
use crate::{Homeserver, config::HomeserverConfig, events::NewEvent, rooms::CreateRoom, users::NewAccount};

/// A public room made by `creator`, with everyone in `others` joined under a display name.
async fn room(hs: &Homeserver, creator: &UserId, others: &[(&UserId, &str)]) -> OwnedRoomId {
    let mut create = CreateRoom::new();
    create.public = true;
    let room = hs.rooms.create_room(creator, json!({"displayname": "Creator"}), create).await.unwrap();
    for (user, name) in others {
        hs.rooms.join(&room, user, json!({"displayname": name}), None).await.unwrap();
    }
    room
}

async fn message(hs: &Homeserver, room: &OwnedRoomId, sender: &UserId, content: Value) -> ruma::OwnedEventId {
    let new = NewEvent::message(TimelineEventType::RoomMessage, content);
    hs.rooms.append(room, sender, new, None).await.unwrap()
}

fn counts(hs: &Homeserver, user: &UserId, room: &OwnedRoomId) -> Counts {
    unread_counts(&hs.db, user, room, u64::MAX).unwrap().total()
}

fn c(notifications: u64, highlights: u64) -> Counts {
    Counts { notifications, highlights }
}

#[tokio::test]
async fn mentions_by_name_by_id_and_by_room_highlight_and_the_sender_is_never_notified() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let (boss, alice, bob) = (user(&hs, "boss").await, user(&hs, "alice").await, user(&hs, "bob").await);
    let room = room(&hs, &boss, &[(&alice, "Alice Liddell"), (&bob, "Bob")]).await;

    message(&hs, &room, &bob, json!({"msgtype": "m.text", "body": "hello"})).await;
    assert_eq!(counts(&hs, &alice, &room), c(1, 0), "a message in a group notifies");
    assert_eq!(counts(&hs, &bob, &room), c(0, 0), "never one's own");

    // Since Matrix 1.17 (MSC4210) a name in the body is no mention; `m.mentions` is.
    message(&hs, &room, &bob, json!({"msgtype": "m.text", "body": "thanks alice liddell!"})).await;
    assert_eq!(counts(&hs, &alice, &room), c(2, 0));
    let mention = json!({"msgtype": "m.text", "body": "x", "m.mentions": {"user_ids": [alice]}});
    message(&hs, &room, &bob, mention).await;
    assert_eq!(counts(&hs, &alice, &room), c(3, 1), "m.mentions");
    assert_eq!(counts(&hs, &boss, &room), c(3, 0));

    // `@room` needs the power level `notifications.room` asks for (50): bob has 0, boss 100.
    let everyone = json!({"msgtype": "m.text", "body": "all", "m.mentions": {"room": true}});
    message(&hs, &room, &bob, everyone.clone()).await;
    assert_eq!(counts(&hs, &alice, &room), c(4, 1), "not from someone without the power to");
    message(&hs, &room, &boss, everyone).await;
    assert_eq!(counts(&hs, &alice, &room), c(5, 2));
    assert_eq!(counts(&hs, &bob, &room), c(1, 1));

    // A keyword rule of alice's own (a content rule) highlights, read from her changed rules.
    let mut rules = hs.account_data.push_rules(&alice).unwrap();
    let highlight = Action::SetTweak(Tweak::Highlight(HighlightTweakValue::Yes));
    let keyword =
        NewPatternedPushRule::new("deploy".into(), "deploy".into(), vec![Action::Notify, highlight]);
    rules.insert(NewPushRule::Content(keyword), None, None).unwrap();
    hs.account_data.set_push_rules(&alice, &rules).await.unwrap();
    message(&hs, &room, &bob, json!({"msgtype": "m.text", "body": "Deploy is done"})).await;
    assert_eq!(counts(&hs, &alice, &room), c(6, 3));
    assert_eq!(counts(&hs, &boss, &room), c(1, 0), "his own message read what came before it");
}

#[tokio::test]
async fn encrypted_events_count_by_type_and_an_invite_notifies_the_invitee() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let (alice, bob, carol) = (user(&hs, "alice").await, user(&hs, "bob").await, user(&hs, "carol").await);
    let room = room(&hs, &alice, &[(&bob, "Bob")]).await;
    let encrypted = NewEvent::message(
        TimelineEventType::RoomEncrypted,
        json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AAAA", "sender_key": "k", "session_id": "s", "device_id": "D"}),
    );
    hs.rooms.append(&room, &bob, encrypted, None).await.unwrap();
    assert_eq!(counts(&hs, &alice, &room), c(1, 0));

    let invite =
        NewEvent::state(TimelineEventType::RoomMember, carol.as_str(), json!({"membership": "invite"}));
    hs.rooms.append(&room, &alice, invite, None).await.unwrap();
    assert_eq!(counts(&hs, &carol, &room), c(1, 0), "`.m.rule.invite_for_me`");
    assert_eq!(counts(&hs, &bob, &room).highlights, 0);
}

#[tokio::test]
async fn leaving_a_room_leaves_nothing_unread_in_it() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = room(&hs, &alice, &[(&bob, "Bob")]).await;
    message(&hs, &room, &alice, json!({"msgtype": "m.text", "body": "one"})).await;
    assert_eq!(counts(&hs, &bob, &room), c(1, 0));
    hs.rooms.leave(&room, &bob, None).await.unwrap();
    assert_eq!(counts(&hs, &bob, &room), c(0, 0));
}

#[tokio::test]
async fn old_notifications_are_pruned_but_counts_stay() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let (alice, bob) = (user(&hs, "alice").await, user(&hs, "bob").await);
    let room = room(&hs, &alice, &[(&bob, "Bob")]).await;
    message(&hs, &room, &alice, json!({"msgtype": "m.text", "body": "one"})).await;
    let (listed, _) = super::notifications(&hs.db, &bob, None, 10, false).unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].read);
    assert_eq!(super::prune_notifications(&hs.db, 0).unwrap(), 0, "nothing is that old");
    assert_eq!(super::prune_notifications(&hs.db, u64::MAX).unwrap(), 1);
    assert!(super::notifications(&hs.db, &bob, None, 10, false).unwrap().0.is_empty());
    assert_eq!(counts(&hs, &bob, &room), c(1, 0));
}

#[tokio::test]
async fn pushers_go_with_their_device_and_all_go_with_the_account() {
    use ruma::api::client::push::{Pusher, PusherIds, PusherInit, PusherKind};
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let new = NewAccount { localpart: Some("alice".into()), ..Default::default() };
    let registered = hs.users.register(new).await.unwrap();
    let (alice, device) = (registered.user_id, registered.login.unwrap().device_id);
    // One pusher from the session's device, one with no device (as an admin tool might set).
    for (pushkey, from) in [("phone", Some(&*device)), ("other", None)] {
        let data = ruma::push::HttpPusherData::new("https://push.example.org/_matrix/push/v1/notify".into());
        let pusher = Pusher::from(PusherInit {
            ids: PusherIds::new(pushkey.into(), "org.example.app".into()),
            kind: PusherKind::Http(data),
            app_display_name: "App".into(),
            device_display_name: pushkey.into(),
            profile_tag: None,
            lang: "en".into(),
        });
        hs.set_pusher(&alice, from, pusher, false).await.unwrap();
    }
    assert_eq!(hs.pushers(&alice).unwrap().len(), 2);
    hs.users.delete_devices(&alice, std::slice::from_ref(&device)).await.unwrap();
    let left: Vec<String> = hs.pushers(&alice).unwrap().into_iter().map(|p| p.ids.pushkey).collect();
    assert_eq!(left, ["other"]);
    hs.users.deactivate(&alice).await.unwrap();
    assert!(hs.pushers(&alice).unwrap().is_empty());
}
