//! Malformed requests: every endpoint that takes a JSON body answers a bad one with a 4xx Matrix
//! error (never a 5xx or a panic), and the specific answers clients and Synapse agree on.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, TestServer};
use reqwest::Method;
use serde_json::json;

const V3: &str = "/_matrix/client/v3";

#[tokio::test]
async fn login_without_a_type_is_bad_json() {
    let server = TestServer::start().await;
    Client::register(&server.base_url, "alice", "pw").await;
    let anon = server.client();
    anon.post(&format!("{V3}/login"), json!({})).await.assert_error(400, "M_BAD_JSON");
    let typeless = json!({"identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw"});
    anon.post(&format!("{V3}/login"), typeless).await.assert_error(400, "M_BAD_JSON");
    anon.post(&format!("{V3}/login"), json!({"type": 7})).await.assert_error(400, "M_BAD_JSON");
    // The server is still fine afterwards.
    Client::login(&server.base_url, "alice", "pw").await;
}

#[tokio::test]
async fn invalid_utf8_is_not_json() {
    let server = TestServer::start().await;
    let body = b"{ \"test\":\"a\x81\" }".to_vec();
    let reply = server.client().request_raw(Method::POST, &format!("{V3}/register"), body).await;
    reply.assert_error(400, "M_NOT_JSON");
}

#[tokio::test]
async fn a_profile_field_needs_a_body() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let path = format!("{V3}/profile/@alice:localhost/displayname");
    alice.put(&path, json!({"displayname": "Alice"})).await.assert_ok();
    alice.request_raw(Method::PUT, &path, Vec::new()).await.assert_error(400, "M_NOT_JSON");
    let avatar = format!("{V3}/profile/@alice:localhost/avatar_url");
    alice.request_raw(Method::PUT, &avatar, Vec::new()).await.assert_error(400, "M_NOT_JSON");
    // Nothing was cleared by the refused requests.
    assert_eq!(alice.get(&path).await.assert_ok()["displayname"], "Alice");
    // Joining still takes no body, as matrix-nio sends it.
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    bob.request_raw(Method::POST, &format!("{V3}/rooms/{room}/join"), Vec::new()).await.assert_ok();
}

/// Every body-taking endpoint, fed bodies of every wrong shape: each answer is a 4xx with an
/// errcode (a 2xx is fine where the shape happens to be acceptable), never a 5xx.
#[tokio::test]
async fn malformed_bodies_never_reach_a_5xx() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({})).await;
    let event = alice.send_text(&room, "t0", "hello").await;
    let me = "@alice:localhost";
    let device = alice.device_id.clone().unwrap();
    let endpoints: Vec<(Method, String)> = vec![
        (Method::POST, format!("{V3}/register")),
        (Method::POST, format!("{V3}/login")),
        (Method::POST, format!("{V3}/refresh")),
        (Method::POST, format!("{V3}/account/password")),
        (Method::POST, format!("{V3}/account/deactivate")),
        (Method::POST, "/_matrix/client/v1/register/m.login.registration_token/validity".to_owned()),
        (Method::PUT, format!("{V3}/devices/{device}")),
        (Method::POST, format!("{V3}/delete_devices")),
        (Method::PUT, format!("{V3}/profile/{me}/displayname")),
        (Method::PUT, format!("{V3}/profile/{me}/avatar_url")),
        (Method::PUT, format!("{V3}/user/{me}/account_data/m.direct")),
        (Method::PUT, format!("{V3}/user/{me}/rooms/{room}/account_data/m.tag")),
        (Method::POST, format!("{V3}/user/{me}/filter")),
        (Method::POST, format!("{V3}/createRoom")),
        (Method::PUT, format!("{V3}/directory/room/%23x:localhost")),
        (Method::POST, format!("{V3}/join/{room}")),
        (Method::POST, format!("{V3}/rooms/{room}/join")),
        (Method::POST, format!("{V3}/rooms/{room}/invite")),
        (Method::POST, format!("{V3}/rooms/{room}/kick")),
        (Method::POST, format!("{V3}/rooms/{room}/ban")),
        (Method::POST, format!("{V3}/rooms/{room}/unban")),
        (Method::POST, format!("{V3}/knock/{room}")),
        (Method::PUT, format!("{V3}/rooms/{room}/send/m.room.message/malformed")),
        (Method::PUT, format!("{V3}/rooms/{room}/state/m.room.name")),
        (Method::PUT, format!("{V3}/rooms/{room}/state/m.room.power_levels/")),
        (Method::PUT, format!("{V3}/rooms/{room}/redact/{event}/malformed")),
        (Method::POST, format!("{V3}/rooms/{room}/upgrade")),
        (Method::POST, format!("{V3}/rooms/{room}/report/{event}")),
        (Method::PUT, format!("{V3}/rooms/{room}/typing/{me}")),
        (Method::POST, format!("{V3}/rooms/{room}/receipt/m.read/{event}")),
        (Method::POST, format!("{V3}/rooms/{room}/read_markers")),
        (Method::PUT, format!("{V3}/presence/{me}/status")),
        (Method::POST, format!("{V3}/keys/upload")),
        (Method::POST, format!("{V3}/keys/query")),
        (Method::POST, format!("{V3}/keys/claim")),
        (Method::POST, format!("{V3}/keys/device_signing/upload")),
        (Method::POST, format!("{V3}/keys/signatures/upload")),
        (Method::PUT, format!("{V3}/sendToDevice/m.test/malformed")),
        (Method::POST, format!("{V3}/room_keys/version")),
        (Method::PUT, format!("{V3}/room_keys/version/1")),
        (Method::PUT, format!("{V3}/room_keys/keys?version=1")),
        (Method::PUT, format!("{V3}/room_keys/keys/{room}?version=1")),
        (Method::PUT, format!("{V3}/room_keys/keys/{room}/s?version=1")),
        (Method::PUT, format!("{V3}/pushrules/global/room/{room}")),
        (Method::PUT, format!("{V3}/pushrules/global/override/.m.rule.master/enabled")),
        (Method::PUT, format!("{V3}/pushrules/global/override/.m.rule.master/actions")),
        (Method::POST, format!("{V3}/user_directory/search")),
        (Method::POST, format!("{V3}/publicRooms")),
        (Method::PUT, format!("{V3}/directory/list/room/{room}")),
        (Method::POST, "/_synapse/admin/v1/register".to_owned()),
    ];
    let bodies: [&[u8]; 8] = [
        b"{}",
        b"[]",
        b"null",
        b"\"text\"",
        b"{\"type\": {}, \"user_id\": [], \"room_id\": 5, \"content\": null}",
        b"not json at all",
        b"{\"a\": \"\xff\xfe\"}",
        b"{\"unterminated\": ",
    ];
    for (method, path) in &endpoints {
        for body in bodies {
            let reply = alice.request_raw(method.clone(), path, body.to_vec()).await;
            let status = reply.status.as_u16();
            let shown = String::from_utf8_lossy(body);
            assert!(status < 500, "{method} {path} with {shown}: {status} {}", reply.body);
            // A user-interactive auth challenge (401 with `flows`) is the one 4xx without one.
            if status >= 400 && reply.body.get("flows").is_none() {
                assert!(
                    reply.errcode().starts_with("M_"),
                    "{method} {path} with {shown}: {status} without an errcode: {}",
                    reply.body
                );
            }
        }
    }
    // The server still works, and the room is intact.
    alice.send_text(&room, "t1", "still here").await;
}
