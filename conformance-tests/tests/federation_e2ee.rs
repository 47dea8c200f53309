//! EDUs and end-to-end encryption across two Hearth servers on loopback: typing, receipts and
//! presence both ways; keys queried and claimed from the other server; to-device messages;
//! device-list and cross-signing changes reaching the other server's users through /sync.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";
const A: &str = "hs-a.test";

/// Two servers, alice registered on A and bob on B, sharing no room yet.
async fn strangers() -> (TestServer, TestServer, Client, Client) {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    (a, b, alice, bob)
}

/// Whether a sync response has an ephemeral event of `kind` in `room` whose content passes `test`.
fn ephemeral(room: &str, kind: &'static str, test: impl Fn(&Value) -> bool) -> impl Fn(&Value) -> bool {
    let room = room.to_owned();
    move |body: &Value| {
        body["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["type"] == kind && test(&e["content"])))
    }
}

/// Alice on A with a room, bob on B joined to it, each having seen the other's first message.
struct Shared {
    a: TestServer,
    // Lives as long as the test.
    _b: TestServer,
    alice: Client,
    bob: Client,
    room: String,
    alice_id: String,
    bob_id: String,
}

async fn shared_room() -> Shared {
    let (a, b, alice, bob) = strangers().await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{room}?via={A}"), json!({})).await.assert_ok();
    // The room joined over federation comes with its state, as clients need it (whether it is
    // encrypted, who is in it).
    let first = bob.get(&format!("{V3}/sync?timeout=0")).await.assert_ok().clone();
    let state = first["rooms"]["join"][&room]["state"]["events"].as_array().cloned().unwrap_or_default();
    assert!(state.iter().any(|e| e["type"] == "m.room.create"), "{first}");
    assert!(state.iter().any(|e| e["state_key"] == alice.user_id()), "{first}");
    let bob_since = first["next_batch"].as_str().unwrap().to_owned();
    let alice_since = alice.since_now().await;
    alice.send_text(&room, "a1", "from A").await;
    bob.send_text(&room, "b1", "from B").await;
    let has_body = |room: String, text: &'static str| {
        move |body: &Value| {
            body["rooms"]["join"][&room]["timeline"]["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["content"]["body"] == text))
        }
    };
    bob.sync_until(Some(&bob_since), "alice's message", has_body(room.clone(), "from A")).await;
    alice.sync_until(Some(&alice_since), "bob's message", has_body(room.clone(), "from B")).await;
    let (alice_id, bob_id) = (alice.user_id().to_owned(), bob.user_id().to_owned());
    Shared { a, _b: b, alice, bob, room, alice_id, bob_id }
}

#[tokio::test]
async fn typing_and_receipts_cross_both_ways() {
    // Every field bound by name, so that the servers live to the end of the test.
    let Shared { a: _a, _b, alice, bob, room, alice_id, bob_id } = shared_room().await;
    let (bob_since, alice_since) = (bob.since_now().await, alice.since_now().await);
    alice
        .put(&format!("{V3}/rooms/{room}/typing/{alice_id}"), json!({"typing": true, "timeout": 30000}))
        .await
        .assert_ok();
    bob.put(&format!("{V3}/rooms/{room}/typing/{bob_id}"), json!({"typing": true, "timeout": 30000}))
        .await
        .assert_ok();
    let typing =
        |who: String| move |c: &Value| c["user_ids"].as_array().is_some_and(|u| u.contains(&json!(who)));
    bob.sync_until(Some(&bob_since), "alice typing", ephemeral(&room, "m.typing", typing(alice_id.clone())))
        .await;
    alice
        .sync_until(Some(&alice_since), "bob typing", ephemeral(&room, "m.typing", typing(bob_id.clone())))
        .await;

    // Each reads the other's message; the receipt reaches the other server.
    let last_event = |client: Client, room: String| async move {
        let messages = client.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=1")).await;
        messages.assert_ok()["chunk"][0]["event_id"].as_str().unwrap().to_owned()
    };
    let bobs = last_event(bob.clone(), room.clone()).await;
    let bob_since = bob.since_now().await;
    let alice_since = alice.since_now().await;
    alice.post(&format!("{V3}/rooms/{room}/receipt/m.read/{bobs}"), json!({})).await.assert_ok();
    bob.post(&format!("{V3}/rooms/{room}/receipt/m.read/{bobs}"), json!({})).await.assert_ok();
    let read = |who: String, event: String| move |c: &Value| c[&event]["m.read"].get(&who).is_some();
    let alices = ephemeral(&room, "m.receipt", read(alice_id.clone(), bobs.clone()));
    bob.sync_until(Some(&bob_since), "alice's receipt", alices).await;
    let bobs_receipt = ephemeral(&room, "m.receipt", read(bob_id.clone(), bobs.clone()));
    alice.sync_until(Some(&alice_since), "bob's receipt", bobs_receipt).await;

    // A private receipt stays on its server: alice stopping typing, queued after it, reaches
    // bob's server, and no receipt of hers for the newer message ever does.
    let newer = alice.send_text(&room, "a2", "newer").await;
    let mut since = bob.since_now().await;
    alice.post(&format!("{V3}/rooms/{room}/receipt/m.read.private/{newer}"), json!({})).await.assert_ok();
    alice.put(&format!("{V3}/rooms/{room}/typing/{alice_id}"), json!({"typing": false})).await.assert_ok();
    let stopped = ephemeral(&room, "m.typing", move |c: &Value| {
        c["user_ids"].as_array().is_some_and(|u| !u.contains(&json!(alice_id)))
    });
    let mut done = false;
    for _ in 0..60 {
        let body = bob.get(&format!("{V3}/sync?timeout=1000&since={since}")).await.assert_ok().clone();
        let events = &body["rooms"]["join"][&room]["ephemeral"]["events"];
        assert!(!events.to_string().contains(&newer), "a private receipt crossed: {events}");
        if stopped(&body) {
            done = true;
            break;
        }
        since = body["next_batch"].as_str().unwrap().to_owned();
    }
    assert!(done, "bob never saw alice stop typing");
}

#[tokio::test]
async fn presence_crosses_both_ways() {
    let Shared { a: _a, _b, alice, bob, room: _, alice_id, bob_id } = shared_room().await;
    let (bob_since, alice_since) = (bob.since_now().await, alice.since_now().await);
    alice
        .put(&format!("{V3}/presence/{alice_id}/status"), json!({"presence": "online", "status_msg": "at A"}))
        .await
        .assert_ok();
    bob.put(&format!("{V3}/presence/{bob_id}/status"), json!({"presence": "online", "status_msg": "at B"}))
        .await
        .assert_ok();
    // Online both ways: each /sync of the waiting user sets them online again.
    let presence_of = |who: String, state: &'static str, msg: &'static str| {
        move |body: &Value| {
            body["presence"]["events"].as_array().is_some_and(|events| {
                events.iter().any(|e| {
                    e["sender"] == who
                        && e["content"]["presence"] == state
                        && e["content"]["status_msg"] == msg
                })
            })
        }
    };
    bob.sync_until(Some(&bob_since), "alice online at A", presence_of(alice_id.clone(), "online", "at A"))
        .await;
    alice
        .sync_until(Some(&alice_since), "bob online at B", presence_of(bob_id.clone(), "online", "at B"))
        .await;
    // The status endpoint answers for the remote user from what their server sent.
    let status = bob.get(&format!("{V3}/presence/{alice_id}/status")).await;
    assert_eq!(status.assert_ok()["status_msg"], "at A", "{:?}", status.body);
}

#[tokio::test]
async fn keys_of_a_remote_user_are_queried_and_claimed_through_their_server() {
    let (_a, _b, alice, bob) = strangers().await;
    let (alice_id, device) = (alice.user_id().to_owned(), alice.device_id.clone().unwrap());
    let otks = json!({
        "signed_curve25519:k1": {"key": "one", "signatures": {}},
        "signed_curve25519:k2": {"key": "two", "signatures": {}},
    });
    alice
        .post(
            &format!("{V3}/keys/upload"),
            json!({"device_keys": alice.device_keys(), "one_time_keys": otks}),
        )
        .await
        .assert_ok();
    let key = |usage: &str, id: &str| json!({"user_id": alice_id, "usage": [usage], "keys": {format!("ed25519:{id}"): id}});
    let upload = json!({"master_key": key("master", "M1"), "self_signing_key": key("self_signing", "S1"), "user_signing_key": key("user_signing", "U1")});
    alice.post(&format!("{V3}/keys/device_signing/upload"), upload).await.assert_ok();

    // A server nobody answers at (a closed loopback port) is a failure, not an error.
    let nowhere = "@ghost:127.0.0.3:1";
    let query = bob
        .post(
            &format!("{V3}/keys/query"),
            json!({"device_keys": {&alice_id: [], nowhere: []}, "timeout": 5000}),
        )
        .await;
    let body = query.assert_ok();
    let keys = &body["device_keys"][&alice_id][&device];
    assert_eq!(keys["keys"][format!("ed25519:{device}")], "edkey", "{body}");
    assert_eq!(body["master_keys"][&alice_id]["keys"]["ed25519:M1"], "M1", "{body}");
    assert!(body["self_signing_keys"][&alice_id].is_object(), "{body}");
    assert!(body["user_signing_keys"].get(&alice_id).is_none(), "user-signing keys stay private: {body}");
    assert!(body["failures"].get("127.0.0.3:1").is_some(), "{body}");

    // Each claim hands out a different one-time key; the third finds none.
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let claim = bob
            .post(
                &format!("{V3}/keys/claim"),
                json!({"one_time_keys": {&alice_id: {&device: "signed_curve25519"}}}),
            )
            .await;
        let body = claim.assert_ok().clone();
        if let Some(keys) = body["one_time_keys"][&alice_id][&device].as_object() {
            claimed.extend(keys.values().map(|k| k["key"].as_str().unwrap().to_owned()));
        } else {
            // Relayed from the other server: a user with no key left is not named at all.
            assert_eq!(body["one_time_keys"], json!({}), "{body}");
        }
    }
    claimed.sort();
    assert_eq!(claimed, ["one", "two"]);
}

#[tokio::test]
async fn to_device_messages_reach_a_remote_device_once() {
    let (_a, _b, alice, bob) = strangers().await;
    let (bob_id, bob_device) = (bob.user_id().to_owned(), bob.device_id.clone().unwrap());
    let since = bob.since_now().await;
    let send = |txn: &'static str, text: &'static str| {
        let alice = alice.clone();
        let (bob_id, bob_device) = (bob_id.clone(), bob_device.clone());
        async move {
            let body = json!({"messages": {bob_id: {bob_device: {"text": text}}}});
            alice.put(&format!("{V3}/sendToDevice/m.hearth.test/{txn}"), body).await.assert_ok();
        }
    };
    send("t1", "first").await;
    // A retried request is not delivered twice.
    send("t1", "first").await;
    send("t2", "second").await;

    let mut texts: Vec<String> = Vec::new();
    let mut since = since;
    for _ in 0..60 {
        let body = bob.get(&format!("{V3}/sync?timeout=1000&since={since}")).await.assert_ok().clone();
        for event in body["to_device"]["events"].as_array().into_iter().flatten() {
            assert_eq!(event["sender"], alice.user_id());
            assert_eq!(event["type"], "m.hearth.test");
            texts.push(event["content"]["text"].as_str().unwrap().to_owned());
        }
        since = body["next_batch"].as_str().unwrap().to_owned();
        if texts.iter().any(|t| t == "second") {
            break;
        }
    }
    // The outbox keeps order per destination, so "second" arriving means "first" came before.
    assert_eq!(texts, ["first", "second"]);
}

#[tokio::test]
async fn device_list_and_cross_signing_changes_reach_remote_users_in_sync() {
    let shared = shared_room().await;
    let (alice, bob, alice_id) = (&shared.alice, &shared.bob, shared.alice_id.clone());
    let changed = |who: String| {
        move |body: &Value| {
            body["device_lists"]["changed"].as_array().is_some_and(|c| c.contains(&json!(who)))
        }
    };

    let since = bob.since_now().await;
    alice.post(&format!("{V3}/keys/upload"), json!({"device_keys": alice.device_keys()})).await.assert_ok();
    let body = bob.sync_until(Some(&since), "alice's new device keys", changed(alice_id.clone())).await;
    let to = body["next_batch"].as_str().unwrap();
    let changes = bob.get(&format!("{V3}/keys/changes?from={since}&to={to}")).await;
    assert!(
        changes.assert_ok()["changed"].as_array().unwrap().contains(&json!(alice_id)),
        "{:?}",
        changes.body
    );

    let since = to.to_owned();
    let key = |usage: &str, id: &str| json!({"user_id": alice_id, "usage": [usage], "keys": {format!("ed25519:{id}"): id}});
    let upload = json!({"master_key": key("master", "M1"), "self_signing_key": key("self_signing", "S1")});
    alice.post(&format!("{V3}/keys/device_signing/upload"), upload).await.assert_ok();
    bob.sync_until(Some(&since), "alice's cross-signing keys", changed(alice_id.clone())).await;

    // A second device logging in and uploading keys, then deleted: both changes reach bob.
    let second = Client::login(&shared.a.base_url, "alice", "pw").await;
    let since = bob.since_now().await;
    second.post(&format!("{V3}/keys/upload"), json!({"device_keys": second.device_keys()})).await.assert_ok();
    bob.sync_until(Some(&since), "alice's second device", changed(alice_id.clone())).await;
    let query = bob.post(&format!("{V3}/keys/query"), json!({"device_keys": {&alice_id: []}})).await;
    assert_eq!(query.assert_ok()["device_keys"][&alice_id].as_object().unwrap().len(), 2, "{:?}", query.body);

    let since = bob.since_now().await;
    let second_device = second.device_id.clone().unwrap();
    let challenge = alice.post(&format!("{V3}/delete_devices"), json!({"devices": [second_device]})).await;
    let session = challenge.body["session"].as_str().unwrap().to_owned();
    alice
        .post(
            &format!("{V3}/delete_devices"),
            json!({"devices": [second_device], "auth": alice.password_auth("pw", &session)}),
        )
        .await
        .assert_ok();
    bob.sync_until(Some(&since), "alice's deleted device", changed(alice_id.clone())).await;
    let query = bob.post(&format!("{V3}/keys/query"), json!({"device_keys": {&alice_id: []}})).await;
    assert_eq!(query.assert_ok()["device_keys"][&alice_id].as_object().unwrap().len(), 1, "{:?}", query.body);
}

/// The strongest proof: matrix-nio users (Olm and Megolm by vodozemac) on two servers exchange
/// encrypted messages, which takes device keys queried and one-time keys claimed across
/// federation, and the room keys sent as to-device messages through the other server.
#[tokio::test]
async fn matrix_nio_users_on_two_servers_exchange_encrypted_messages() {
    let (a, b, _, _) = strangers().await;
    let script = format!("{}/clients/nio_e2ee_check.py", env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("HEARTH_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let args =
        [script, "--homeserver".into(), a.base_url.clone(), "--homeserver-bob".into(), b.base_url.clone()];
    // The servers run on this test's runtime while the script runs on a blocking thread.
    let out = tokio::task::spawn_blocking(move || std::process::Command::new(&python).args(args).output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("12 passed, 0 failed"),
        "nio_e2ee_check.py across two servers failed (install matrix-nio with `pip install -r \
         conformance-tests/clients/requirements.txt -r conformance-tests/clients/requirements-e2ee.txt`):\
         \n{stdout}\n{stderr}"
    );
}

#[tokio::test]
async fn a_device_list_change_made_while_the_other_server_was_down_reaches_it() {
    let (a, b, alice, bob) = strangers().await;
    let (alice_id, bob_id) = (alice.user_id().to_owned(), bob.user_id().to_owned());
    let changed = |who: String| {
        move |body: &Value| {
            body["device_lists"]["changed"].as_array().is_some_and(|c| c.contains(&json!(who)))
        }
    };
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let alice_since = alice.since_now().await;
    let bob_since = bob.since_now().await;
    bob.post(&format!("{V3}/join/{room}?via={A}"), json!({})).await.assert_ok();
    // Sharing a room is itself a change of whose devices each must track.
    let body =
        alice.sync_until(Some(&alice_since), "bob's devices on joining", changed(bob_id.clone())).await;
    assert_eq!(body["device_lists"]["changed"], json!([bob_id]), "{}", body["device_lists"]);
    let body =
        bob.sync_until(Some(&bob_since), "alice's devices on joining", changed(alice_id.clone())).await;
    // Bob's own too, as Synapse does: his other devices learn whom he now shares a room with.
    let mut both = vec![alice_id.clone(), bob_id.clone()];
    both.sort();
    assert_eq!(body["device_lists"]["changed"], json!(both), "{}", body["device_lists"]);
    let bob_since = body["next_batch"].as_str().unwrap().to_owned();
    let bob_token = bob.access_token.clone().unwrap();

    // B goes away; alice logs in on a new device and uploads its keys; A restarts; B returns.
    let (b_config, b_dir) = b.stop().await;
    let second = Client::login(&a.base_url, "alice", "pw").await;
    second.post(&format!("{V3}/keys/upload"), json!({"device_keys": second.device_keys()})).await.assert_ok();
    let _a = a.restart().await;
    let b = TestServer::start_in(b_config, b_dir).await;
    let bob = Client::new(&b.base_url).with_token(&bob_token);
    let body = bob.sync_until(Some(&bob_since), "alice's new device", changed(alice_id.clone())).await;
    assert_eq!(body["device_lists"]["changed"], json!([alice_id]), "{}", body["device_lists"]);
}
