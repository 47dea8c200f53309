//! matrix-rust-sdk, the library under Element X, against the server: its `SyncService` and
//! `RoomListService` over simplified sliding sync list the user's rooms by recency with names,
//! unread counts and latest messages, follow a live message, and hold an encrypted
//! conversation with a matrix-nio user (`clients/nio_peer.py`), both ways.

// The helpers below are test code too.
#![allow(clippy::unwrap_used)]
// The SDK's futures nest deeper than the compiler's default allows for one test body.
#![recursion_limit = "256"]

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use hearth_conformance_tests::{Client as Http, TestServer};
use matrix_sdk::{
    Client,
    ruma::{OwnedRoomId, RoomId, events::room::message::RoomMessageEventContent},
    sliding_sync::VersionBuilder,
};
use matrix_sdk_ui::{
    eyeball_im::Vector,
    room_list_service::{RoomListItem, filters::new_filter_non_left},
    sync_service::SyncService,
    timeline::{LatestEventValue, RoomExt},
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

const V3: &str = "/_matrix/client/v3";
/// How long any one wait may take before the test gives up.
const WAIT: Duration = Duration::from_secs(30);

fn names(items: &Vector<RoomListItem>) -> Vec<String> {
    items.iter().map(|room| room.cached_display_name().map(|n| n.to_string()).unwrap_or_default()).collect()
}

/// The text of a room's latest event, as the room list shows it.
async fn latest_text(room: &matrix_sdk::Room) -> Option<String> {
    let LatestEventValue::Remote { content, .. } = RoomExt::latest_event(room).await else { return None };
    content.as_message().map(|m| m.body().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn element_x_room_list_live_updates_and_encryption_with_nio() {
    let server = TestServer::start().await;
    let alice_http = Http::register(&server.base_url, "alice", "pw").await;
    let bob = Http::register(&server.base_url, "bob", "pw").await;
    let alice_id = alice_http.user_id().to_owned();
    let mut rooms: Vec<OwnedRoomId> = Vec::new();
    for name in ["Garden", "Kitchen", "Attic"] {
        let room = bob.create_room(json!({"name": name, "invite": [alice_id]})).await;
        alice_http.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
        rooms.push(RoomId::parse(&room).unwrap());
    }
    // Recency: Kitchen, then Garden, then Attic (whose last bump is its creation).
    bob.send_text(rooms[0].as_str(), "g", "in the garden").await;
    // Once it knows the latest events, the SDK ranks rooms by their timestamps (milliseconds):
    // the two messages must not share one.
    tokio::time::sleep(Duration::from_millis(20)).await;
    bob.send_text(rooms[1].as_str(), "k", "in the kitchen").await;

    let client = Client::builder()
        .homeserver_url(&server.base_url)
        .sliding_sync_version_builder(VersionBuilder::DiscoverNative)
        .build()
        .await
        .unwrap();
    client
        .matrix_auth()
        .login_username("alice", "pw")
        .initial_device_display_name("Element X")
        .await
        .unwrap();
    let sync = SyncService::builder(client.clone()).build().await.unwrap();
    sync.start().await;
    let room_list = sync.room_list_service();
    let all = room_list.all_rooms().await.unwrap();
    let (stream, controller) = all.entries_with_dynamic_adapters(50);
    controller.set_filter(Box::new(new_filter_non_left()));
    let mut stream = Box::pin(stream);
    let mut items: Vector<RoomListItem> = Vector::new();

    // The three rooms, most recent first, with their names and unread counts.
    let deadline = Instant::now() + WAIT;
    while names(&items) != ["Kitchen", "Garden", "Attic"] {
        let left = deadline.saturating_duration_since(Instant::now());
        let diffs = tokio::time::timeout(left, stream.next()).await;
        let Ok(Some(diffs)) = diffs else {
            panic!("the room list never showed the three rooms: {:?}", names(&items))
        };
        for diff in diffs {
            diff.apply(&mut items);
        }
    }
    let kitchen = client.get_room(&rooms[1]).unwrap();
    // The server's counts, which the room list shows for rooms the client cannot judge itself.
    let unread = |room: &matrix_sdk::Room| room.unread_notification_counts().notification_count;
    assert_eq!(unread(&kitchen), 1, "bob's message is unread");
    assert_eq!(unread(&client.get_room(&rooms[2]).unwrap()), 0);

    // The visible rooms are subscribed to, as Element X does: their latest messages appear.
    let ids: Vec<&RoomId> = rooms.iter().map(AsRef::as_ref).collect();
    room_list.subscribe_to_rooms(&ids).await;
    let deadline = Instant::now() + WAIT;
    while latest_text(&kitchen).await.as_deref() != Some("in the kitchen") {
        assert!(
            Instant::now() < deadline,
            "no latest message for the kitchen: {:?}",
            latest_text(&kitchen).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A live message moves the attic to the top, within a long-poll's wake-up.
    let sent = Instant::now();
    bob.send_text(rooms[2].as_str(), "a", "in the attic").await;
    let deadline = Instant::now() + WAIT;
    while names(&items).first().map(String::as_str) != Some("Attic") {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(diffs)) = tokio::time::timeout(left, stream.next()).await else {
            panic!("the live message never moved the attic up: {:?}", names(&items))
        };
        for diff in diffs {
            diff.apply(&mut items);
        }
    }
    eprintln!("live message reached the room list after {:?}", sent.elapsed());
    assert_eq!(names(&items), ["Attic", "Kitchen", "Garden"]);

    // Encryption with a matrix-nio user, both ways.
    let carol = Http::register(&server.base_url, "carol", "pw").await;
    let carol_id = matrix_sdk::ruma::UserId::parse(carol.user_id()).unwrap();
    let python = std::env::var("HEARTH_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/nio_peer.py");
    let (to_nio, to_sdk) = ("hello from the rust sdk", "hello from nio");
    let mut nio = tokio::process::Command::new(&python)
        .args([script, "--homeserver", &server.base_url, "--user", carol.user_id(), "--password", "pw"])
        .args(["--expect", to_nio, "--reply", to_sdk, "--timeout", "60"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let mut lines = BufReader::new(nio.stdout.take().unwrap()).lines();
    let mut nio_said: Vec<String> = Vec::new();
    // Reads what nio says until a line starts with `prefix`; a failure it reports ends the test.
    let mut until_nio_says = async |prefix: &str| loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        let line =
            line.ok().and_then(Result::ok).flatten().unwrap_or_else(|| panic!("nio stopped: {nio_said:?}"));
        nio_said.push(line.clone());
        assert!(!line.starts_with("FAIL"), "nio: {nio_said:?}");
        if line.starts_with(prefix) {
            return nio_said.clone();
        }
    };
    until_nio_says("ready").await;

    let request = matrix_sdk::ruma::api::client::room::create_room::v3::Request::new();
    let secret = client.create_room(request).await.unwrap();
    secret.enable_encryption().await.unwrap();
    // Element X shows a room through its timeline, which decrypts late events when their keys
    // arrive.
    let timeline = secret.timeline().await.unwrap();
    secret.invite_user_by_id(&carol_id).await.unwrap();
    until_nio_says("joined").await;
    // The SDK learns of carol's join before it shares the room key with her devices.
    let deadline = Instant::now() + WAIT;
    while secret.joined_members_count() < 2 {
        assert!(Instant::now() < deadline, "carol's join never reached the SDK");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    secret.send(RoomMessageEventContent::text_plain(to_nio)).await.unwrap();
    // nio decrypts it and answers.
    let nio_said = until_nio_says("received").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let items = timeline.items().await;
        let found = items.iter().any(|item| {
            item.as_event().and_then(|e| e.content().as_message()).is_some_and(|m| m.body() == to_sdk)
        });
        if found {
            break;
        }
        assert!(Instant::now() < deadline, "the SDK never decrypted nio's message; nio: {nio_said:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sync.stop().await;
    let status = tokio::time::timeout(Duration::from_secs(30), nio.wait()).await;
    assert!(status.is_ok_and(|s| s.is_ok_and(|s| s.success())), "nio peer: {nio_said:?}");
}
