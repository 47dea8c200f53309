//! Two Hearth servers federating over loopback (127.0.0.1 and 127.0.0.2), each with its own
//! HTTPS federation listener and database: keys, joins across servers, messages both ways, a
//! forged request refused, and nothing lost while a peer is down or the sender restarts.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";
const A: &str = "hs-a.test";
const B: &str = "hs-b.test";

#[tokio::test]
async fn a_user_joins_a_room_on_another_server_and_both_talk() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;

    // The key endpoint answers over HTTPS with a self-signed key response.
    let keys = a.server_keys().await;
    assert_eq!(keys["server_name"], A);
    assert!(keys["signatures"][A].as_object().is_some_and(|s| !s.is_empty()), "{keys}");

    let room = alice.create_room(json!({"preset": "public_chat", "name": "across"})).await;
    let joined = bob.post(&format!("{V3}/join/{room}?via={A}"), json!({})).await;
    assert_eq!(joined.assert_ok()["room_id"], json!(room), "{:?}", joined.body);

    // Bob's server now has the room's state.
    let name = bob.get(&format!("{V3}/rooms/{room}/state/m.room.name")).await;
    assert_eq!(name.assert_ok()["name"], "across");
    // Alice's server saw bob join.
    let members = alice.get(&format!("{V3}/rooms/{room}/joined_members")).await;
    let bob_id = bob.user_id.clone().unwrap();
    let mut joined_on_a = false;
    for _ in 0..50 {
        let members = alice.get(&format!("{V3}/rooms/{room}/joined_members")).await;
        if members.body["joined"].get(&bob_id).is_some() {
            joined_on_a = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(joined_on_a, "{:?}", members.body);

    alice.send_text(&room, "a1", "hello from A").await;
    bob.wait_for_bodies(&room, &["hello from A"]).await;
    bob.send_text(&room, "b1", "hello from B").await;
    alice.wait_for_bodies(&room, &["hello from B"]).await;
}

#[tokio::test]
async fn unsigned_and_forged_requests_are_refused() {
    let (a, _b) = TestServer::federating_pair().await;
    let fed = a.config.listen.federation.unwrap();
    let url = format!("https://{fed}/_matrix/federation/v1/send/t1");
    let body = json!({"origin": B, "origin_server_ts": 1, "pdus": [], "edus": []});
    let unsigned = hearth_conformance_tests::insecure_https().put(&url).json(&body).send().await.unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);
    let err: Value = unsigned.json().await.unwrap();
    assert_eq!(err["errcode"], "M_UNAUTHORIZED");

    // A well-formed header with a signature B never made.
    let forged = format!(
        "X-Matrix origin=\"{B}\",destination=\"{A}\",key=\"ed25519:a_abcdef\",sig=\"{}\"",
        "A".repeat(86)
    );
    let reply = hearth_conformance_tests::insecure_https()
        .put(&url)
        .header("Authorization", forged)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 401);
    let err: Value = reply.json().await.unwrap();
    assert_eq!(err["errcode"], "M_UNAUTHORIZED");
}

#[tokio::test]
async fn a_peer_that_was_down_and_a_restarted_sender_lose_nothing() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{room}?via={A}"), json!({})).await.assert_ok();
    bob.wait_for_bodies(&room, &[]).await;

    // B goes away; A keeps accepting messages for it.
    let (b_config, b_dir) = b.stop().await;
    alice.send_text(&room, "d1", "while B was down 1").await;
    alice.send_text(&room, "d2", "while B was down 2").await;
    // A restarts too, with the messages still queued.
    let a = a.restart().await;
    let alice = Client::new(&a.base_url).with_token(alice.access_token.as_ref().unwrap());
    alice.send_text(&room, "d3", "after A restarted").await;

    // B returns; its first request to A tells A it is back.
    let b = TestServer::start_in(b_config, b_dir).await;
    let bob = Client::new(&b.base_url).with_token(bob.access_token.as_ref().unwrap());
    bob.send_text(&room, "b2", "B is back").await;
    bob.wait_for_bodies(&room, &["while B was down 1", "while B was down 2", "after A restarted"]).await;
    alice.wait_for_bodies(&room, &["B is back"]).await;
}

#[tokio::test]
async fn bad_federation_requests_get_matrix_errors() {
    let (a, _b) = TestServer::federating_pair().await;
    let fed = a.config.listen.federation.unwrap();
    let https = hearth_conformance_tests::insecure_https();
    let check = |reply: reqwest::Response, status: u16, errcode: &'static str| async move {
        assert_eq!(reply.status().as_u16(), status);
        let body: Value = reply.json().await.unwrap();
        assert_eq!(body["errcode"], errcode, "{body}");
    };
    check(
        https.get(format!("https://{fed}/_matrix/federation/v1/nope")).send().await.unwrap(),
        404,
        "M_UNRECOGNIZED",
    )
    .await;
    check(
        https.post(format!("https://{fed}/_matrix/federation/v1/version")).send().await.unwrap(),
        405,
        "M_UNRECOGNIZED",
    )
    .await;
    for (method, path) in [("PUT", "/_matrix/federation/v1/version"), ("PUT", "/_matrix/key/v2/query")] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        check(
            https.request(method, format!("https://{fed}{path}")).send().await.unwrap(),
            405,
            "M_UNRECOGNIZED",
        )
        .await;
    }
    let bad = https.post(format!("https://{fed}/_matrix/key/v2/query")).body("{bad").send().await.unwrap();
    check(bad, 400, "M_BAD_JSON").await;

    // The client listener serves the federation and key APIs too (for one proxy in front of
    // both), with the same answers.
    let http = reqwest::Client::new();
    let client_port = &a.base_url;
    let version: Value = http
        .get(format!("{client_port}/_matrix/federation/v1/version"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["server"]["name"], "Hearth");
    let keys: Value =
        http.get(format!("{client_port}/_matrix/key/v2/server")).send().await.unwrap().json().await.unwrap();
    assert_eq!(keys["server_name"], "hs-a.test");
    for (method, path) in [("PUT", "/_matrix/federation/v1/version"), ("PUT", "/_matrix/key/v2/query")] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        check(
            http.request(method, format!("{client_port}{path}")).send().await.unwrap(),
            405,
            "M_UNRECOGNIZED",
        )
        .await;
    }
    // Requests that need a server's signature still need it here.
    let path = "/_matrix/federation/v1/query/profile?user_id=@a:hs-a.test";
    let unsigned = http.get(format!("{client_port}{path}")).send().await.unwrap();
    assert!(unsigned.status().is_client_error(), "{}", unsigned.status());
    let body: Value = unsigned.json().await.unwrap();
    assert!(body["errcode"].as_str().is_some_and(|e| e.starts_with("M_")), "{body}");
}

#[tokio::test]
async fn without_federation_the_client_listener_does_not_answer_for_it() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let reply = http.get(format!("{}/_matrix/federation/v1/version", server.base_url)).send().await.unwrap();
    assert_eq!(reply.status().as_u16(), 404);
    let body: Value = reply.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNRECOGNIZED");
}

/// OpenID tokens for widgets and Element Call's media service: issued to the user through the
/// client API, looked up by a third party through the federation API without a signature.
#[tokio::test]
async fn an_openid_token_tells_a_third_party_who_the_user_is() {
    let (a, _b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&a.base_url, "bob", "pw").await;
    let path = format!("{V3}/user/{}/openid/request_token", alice.user_id());
    let issued = alice.post(&path, json!({})).await;
    let issued = issued.assert_ok().clone();
    assert_eq!(issued["token_type"], "Bearer");
    assert_eq!(issued["matrix_server_name"], A);
    assert_eq!(issued["expires_in"], 3600);
    bob.post(&path, json!({})).await.assert_error(403, "M_FORBIDDEN");

    let fed = a.config.listen.federation.unwrap();
    let https = hearth_conformance_tests::insecure_https();
    let token = issued["access_token"].as_str().unwrap();
    let url = format!("https://{fed}/_matrix/federation/v1/openid/userinfo?access_token={token}");
    let info: Value = https.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(info, json!({"sub": alice.user_id()}));
    let url = format!("https://{fed}/_matrix/federation/v1/openid/userinfo?access_token=hto_forged");
    let refused = https.get(&url).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN");
}
