//! Profiles: display names, avatars and extended fields.

use hearth_conformance_tests::{Client, TestServer};
use serde_json::json;

#[tokio::test]
async fn display_name_and_avatar() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "prof", "pw").await;
    let bob = Client::register(&server.base_url, "other", "pw").await;
    let anon = server.client();
    let base = "/_matrix/client/v3/profile/@prof:localhost";

    // New accounts start with their localpart as display name.
    assert_eq!(anon.get(&format!("{base}/displayname")).await.assert_ok()["displayname"], json!("prof"));
    alice.put(&format!("{base}/displayname"), json!({"displayname": "Prof. Alice"})).await.assert_ok();
    alice.put(&format!("{base}/avatar_url"), json!({"avatar_url": "mxc://localhost/abc"})).await.assert_ok();
    assert_eq!(
        anon.get(&format!("{base}/displayname")).await.assert_ok()["displayname"],
        json!("Prof. Alice")
    );
    assert_eq!(
        anon.get(&format!("{base}/avatar_url")).await.assert_ok()["avatar_url"],
        json!("mxc://localhost/abc")
    );
    let whole = anon.get(base).await;
    assert_eq!(whole.assert_ok()["displayname"], json!("Prof. Alice"));
    assert_eq!(whole.body["avatar_url"], json!("mxc://localhost/abc"));

    bob.put(&format!("{base}/displayname"), json!({"displayname": "hijack"}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    anon.put(&format!("{base}/displayname"), json!({"displayname": "x"}))
        .await
        .assert_error(401, "M_MISSING_TOKEN");
    alice
        .put(&format!("{base}/displayname"), json!({"displayname": "x".repeat(300)}))
        .await
        .assert_error(400, "M_INVALID_PARAM");

    anon.get("/_matrix/client/v3/profile/@nobody:localhost").await.assert_error(404, "M_NOT_FOUND");
    anon.get("/_matrix/client/v3/profile/@nobody:localhost/displayname")
        .await
        .assert_error(404, "M_NOT_FOUND");
    anon.get("/_matrix/client/v3/profile/@someone:elsewhere.example/displayname")
        .await
        .assert_error(404, "M_NOT_FOUND");
}

/// Extended profile fields (spec v1.16): `m.tz` and custom fields set, read, listed in the whole
/// profile and removed by their owner; the displayname through the same path reaches rooms.
#[tokio::test]
async fn extended_profile_fields_are_set_read_and_removed() {
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let caps = alice.get("/_matrix/client/v3/capabilities").await;
    assert_eq!(caps.assert_ok()["capabilities"]["m.profile_fields"]["enabled"], json!(true));
    let me = "/_matrix/client/v3/profile/@alice:localhost";
    alice.put(&format!("{me}/m.tz"), json!({"m.tz": "Europe/London"})).await.assert_ok();
    alice
        .put(&format!("{me}/org.example.role"), json!({"org.example.role": {"team": "ops"}}))
        .await
        .assert_ok();
    assert_eq!(bob.get(&format!("{me}/m.tz")).await.assert_ok()["m.tz"], json!("Europe/London"));
    let whole = bob.get(me).await;
    assert_eq!(whole.assert_ok()["org.example.role"], json!({"team": "ops"}));
    assert_eq!(whole.body["m.tz"], json!("Europe/London"));

    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    alice.put(&format!("{me}/displayname"), json!({"displayname": "Alice L."})).await.assert_ok();
    let member =
        alice.get(&format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@alice:localhost")).await;
    assert_eq!(member.assert_ok()["displayname"], json!("Alice L."));

    alice.request(reqwest::Method::DELETE, &format!("{me}/m.tz"), None).await.assert_ok();
    bob.get(&format!("{me}/m.tz")).await.assert_error(404, "M_NOT_FOUND");
    bob.put(&format!("{me}/m.tz"), json!({"m.tz": "UTC"})).await.assert_error(403, "M_FORBIDDEN");
    let long = "k".repeat(256);
    alice.put(&format!("{me}/{long}"), json!({ long.clone(): 1 })).await.assert_error(400, "M_INVALID_PARAM");
}
