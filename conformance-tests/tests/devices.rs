//! Device listing, renaming and deletion.

use hearth_conformance_tests::{Client, TestServer};
use serde_json::json;

#[tokio::test]
async fn list_get_update_delete() {
    let server = TestServer::start().await;
    let first = Client::register(&server.base_url, "dev", "pw").await;
    let second = Client::login(&server.base_url, "dev", "pw").await;
    let first_id = first.device_id.clone().unwrap();
    let second_id = second.device_id.clone().unwrap();

    let list = first.get("/_matrix/client/v3/devices").await;
    let devices = list.assert_ok()["devices"].as_array().unwrap().clone();
    assert_eq!(devices.len(), 2);
    for d in &devices {
        // Present even when unknown: some clients (matrix-nio) require the keys.
        assert!(d.get("display_name").is_some() && d.get("last_seen_ip").is_some(), "{d}");
        assert!(d["last_seen_ts"].is_u64(), "{d}");
    }

    let path = format!("/_matrix/client/v3/devices/{second_id}");
    first.put(&path, json!({"display_name": "Laptop"})).await.assert_ok();
    assert_eq!(first.get(&path).await.assert_ok()["display_name"], json!("Laptop"));
    first.get("/_matrix/client/v3/devices/NOSUCHDEV").await.assert_error(404, "M_NOT_FOUND");
    first
        .put("/_matrix/client/v3/devices/NOSUCHDEV", json!({"display_name": "x"}))
        .await
        .assert_error(404, "M_NOT_FOUND");

    // DELETE needs UIA.
    let challenge = first.request(reqwest::Method::DELETE, &path, Some(json!({}))).await;
    assert_eq!(challenge.status.as_u16(), 401);
    let session = challenge.body["session"].as_str().unwrap().to_owned();
    first
        .request(reqwest::Method::DELETE, &path, Some(json!({"auth": first.password_auth("pw", &session)})))
        .await
        .assert_ok();
    second.get("/_matrix/client/v3/account/whoami").await.assert_error(401, "M_UNKNOWN_TOKEN");
    first.get(&path).await.assert_error(404, "M_NOT_FOUND");

    // POST /delete_devices, also behind UIA; a device of another user is never touched.
    let third = Client::login(&server.base_url, "dev", "pw").await;
    let stranger = Client::register(&server.base_url, "stranger", "pw").await;
    let body = json!({"devices": [third.device_id, stranger.device_id]});
    let challenge = first.post("/_matrix/client/v3/delete_devices", body.clone()).await;
    let session = challenge.body["session"].as_str().unwrap().to_owned();
    let mut body = body;
    body["auth"] = first.password_auth("pw", &session);
    first.post("/_matrix/client/v3/delete_devices", body).await.assert_ok();
    third.get("/_matrix/client/v3/account/whoami").await.assert_error(401, "M_UNKNOWN_TOKEN");
    stranger.get("/_matrix/client/v3/account/whoami").await.assert_ok();

    let list = first.get("/_matrix/client/v3/devices").await;
    let ids: Vec<_> =
        list.assert_ok()["devices"].as_array().unwrap().iter().map(|d| d["device_id"].clone()).collect();
    assert_eq!(ids, vec![json!(first_id)]);
}
