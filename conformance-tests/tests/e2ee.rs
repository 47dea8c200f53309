//! End-to-end encryption support: device, one-time and fallback keys, claims under
//! concurrency, to-device delivery, device list changes, cross-signing and signatures.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

fn otks(n: usize, prefix: &str) -> Value {
    let mut map = serde_json::Map::new();
    for i in 0..n {
        map.insert(
            format!("signed_curve25519:{prefix}{i}"),
            json!({"key": format!("k{prefix}{i}"), "signatures": {}}),
        );
    }
    Value::Object(map)
}

async fn sync(client: &Client, since: Option<&str>) -> Value {
    let mut path = format!("{V3}/sync?timeout=0");
    if let Some(since) = since {
        path.push_str(&format!("&since={since}"));
    }
    client.get(&path).await.assert_ok().clone()
}

#[tokio::test]
async fn keys_upload_query_and_claim_once_each() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let device = alice.device_id.clone().unwrap();

    let up = alice
        .post(&format!("{V3}/keys/upload"), json!({"device_keys": alice.device_keys(), "one_time_keys": otks(5, "a"),
            "fallback_keys": {"signed_curve25519:fb": {"key": "fallback", "fallback": true, "signatures": {}}}}))
        .await;
    assert_eq!(up.assert_ok()["one_time_key_counts"]["signed_curve25519"], 5);
    // Keys for someone else's device are refused.
    let mut wrong = alice.device_keys();
    wrong["device_id"] = json!("NOTMINE");
    alice
        .post(&format!("{V3}/keys/upload"), json!({"device_keys": wrong}))
        .await
        .assert_error(400, "M_INVALID_PARAM");

    let query = bob.post(&format!("{V3}/keys/query"), json!({"device_keys": {"@alice:localhost": []}})).await;
    let keys = &query.assert_ok()["device_keys"]["@alice:localhost"][&device];
    assert_eq!(keys["keys"][format!("ed25519:{device}")], "edkey");
    // A device without a name has none in `unsigned` (never `null`, which matrix-nio refuses).
    assert_eq!(keys["unsigned"], json!({}));

    let synced = sync(&alice, None).await;
    assert_eq!(synced["device_one_time_keys_count"]["signed_curve25519"], 5);
    assert_eq!(synced["device_unused_fallback_key_types"], json!(["signed_curve25519"]));

    // Ten concurrent claims for five keys: five distinct one-time keys, then the fallback key.
    let claims: Vec<_> = (0..10)
        .map(|_| {
            let bob = bob.clone();
            let device = device.clone();
            tokio::spawn(async move {
                bob.post(
                    &format!("{V3}/keys/claim"),
                    json!({"one_time_keys": {"@alice:localhost": {device.clone(): "signed_curve25519"}}}),
                )
                .await
            })
        })
        .collect();
    let mut seen = Vec::new();
    for claim in claims {
        let reply = claim.await.unwrap();
        let keys =
            reply.assert_ok()["one_time_keys"]["@alice:localhost"][&device].as_object().unwrap().clone();
        let (id, key) = keys.into_iter().next().expect("a key for every claim");
        seen.push((id, key["key"].as_str().unwrap().to_owned()));
    }
    let one_time: Vec<&(String, String)> = seen.iter().filter(|(_, k)| k != "fallback").collect();
    assert_eq!(one_time.len(), 5, "{seen:?}");
    let distinct: HashSet<&String> = one_time.iter().map(|(id, _)| id).collect();
    assert_eq!(distinct.len(), 5, "a one-time key was handed out twice: {seen:?}");
    let synced = sync(&alice, None).await;
    assert!(synced["device_one_time_keys_count"].get("signed_curve25519").is_none_or(|n| n == 0));
    assert_eq!(synced["device_unused_fallback_key_types"], json!([]));
    // Re-uploading one ID with other content is refused.
    alice.post(&format!("{V3}/keys/upload"), json!({"one_time_keys": otks(1, "z")})).await.assert_ok();
    let clash = json!({"signed_curve25519:z0": {"key": "different", "signatures": {}}});
    alice
        .post(&format!("{V3}/keys/upload"), json!({"one_time_keys": clash}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn to_device_messages_are_delivered_once() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let bob2 = Client::login(&server.base_url, "bob", "pw").await;
    let since = sync(&bob, None).await["next_batch"].as_str().unwrap().to_owned();
    let since2 = sync(&bob2, None).await["next_batch"].as_str().unwrap().to_owned();

    let body = json!({"messages": {"@bob:localhost": {bob.device_id.clone().unwrap(): {"secret": 1}}}});
    alice.put(&format!("{V3}/sendToDevice/m.test/txn1"), body.clone()).await.assert_ok();
    // A retried transaction is not delivered again.
    alice.put(&format!("{V3}/sendToDevice/m.test/txn1"), body).await.assert_ok();
    alice
        .put(
            &format!("{V3}/sendToDevice/m.test/txn2"),
            json!({"messages": {"@bob:localhost": {"*": {"all": true}}}}),
        )
        .await
        .assert_ok();

    let first = sync(&bob, Some(&since)).await;
    let events = first["to_device"]["events"].as_array().unwrap().clone();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["sender"], "@alice:localhost");
    assert_eq!(events[0]["type"], "m.test");
    assert_eq!(events[0]["content"]["secret"], 1);
    // The same window again (the client did not acknowledge it) repeats it ...
    let again = sync(&bob, Some(&since)).await;
    assert_eq!(again["to_device"]["events"].as_array().unwrap().len(), 2);
    // ... and syncing from the new token acknowledges it: never again.
    let next = first["next_batch"].as_str().unwrap();
    let after = sync(&bob, Some(next)).await;
    // An empty section may be left out, as Synapse does.
    assert!(after["to_device"]["events"].as_array().is_none_or(Vec::is_empty), "{after}");
    // The other device got only the wildcard message.
    let other = sync(&bob2, Some(&since2)).await;
    let events = other["to_device"]["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["content"]["all"], true);
}

#[tokio::test]
async fn device_list_changes_and_cross_signing() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.post(&format!("{V3}/createRoom"), json!({"preset": "public_chat"})).await;
    let room = room.assert_ok()["room_id"].as_str().unwrap().to_owned();
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let since = sync(&bob, None).await["next_batch"].as_str().unwrap().to_owned();

    alice.post(&format!("{V3}/keys/upload"), json!({"device_keys": alice.device_keys()})).await.assert_ok();
    let next = sync(&bob, Some(&since)).await;
    assert_eq!(next["device_lists"]["changed"], json!(["@alice:localhost"]));
    let to = next["next_batch"].as_str().unwrap();
    let changes = bob.get(&format!("{V3}/keys/changes?from={since}&to={to}")).await;
    assert_eq!(changes.assert_ok()["changed"], json!(["@alice:localhost"]));

    // Someone new in a shared room is a device list to fetch; someone gone, one to forget.
    let carol = Client::register(&server.base_url, "carol", "pw").await;
    let since = next["next_batch"].as_str().unwrap().to_owned();
    carol.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let joined = sync(&bob, Some(&since)).await;
    assert_eq!(joined["device_lists"]["changed"], json!(["@carol:localhost"]), "{}", joined["device_lists"]);
    let since = joined["next_batch"].as_str().unwrap().to_owned();
    carol.post(&format!("{V3}/rooms/{room}/leave"), json!({})).await.assert_ok();
    let gone = sync(&bob, Some(&since)).await;
    assert_eq!(gone["device_lists"]["left"], json!(["@carol:localhost"]), "{}", gone["device_lists"]);

    let key = |usage: &str, id: &str| json!({"user_id": "@alice:localhost", "usage": [usage], "keys": {format!("ed25519:{id}"): id}});
    let upload = json!({"master_key": key("master", "M1"), "self_signing_key": key("self_signing", "S1"), "user_signing_key": key("user_signing", "U1")});
    alice.post(&format!("{V3}/keys/device_signing/upload"), upload).await.assert_ok();
    let seen_by_bob =
        bob.post(&format!("{V3}/keys/query"), json!({"device_keys": {"@alice:localhost": []}})).await;
    let body = seen_by_bob.assert_ok();
    assert_eq!(body["master_keys"]["@alice:localhost"]["keys"]["ed25519:M1"], "M1");
    assert!(body["self_signing_keys"]["@alice:localhost"].is_object());
    assert!(body["user_signing_keys"].get("@alice:localhost").is_none(), "user-signing keys are private");
    let own = alice.post(&format!("{V3}/keys/query"), json!({"device_keys": {"@alice:localhost": []}})).await;
    assert!(own.assert_ok()["user_signing_keys"]["@alice:localhost"].is_object());

    // Replacing the master key needs the password; the unstable path Element calls works too.
    let replace = json!({"master_key": key("master", "M2")});
    let challenge = alice.post("/_matrix/client/unstable/keys/device_signing/upload", replace.clone()).await;
    assert_eq!(challenge.status.as_u16(), 401);
    let session = challenge.body["session"].as_str().unwrap();
    let mut with_auth = replace;
    with_auth["auth"] = alice.password_auth("pw", session);
    alice.post(&format!("{V3}/keys/device_signing/upload"), with_auth).await.assert_ok();

    // A signature uploaded for a device key shows up on it.
    let device = alice.device_id.clone().unwrap();
    let mut signed = alice.device_keys();
    signed["signatures"] = json!({"@alice:localhost": {"ed25519:S1": "cross-signature"}});
    let reply = alice
        .post(&format!("{V3}/keys/signatures/upload"), json!({"@alice:localhost": {device.clone(): signed}}))
        .await;
    assert!(reply.assert_ok().get("failures").is_none_or(|f| f == &json!({})), "{}", reply.body);
    let query = bob
        .post(&format!("{V3}/keys/query"), json!({"device_keys": {"@alice:localhost": [device.clone()]}}))
        .await;
    let sigs =
        &query.assert_ok()["device_keys"]["@alice:localhost"][&device]["signatures"]["@alice:localhost"];
    assert_eq!(sigs["ed25519:S1"], "cross-signature");
    assert_eq!(sigs[format!("ed25519:{device}")], "sig", "the device's own signature is kept");
    let unknown = alice
        .post(
            &format!("{V3}/keys/signatures/upload"),
            json!({"@alice:localhost": {"NOPE": {"signatures": {"@alice:localhost": {"x": "y"}}}}}),
        )
        .await;
    assert_eq!(unknown.assert_ok()["failures"]["@alice:localhost"]["NOPE"]["errcode"], "M_NOT_FOUND");
}

#[tokio::test]
async fn key_backup_versions_and_keys() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let version_path = format!("{V3}/room_keys/version");
    // Element branches on this 404 when no backup exists.
    alice.get(&version_path).await.assert_error(404, "M_NOT_FOUND");
    let algorithm = json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "pk", "signatures": {}}});
    let created = alice.post(&version_path, algorithm.clone()).await;
    let version = created.assert_ok()["version"].as_str().unwrap().to_owned();
    let info = alice.get(&version_path).await;
    let info = info.assert_ok().clone();
    assert_eq!(info["version"], json!(version));
    assert_eq!(info["count"], 0);
    assert_eq!(info["auth_data"]["public_key"], "pk");
    bob.get(&version_path).await.assert_error(404, "M_NOT_FOUND");

    let key = |index: u64, verified: bool| {
        json!({"first_message_index": index, "forwarded_count": 0, "is_verified": verified,
               "session_data": {"ephemeral": "e", "ciphertext": format!("c{index}"), "mac": "m"}})
    };
    let session_path = format!("{V3}/room_keys/keys/!room:localhost/sess1?version={version}");
    let put = alice.put(&session_path, key(5, false)).await;
    assert_eq!(put.assert_ok()["count"], 1);
    let etag1 = put.body["etag"].as_str().unwrap().to_owned();
    // A worse copy (later first index) is ignored; a better one replaces it.
    alice.put(&session_path, key(9, false)).await.assert_ok();
    assert_eq!(alice.get(&session_path).await.assert_ok()["first_message_index"], 5);
    let better = alice.put(&session_path, key(2, true)).await;
    assert_ne!(better.assert_ok()["etag"].as_str().unwrap(), etag1);
    assert_eq!(alice.get(&session_path).await.assert_ok()["first_message_index"], 2);
    let all = alice
        .put(
            &format!("{V3}/room_keys/keys?version={version}"),
            json!({"rooms": {"!other:localhost": {"sessions": {"s2": key(0, false)}}}}),
        )
        .await;
    assert_eq!(all.assert_ok()["count"], 2);
    let everything = alice.get(&format!("{V3}/room_keys/keys?version={version}")).await;
    assert_eq!(everything.assert_ok()["rooms"].as_object().unwrap().len(), 2);
    let room = alice.get(&format!("{V3}/room_keys/keys/!room:localhost?version={version}")).await;
    assert!(room.assert_ok()["sessions"]["sess1"].is_object());
    alice
        .get(&format!("{V3}/room_keys/keys/!room:localhost/nope?version={version}"))
        .await
        .assert_error(404, "M_NOT_FOUND");

    // A newer version makes the old one read-only, and writes to it say which is current.
    let newer = alice.post(&version_path, algorithm.clone()).await;
    let new_version = newer.assert_ok()["version"].as_str().unwrap().to_owned();
    let stale = alice.put(&session_path, key(1, true)).await;
    stale.assert_error(403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(stale.body["current_version"], json!(new_version));
    let mut changed = algorithm.clone();
    changed["algorithm"] = json!("something.else");
    alice.put(&format!("{version_path}/{new_version}"), changed).await.assert_error(400, "M_INVALID_PARAM");
    let mut updated = algorithm;
    updated["auth_data"]["public_key"] = json!("pk2");
    alice.put(&format!("{version_path}/{new_version}"), updated).await.assert_ok();
    assert_eq!(
        alice.get(&format!("{version_path}/{new_version}")).await.assert_ok()["auth_data"]["public_key"],
        "pk2"
    );

    let deleted = alice
        .request(reqwest::Method::DELETE, &format!("{V3}/room_keys/keys?version={new_version}"), None)
        .await;
    assert_eq!(deleted.assert_ok()["count"], 0);
    alice.request(reqwest::Method::DELETE, &format!("{version_path}/{version}"), None).await.assert_ok();
    alice.get(&format!("{version_path}/{version}")).await.assert_error(404, "M_NOT_FOUND");
    assert_eq!(alice.get(&version_path).await.assert_ok()["version"], json!(new_version));
}
