//! Redis as the store of short-lived state: it is really used, losing it loses no message,
//! and the server reconnects when it returns. Against a real redis-server on loopback.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, TestServer, redis::RedisServer};
use serde_json::json;

const V3: &str = "/_matrix/client/v3";

#[tokio::test]
async fn short_lived_state_lives_in_redis_and_messages_survive_its_loss() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let server = TestServer::start_with(|c| c.redis.url = Some(url.clone())).await;

    // A UIA session is created in Redis.
    let challenge =
        server.client().post(&format!("{V3}/register"), json!({"username": "alice", "password": "pw"})).await;
    let session = challenge.body["session"].as_str().unwrap().to_owned();
    assert_eq!(redis.cli(&["EXISTS", &format!("hearth:uiaa:{session}")]), "1");
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let since =
        bob.get(&format!("{V3}/sync?timeout=0")).await.assert_ok()["next_batch"].as_str().unwrap().to_owned();

    // Redis dies: sending and syncing go on.
    redis.kill();
    let event = alice.send_text(&room, "while-down", "redis is gone").await;
    let next = bob.get(&format!("{V3}/sync?timeout=0&since={since}")).await;
    let events = next.assert_ok()["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().clone();
    assert!(events.iter().any(|e| e["event_id"] == json!(event)), "{events:?}");
    // What needs Redis fails cleanly, as a Matrix error.
    let failed =
        server.client().post(&format!("{V3}/register"), json!({"username": "carol", "password": "pw"})).await;
    failed.assert_error(500, "M_UNKNOWN");

    // Redis returns (empty): the server reconnects by itself.
    redis.restart();
    let mut ok = false;
    for _ in 0..100 {
        let reply = server
            .client()
            .post(&format!("{V3}/register"), json!({"username": "carol", "password": "pw"}))
            .await;
        if reply.status.as_u16() == 401 {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "the server did not reconnect to redis");
    Client::register(&server.base_url, "carol", "pw").await;
}

#[tokio::test]
async fn presence_lives_in_redis_outlives_a_restart_and_degrades_without_it() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let server = TestServer::start_with(|c| c.redis.url = Some(url.clone())).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let alice_id = alice.user_id.clone().unwrap();
    let status_path = format!("{V3}/presence/{alice_id}/status");

    alice.put(&status_path, json!({"presence": "unavailable", "status_msg": "at lunch"})).await.assert_ok();
    let seen = bob.get(&status_path).await;
    assert_eq!(seen.assert_ok()["presence"], "unavailable");
    assert_eq!(seen.body["status_msg"], "at lunch");
    let stored = redis.cli(&["GET", &format!("hearth:presence:{alice_id}")]);
    assert!(stored.contains("at lunch"), "presence is not in redis: {stored}");

    // A restart empties the process; what bob sees now comes from Redis.
    let server = server.restart().await;
    let bob = Client::new(&server.base_url).with_token(bob.access_token.as_ref().unwrap());
    let alice = Client::new(&server.base_url).with_token(alice.access_token.as_ref().unwrap());
    let seen = bob.get(&status_path).await;
    assert_eq!(seen.assert_ok()["presence"], "unavailable", "{:?}", seen.body);
    assert_eq!(seen.body["status_msg"], "at lunch");

    // Without Redis presence still works within this process, and messages still flow.
    redis.kill();
    alice.put(&status_path, json!({"presence": "online", "status_msg": "back"})).await.assert_ok();
    let seen = bob.get(&status_path).await;
    assert_eq!(seen.assert_ok()["presence"], "online");
    assert_eq!(seen.body["status_msg"], "back");
    let event = alice.send_text(&room, "no-redis", "still here").await;
    let messages = bob.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=5")).await;
    let chunk = messages.assert_ok()["chunk"].as_array().unwrap().clone();
    assert!(chunk.iter().any(|e| e["event_id"] == json!(event)), "{chunk:?}");
}

#[tokio::test]
async fn profiles_are_read_through_redis_invalidated_on_change_and_read_without_it() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let server = TestServer::start_with(|c| c.redis.url = Some(url.clone())).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let id = alice.user_id.clone().unwrap();
    let key = format!("hearth:cache:profile:{id}");
    let path = format!("{V3}/profile/{id}");

    alice.put(&format!("{path}/displayname"), json!({"displayname": "Alice"})).await.assert_ok();
    assert_eq!(alice.get(&path).await.assert_ok()["displayname"], "Alice");
    assert!(redis.cli(&["GET", &key]).contains("Alice"), "the profile was not cached");

    // A change drops the cached copy; the next read sees the new name.
    alice.put(&format!("{path}/displayname"), json!({"displayname": "Alice L."})).await.assert_ok();
    assert_eq!(redis.cli(&["EXISTS", &key]), "0", "stale copy left in the cache");
    assert_eq!(alice.get(&path).await.assert_ok()["displayname"], "Alice L.");

    // Without Redis the read goes to storage.
    redis.kill();
    assert_eq!(alice.get(&path).await.assert_ok()["displayname"], "Alice L.");
}
