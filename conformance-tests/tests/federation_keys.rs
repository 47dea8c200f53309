//! Keys through a trusted notary: a server that cannot reach another server itself gets that
//! server's keys from a notary it trusts (`federation.trusted_key_servers`), checking both the
//! notary's signature and the server's own.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, TestServer};
use serde_json::json;

const V3: &str = "/_matrix/client/v3";
const A: &str = "hs-a.test";
const B: &str = "hs-b.test";
const C: &str = "hs-c.test";

#[tokio::test]
async fn keys_of_an_unreachable_server_come_from_a_trusted_notary() {
    let mut servers = TestServer::start_federation(&[A, B, C], |_| {}).await;
    let c = servers.pop().unwrap();
    let b = servers.pop().unwrap();
    let a = servers.pop().unwrap();

    // A trusts B as a notary, with the key B publishes.
    let b_keys = b.server_keys().await;
    let (key_id, key) = b_keys["verify_keys"].as_object().unwrap().iter().next().unwrap();
    let (mut a_config, a_dir) = a.stop().await;
    a_config.federation.trusted_key_servers =
        serde_json::from_value(json!([{"server_name": B, "verify_keys": {key_id: key["key"]}}])).unwrap();
    let a = TestServer::start_in(a_config, a_dir).await;

    // Carol of C joins a room on B, so B has C's keys; then C goes away.
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let carol = Client::register(&c.base_url, "carol", "pw").await;
    let room = bob.create_room(json!({"preset": "public_chat"})).await;
    carol.post(&format!("{V3}/join/{room}?via={B}"), json!({})).await.assert_ok();
    let carol_id = carol.user_id.clone().unwrap();
    drop(c.stop().await);

    // Alice of A joins: the room's state holds carol's join, signed by C, which A cannot ask.
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let joined = alice.post(&format!("{V3}/join/{room}?via={B}"), json!({})).await;
    assert_eq!(joined.assert_ok()["room_id"], json!(room));
    let members = alice.get(&format!("{V3}/rooms/{room}/joined_members")).await;
    assert!(members.assert_ok()["joined"].get(&carol_id).is_some(), "{:?}", members.body);
}
