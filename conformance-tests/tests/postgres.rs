//! The real binary on the PostgreSQL backend (`storage.backend = "postgres"`): two users chat
//! in a room, and what was acknowledged is still there after kill -9.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, binary::HearthProcess};
use hearth_storage::engine::postgres::test_cluster::TestCluster;
use serde_json::json;

const V3: &str = "/_matrix/client/v3";

fn bodies(messages: &serde_json::Value) -> Vec<String> {
    messages["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn the_binary_on_postgres_serves_a_room_and_keeps_what_it_acknowledged_through_kill_9() {
    let cluster = TestCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let env = [
        ("HEARTH_STORAGE__BACKEND", "postgres"),
        ("HEARTH_STORAGE__POSTGRES_URL", cluster.url.as_str()),
        ("HEARTH_STORAGE__PATH", path.to_str().unwrap()),
    ];
    let process = HearthProcess::spawn(&[], &env);
    let alice = Client::register(&process.base_url, "alice", "pw").await;
    let bob = Client::register(&process.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let since = bob.get(&format!("{V3}/sync?timeout=0")).await.assert_ok()["next_batch"].clone();
    alice.send_text(&room, "t1", "over postgres").await;
    let next = bob.get(&format!("{V3}/sync?timeout=5000&since={}", since.as_str().unwrap())).await;
    let timeline = &next.assert_ok()["rooms"]["join"][&room]["timeline"]["events"];
    assert_eq!(timeline[0]["content"]["body"], "over postgres", "{timeline}");
    bob.send_text(&room, "t2", "and back").await;
    process.kill9();

    // A new process on the same database: sessions, the room and its history are all there.
    let process = HearthProcess::spawn(&[], &env);
    let alice = Client { base_url: process.base_url.clone(), ..alice };
    alice.get(&format!("{V3}/account/whoami")).await.assert_ok();
    let messages = alice.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=10")).await;
    assert_eq!(bodies(messages.assert_ok())[..2], ["and back", "over postgres"]);
    Client::login(&process.base_url, "bob", "pw").await;

    // PostgreSQL cannot index a key over about 2.7 KB: such identifiers are refused, not a 500.
    hearth_conformance_tests::checks::identifiers_over_the_key_limit_are_too_large(&process.base_url).await;
}
