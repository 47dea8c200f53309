//! Checks of behaviour that must hold on every storage engine, called by the tests of each.

use serde_json::json;

use crate::Client;

const V3: &str = "/_matrix/client/v3";

/// Identifiers far longer than any Matrix defines, in the places a client names a stored key
/// (an account data type, a transaction ID, a state key), are refused with 413 `M_TOO_LARGE`,
/// and nothing of them is stored; the server goes on serving the room and the account.
pub async fn identifiers_over_the_key_limit_are_too_large(base_url: &str) {
    let alice = Client::register(base_url, "longkeys", "pw").await;
    let room = alice.create_room(json!({})).await;
    let long = "x".repeat(3_000);
    let user = alice.user_id().to_owned();

    let reply = alice.put(&format!("{V3}/user/{user}/account_data/{long}"), json!({"a": 1})).await;
    reply.assert_error(413, "M_TOO_LARGE");
    let reply =
        alice.put(&format!("{V3}/user/{user}/rooms/{room}/account_data/{long}"), json!({"a": 1})).await;
    reply.assert_error(413, "M_TOO_LARGE");
    let reply =
        alice.put(&format!("{V3}/rooms/{room}/send/m.room.message/{long}"), json!({"body": "hi"})).await;
    reply.assert_error(413, "M_TOO_LARGE");
    let reply = alice.put(&format!("{V3}/rooms/{room}/state/org.example.k/{long}"), json!({"a": 1})).await;
    reply.assert_error(413, "M_TOO_LARGE");
    alice.get(&format!("{V3}/user/{user}/account_data/{long}")).await.assert_error(404, "M_NOT_FOUND");

    // Ordinary ones around them still work, and the room was not touched.
    alice.put(&format!("{V3}/user/{user}/account_data/org.example.short"), json!({"a": 1})).await.assert_ok();
    alice.send_text(&room, "short", "still here").await;
    let state = alice.get(&format!("{V3}/rooms/{room}/state")).await;
    let state = state.assert_ok().as_array().expect("the state is a list").clone();
    assert!(state.iter().all(|e| e["state_key"].as_str().is_none_or(|k| k.len() < 3_000)));
    alice.get(&format!("{V3}/sync?timeout=0")).await.assert_ok();
}
