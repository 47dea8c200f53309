//! Profiles: display names and avatars.

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
