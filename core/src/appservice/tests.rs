//! Which stream positions a service is sent, and how a transaction in flight survives, on an
//! in-memory homeserver (delivery itself is tested black-box, against a stand-in service).

use crate::test_support::user;
use hearth_storage::schema::AppserviceCursors;
use ruma::{OwnedRoomId, OwnedUserId, events::TimelineEventType};
use serde_json::json;

use crate::{Homeserver, config::HomeserverConfig, events::NewEvent, rooms::CreateRoom, users::NewAccount};

const BRIDGE: &str = "id: mau
url: http://127.0.0.1:9
as_token: as-token
hs_token: hs-token
sender_localpart: maubot
receive_ephemeral: true
namespaces:
  users:
    - exclusive: true
      regex: '@mau_.*'
";

fn homeserver(dir: &tempfile::TempDir) -> Homeserver {
    let file = dir.path().join("mau.yaml");
    std::fs::write(&file, BRIDGE).unwrap();
    let mut config = HomeserverConfig::for_tests();
    config.appservice.registration_files = vec![file];
    Homeserver::for_tests(config)
}

async fn public_room(hs: &Homeserver, creator: &OwnedUserId) -> OwnedRoomId {
    let mut create = CreateRoom::new();
    create.public = true;
    hs.rooms.create_room(creator, json!({}), create).await.unwrap()
}

async fn say(hs: &Homeserver, room: &OwnedRoomId, who: &OwnedUserId, body: &str) {
    let content = json!({"msgtype": "m.text", "body": body});
    hs.rooms
        .append(room, who, NewEvent::message(TimelineEventType::RoomMessage, content), None)
        .await
        .unwrap();
}

/// The bodies of the messages a planned transaction carries.
fn planned_bodies(hs: &Homeserver) -> Vec<String> {
    let service = hs.appservices.by_id("mau").unwrap().clone();
    let super::sender::Planned::Send(cursor, flight) =
        hs.plan_transaction(&service, hs.streams.published()).unwrap()
    else {
        return Vec::new();
    };
    let txn = hs.read_transaction(&service, cursor.acked, &flight).unwrap();
    txn.events.iter().filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)).collect()
}

/// Marks the transaction in flight as delivered.
fn acknowledge(hs: &Homeserver) {
    let mut cursor = hs.db.get::<AppserviceCursors>(&"mau".to_owned()).unwrap().unwrap();
    if let Some(flight) = cursor.in_flight.take() {
        cursor.acked = flight.to;
    }
    hs.db.put::<AppserviceCursors>(&"mau".to_owned(), &cursor).unwrap();
}

#[tokio::test]
async fn a_service_is_sent_the_rooms_its_users_are_in_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let hs = homeserver(&dir);
    hs.ensure_appservice_senders().await.unwrap();
    let alice = user(&hs, "alice").await;
    // The service starts from the position it first looked at.
    assert!(planned_bodies(&hs).is_empty());

    let theirs = public_room(&hs, &alice).await;
    say(&hs, &theirs, &alice, "before the bridge came").await;
    assert!(planned_bodies(&hs).is_empty(), "no namespaced user in the room yet");

    let ghost = hs.users.register(NewAccount {
        localpart: Some("mau_alice".into()),
        inhibit_login: true,
        appservice: true,
        ..Default::default()
    });
    let ghost = ghost.await.unwrap().user_id;
    hs.rooms.join(&theirs, &ghost, json!({}), None).await.unwrap();
    say(&hs, &theirs, &alice, "one").await;
    say(&hs, &theirs, &alice, "two").await;
    let other = public_room(&hs, &alice).await;
    say(&hs, &other, &alice, "elsewhere").await;
    assert_eq!(planned_bodies(&hs), ["one", "two"]);

    // Until it is acknowledged, the same transaction is planned again, with the same events,
    // even after newer ones.
    say(&hs, &theirs, &alice, "three").await;
    let first = hs.db.get::<AppserviceCursors>(&"mau".to_owned()).unwrap().unwrap().in_flight.unwrap();
    assert_eq!(planned_bodies(&hs), ["one", "two"]);
    let again = hs.db.get::<AppserviceCursors>(&"mau".to_owned()).unwrap().unwrap().in_flight.unwrap();
    assert_eq!(first, again);
    acknowledge(&hs);
    assert_eq!(planned_bodies(&hs), ["three"]);
    let next = hs.db.get::<AppserviceCursors>(&"mau".to_owned()).unwrap().unwrap().in_flight.unwrap();
    assert!(next.txn_id > first.txn_id);
}

#[tokio::test]
async fn the_senders_user_and_exclusive_names_are_the_services() {
    let dir = tempfile::tempdir().unwrap();
    let hs = homeserver(&dir);
    hs.ensure_appservice_senders().await.unwrap();
    // Created once, and again is harmless.
    hs.ensure_appservice_senders().await.unwrap();
    assert!(hs.users.exists(ruma::user_id!("@maubot:localhost")).unwrap());

    let service = hs.appservices.by_id("mau").unwrap().clone();
    let taken = hs.appservices.check_user_free(ruma::user_id!("@mau_x:localhost"), None).unwrap_err();
    assert_eq!(taken.code(), crate::ErrorCode::Exclusive);
    assert!(hs.appservices.check_user_free(ruma::user_id!("@mau_x:localhost"), Some("mau")).is_ok());
    assert!(hs.appservices.by_token("as-token").is_some_and(|s| s.id == service.id));
    assert!(hs.appservices.by_token("hs-token").is_none());

    // Every way of making an account goes through `register` (shared secret, JWT) or skips
    // reserved names (single sign-on): only the service takes a name of its namespace.
    let human = NewAccount { localpart: Some("mau_eve".into()), inhibit_login: true, ..Default::default() };
    let refused = hs.users.register(human.clone()).await.unwrap_err();
    assert_eq!(refused.code(), crate::ErrorCode::Exclusive);
    hs.users.register(NewAccount { appservice: true, ..human }).await.unwrap();

    let session = hs.authenticate("as-token", Some("user_id=%40maubot%3Alocalhost")).unwrap();
    assert_eq!(session.appservice.as_deref(), Some("mau"));
    assert_eq!(session.device_id, None);
    let refused = hs.authenticate("as-token", Some("user_id=@mau_nobody:localhost")).unwrap_err();
    assert_eq!(refused.code(), crate::ErrorCode::Forbidden);
}
