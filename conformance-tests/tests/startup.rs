//! What Element calls at start-up besides /sync: push rules, pushers, third-party protocols,
//! TURN, the user directory, and the legacy peeking calls.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, TestServer};
use reqwest::Method;
use serde_json::json;

const V3: &str = "/_matrix/client/v3";

#[tokio::test]
async fn push_rules_start_from_the_defaults_and_persist_changes() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let all = alice.get(&format!("{V3}/pushrules/")).await;
    let global = &all.assert_ok()["global"];
    let overrides: Vec<&str> =
        global["override"].as_array().unwrap().iter().map(|r| r["rule_id"].as_str().unwrap()).collect();
    assert!(overrides.contains(&".m.rule.master"), "{overrides:?}");
    assert!(global["underride"].as_array().unwrap().iter().any(|r| r["rule_id"] == ".m.rule.message"));

    let rule = format!("{V3}/pushrules/global/room/!somewhere:localhost");
    alice.put(&rule, json!({"actions": ["notify"]})).await.assert_ok();
    let got = alice.get(&rule).await;
    assert_eq!(got.assert_ok()["actions"], json!(["notify"]));
    alice.put(&format!("{rule}/enabled"), json!({"enabled": false})).await.assert_ok();
    assert_eq!(alice.get(&format!("{rule}/enabled")).await.assert_ok()["enabled"], false);
    alice.put(&format!("{rule}/actions"), json!({"actions": []})).await.assert_ok();
    assert_eq!(alice.get(&format!("{rule}/actions")).await.assert_ok()["actions"], json!([]));
    let master = format!("{V3}/pushrules/global/override/.m.rule.master/enabled");
    alice.put(&master, json!({"enabled": true})).await.assert_ok();
    assert_eq!(alice.get(&master).await.assert_ok()["enabled"], true);
    // Default rules cannot be deleted; unknown ones are not found.
    alice
        .request(Method::DELETE, &format!("{V3}/pushrules/global/override/.m.rule.master"), None)
        .await
        .assert_error(400, "M_BAD_JSON");
    alice.request(Method::DELETE, &rule, None).await.assert_ok();
    alice.get(&rule).await.assert_error(404, "M_NOT_FOUND");
    alice
        .put(&format!("{V3}/pushrules/global/room/!x:localhost/enabled"), json!({"enabled": true}))
        .await
        .assert_error(404, "M_NOT_FOUND");
    // Another user still has the defaults.
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    assert_eq!(bob.get(&master).await.assert_ok()["enabled"], false);
    alice.get(&format!("{V3}/pushrules/")).await.assert_ok();

    assert_eq!(alice.get(&format!("{V3}/pushers")).await.assert_ok()["pushers"], json!([]));
    assert_eq!(alice.get(&format!("{V3}/thirdparty/protocols")).await.assert_ok(), &json!({}));
    server.client().get(&format!("{V3}/pushrules/")).await.assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn turn_servers_from_config() {
    let none = TestServer::start().await;
    let alice = Client::register(&none.base_url, "alice", "pw").await;
    let reply = alice.get(&format!("{V3}/voip/turnServer")).await;
    assert_eq!(reply.assert_ok()["uris"], json!([]));

    let with_turn = TestServer::start_with(|c| {
        c.voip.turn_uris = vec!["turn:turn.example.org:3478?transport=udp".into()];
        c.voip.turn_shared_secret = Some("coturn-secret".into());
    })
    .await;
    let bob = Client::register(&with_turn.base_url, "bob", "pw").await;
    let reply = bob.get(&format!("{V3}/voip/turnServer")).await;
    let body = reply.assert_ok();
    assert_eq!(body["uris"], json!(["turn:turn.example.org:3478?transport=udp"]));
    assert!(body["username"].as_str().unwrap().ends_with(":@bob:localhost"));
    assert_eq!(body["ttl"], 86400);
    assert!(!body["password"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn user_directory_finds_people_you_share_rooms_with() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let hidden = Client::register(&server.base_url, "hidden", "pw").await;
    bob.put(&format!("{V3}/profile/@bob:localhost/displayname"), json!({"displayname": "Bobby Tables"}))
        .await
        .assert_ok();
    let room = alice.post(&format!("{V3}/createRoom"), json!({"invite": ["@bob:localhost"]})).await;
    let room = room.assert_ok()["room_id"].as_str().unwrap().to_owned();
    bob.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
    hidden.post(&format!("{V3}/createRoom"), json!({})).await.assert_ok();

    let found = alice.post(&format!("{V3}/user_directory/search"), json!({"search_term": "tables"})).await;
    let results = found.assert_ok()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["user_id"], "@bob:localhost");
    assert_eq!(results[0]["display_name"], "Bobby Tables");
    let none = alice.post(&format!("{V3}/user_directory/search"), json!({"search_term": "hidden"})).await;
    assert!(
        none.assert_ok()["results"].as_array().unwrap().is_empty(),
        "a user in no shared or public room was found"
    );
}

#[tokio::test]
async fn legacy_room_initial_sync_and_events() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room =
        alice.post(&format!("{V3}/createRoom"), json!({"preset": "public_chat", "name": "Old API"})).await;
    let room = room.assert_ok()["room_id"].as_str().unwrap().to_owned();
    let initial = alice.get(&format!("{V3}/rooms/{room}/initialSync")).await;
    let body = initial.assert_ok().clone();
    assert_eq!(body["membership"], "join");
    assert!(body["state"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.name"));
    assert!(!body["messages"]["chunk"].as_array().unwrap().is_empty());
    let outsider = Client::register(&server.base_url, "out", "pw").await;
    outsider.get(&format!("{V3}/rooms/{room}/initialSync")).await.assert_error(403, "M_FORBIDDEN");

    let sync = alice.get(&format!("{V3}/sync?timeout=0")).await;
    let from = sync.assert_ok()["next_batch"].as_str().unwrap().to_owned();
    let waiter = {
        let alice = alice.clone();
        let path = format!("{V3}/events?room_id={room}&from={from}&timeout=30000");
        tokio::spawn(async move { alice.get(&path).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let sent = alice
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/e1"),
            json!({"msgtype": "m.text", "body": "new"}),
        )
        .await;
    let event_id = sent.assert_ok()["event_id"].clone();
    let events = waiter.await.unwrap();
    assert_eq!(events.assert_ok()["chunk"][0]["event_id"], event_id);
}
