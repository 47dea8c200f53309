//! Presence: explicit status, delivery in /sync to users who share a room, idle transitions,
//! and the switch that turns it off.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

async fn sync(client: &Client, since: Option<&str>, presence: &str) -> Value {
    let mut path = format!("{V3}/sync?timeout=0&set_presence={presence}");
    if let Some(since) = since {
        path.push_str(&format!("&since={since}"));
    }
    client.get(&path).await.assert_ok().clone()
}

async fn pair(server: &TestServer) -> (Client, Client, Client) {
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let loner = Client::register(&server.base_url, "loner", "pw").await;
    let room = alice.post(&format!("{V3}/createRoom"), json!({"preset": "public_chat"})).await;
    let room = room.assert_ok()["room_id"].as_str().unwrap().to_owned();
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    (alice, bob, loner)
}

#[tokio::test]
async fn status_is_seen_by_room_mates_only() {
    let server = TestServer::start().await;
    let (alice, bob, loner) = pair(&server).await;
    let since = sync(&bob, None, "offline").await["next_batch"].as_str().unwrap().to_owned();

    let status = format!("{V3}/presence/@alice:localhost/status");
    alice.put(&status, json!({"presence": "online", "status_msg": "coding"})).await.assert_ok();
    let seen = bob.get(&status).await;
    assert_eq!(seen.assert_ok()["presence"], "online");
    assert_eq!(seen.body["status_msg"], "coding");
    assert_eq!(seen.body["currently_active"], true);
    loner.get(&status).await.assert_error(403, "M_FORBIDDEN");
    bob.put(&status, json!({"presence": "offline"})).await.assert_error(403, "M_FORBIDDEN");

    let next = sync(&bob, Some(&since), "offline").await;
    let events = next["presence"]["events"].as_array().unwrap();
    let alices = events.iter().find(|e| e["sender"] == "@alice:localhost").expect("alice's presence");
    assert_eq!(alices["content"]["presence"], "online");
    assert_eq!(alices["content"]["status_msg"], "coding");
    let since = next["next_batch"].as_str().unwrap().to_owned();

    alice.put(&status, json!({"presence": "unavailable"})).await.assert_ok();
    let next = sync(&bob, Some(&since), "offline").await;
    assert_eq!(next["presence"]["events"][0]["content"]["presence"], "unavailable");
    let lonely = sync(&loner, None, "offline").await;
    assert!(
        lonely["presence"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|e| e["sender"] != "@alice:localhost")
    );
}

#[tokio::test]
async fn syncing_sets_presence_and_idleness_sets_unavailable() {
    let server = TestServer::start_with(|c| c.presence.idle_timeout_secs = 1).await;
    let (alice, bob, _) = pair(&server).await;
    sync(&alice, None, "online").await;
    let status = format!("{V3}/presence/@alice:localhost/status");
    assert_eq!(bob.get(&status).await.assert_ok()["presence"], "online");
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    assert_eq!(bob.get(&status).await.assert_ok()["presence"], "unavailable");
}

#[tokio::test]
async fn presence_can_be_turned_off() {
    let server = TestServer::start_with(|c| c.presence.enabled = false).await;
    let (alice, bob, _) = pair(&server).await;
    let status = format!("{V3}/presence/@alice:localhost/status");
    alice.put(&status, json!({"presence": "online"})).await.assert_ok();
    assert_eq!(bob.get(&status).await.assert_ok()["presence"], "offline");
    assert!(sync(&bob, None, "online").await["presence"]["events"].as_array().is_none_or(Vec::is_empty));
}

#[tokio::test]
async fn a_presence_change_wakes_a_waiting_sync() {
    let server = TestServer::start().await;
    let (alice, bob, _) = pair(&server).await;
    let since = sync(&bob, None, "offline").await["next_batch"].as_str().unwrap().to_owned();
    // A long-poll far longer than the bound below: only a wake-up can end it in time.
    let waiting = {
        let bob = bob.clone();
        tokio::spawn(async move {
            bob.get(&format!("{V3}/sync?timeout=120000&set_presence=offline&since={since}")).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    alice
        .put(&format!("{V3}/presence/@alice:localhost/status"), json!({"presence": "unavailable"}))
        .await
        .assert_ok();
    let reply = tokio::time::timeout(std::time::Duration::from_secs(30), waiting)
        .await
        .expect("the waiting sync was woken")
        .unwrap();
    let events = reply.assert_ok()["presence"]["events"].as_array().unwrap().clone();
    assert!(events.iter().any(|e| e["sender"] == "@alice:localhost"), "{events:?}");
}
