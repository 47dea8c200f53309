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
