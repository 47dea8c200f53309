//! Account data (global and per room), room tags and filters.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, TestServer};
use serde_json::json;

#[tokio::test]
async fn global_and_room_account_data() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "ad", "pw").await;
    let bob = Client::register(&server.base_url, "bo", "pw").await;
    let global = "/_matrix/client/v3/user/@ad:localhost/account_data/m.direct";
    alice.get(global).await.assert_error(404, "M_NOT_FOUND");
    alice.put(global, json!({"@bo:localhost": ["!room:localhost"]})).await.assert_ok();
    assert_eq!(alice.get(global).await.assert_ok(), &json!({"@bo:localhost": ["!room:localhost"]}));
    bob.get(global).await.assert_error(403, "M_FORBIDDEN");
    bob.put(global, json!({})).await.assert_error(403, "M_FORBIDDEN");

    let room = "/_matrix/client/v3/user/@ad:localhost/rooms/!room:localhost/account_data/m.tag";
    alice.get(room).await.assert_error(404, "M_NOT_FOUND");
    alice.put(room, json!({"tags": {"u.work": {"order": 0.5}}})).await.assert_ok();
    assert_eq!(alice.get(room).await.assert_ok()["tags"]["u.work"]["order"], json!(0.5));
    alice
        .put("/_matrix/client/v3/user/@ad:localhost/rooms/not-a-room/account_data/m.tag", json!({}))
        .await
        .assert_error(400, "M_INVALID_PARAM");

    // Types the server manages are refused.
    alice
        .put("/_matrix/client/v3/user/@ad:localhost/account_data/m.fully_read", json!({"event_id": "$x"}))
        .await
        .assert_error(405, "M_BAD_JSON");
    alice.put(global, json!(["not", "an", "object"])).await.assert_error(400, "M_BAD_JSON");
}

#[tokio::test]
async fn filters() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "fil", "pw").await;
    let bob = Client::register(&server.base_url, "fil2", "pw").await;
    let filter = json!({"room": {"timeline": {"limit": 10}, "state": {"lazy_load_members": true}}, "presence": {"not_types": ["*"]}});
    let created = alice.post("/_matrix/client/v3/user/@fil:localhost/filter", filter.clone()).await;
    let id = created.assert_ok()["filter_id"].as_str().unwrap().to_owned();
    assert!(!id.starts_with('{'));
    let got = alice.get(&format!("/_matrix/client/v3/user/@fil:localhost/filter/{id}")).await;
    assert_eq!(got.assert_ok()["room"]["timeline"]["limit"], json!(10));
    assert_eq!(got.body["room"]["state"]["lazy_load_members"], json!(true));

    alice.get("/_matrix/client/v3/user/@fil:localhost/filter/99999").await.assert_error(404, "M_NOT_FOUND");
    bob.get(&format!("/_matrix/client/v3/user/@fil:localhost/filter/{id}"))
        .await
        .assert_error(403, "M_FORBIDDEN");
    bob.post("/_matrix/client/v3/user/@fil:localhost/filter", filter).await.assert_error(403, "M_FORBIDDEN");
    alice
        .post(
            "/_matrix/client/v3/user/@fil:localhost/filter",
            json!({"room": {"timeline": {"limit": "ten"}}}),
        )
        .await
        .assert_error(400, "M_BAD_JSON");
}

#[tokio::test]
async fn room_tags_are_set_listed_synced_and_removed() {
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "private_chat"})).await;
    let tags = format!("/_matrix/client/v3/user/@alice:localhost/rooms/{room}/tags");
    let since = alice.since_now().await;
    alice.put(&format!("{tags}/m.favourite"), json!({"order": 0.25})).await.assert_ok();
    alice.put(&format!("{tags}/u.work"), json!({})).await.assert_ok();
    let listed = alice.get(&tags).await;
    assert_eq!(listed.assert_ok()["tags"], json!({"m.favourite": {"order": 0.25}, "u.work": {}}));

    // Delivered as m.tag room account data.
    let synced = alice
        .sync_until(Some(&since), "m.tag", |s| {
            s["rooms"]["join"][&room]["account_data"]["events"].as_array().is_some_and(|events| {
                events.iter().any(|e| e["type"] == "m.tag" && e["content"]["tags"]["u.work"].is_object())
            })
        })
        .await;
    let events = synced["rooms"]["join"][&room]["account_data"]["events"].as_array().unwrap().clone();
    let tag_event = events.iter().find(|e| e["type"] == "m.tag").unwrap();
    assert_eq!(tag_event["content"]["tags"]["m.favourite"], json!({"order": 0.25}));

    alice.request(reqwest::Method::DELETE, &format!("{tags}/u.work"), None).await.assert_ok();
    alice.request(reqwest::Method::DELETE, &format!("{tags}/never.set"), None).await.assert_ok();
    assert_eq!(alice.get(&tags).await.assert_ok()["tags"], json!({"m.favourite": {"order": 0.25}}));

    // Only one's own tags; names have a length.
    bob.get(&tags).await.assert_error(403, "M_FORBIDDEN");
    bob.put(&format!("{tags}/x"), json!({})).await.assert_error(403, "M_FORBIDDEN");
    alice.put(&format!("{tags}/{}", "t".repeat(256)), json!({})).await.assert_error(400, "M_INVALID_PARAM");
}
