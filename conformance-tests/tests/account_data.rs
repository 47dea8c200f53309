//! Account data (global and per room) and filters.

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
