//! What calls in Element need, against the real server: delayed events (MSC4140) scheduled on
//! `/send` and `/state`, listed, restarted, sent and cancelled by whoever holds the delay ID,
//! sent by the server when due (also when that was while it was down), refused with the MSC's
//! errors; and the configured MatrixRTC transports (MSC4143) where clients look for them.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";
const DELAYED: &str = "/_matrix/client/unstable/org.matrix.msc4140/delayed_events";
const CALL: &str = "org.matrix.msc3401.call.member";

async fn call_room(alice: &Client) -> String {
    alice
        .create_room(json!({"preset": "public_chat", "power_level_content_override": {"events": {CALL: 0}}}))
        .await
}

async fn state(client: &Client, room: &str, key: &str) -> Option<Value> {
    let reply = client.get(&format!("{V3}/rooms/{room}/state/{CALL}/{key}")).await;
    (reply.status == 200).then(|| reply.body.clone())
}

/// Waits (bounded) until the call state under `key` is `wanted`.
async fn until_state(client: &Client, room: &str, key: &str, wanted: &Value) -> bool {
    for _ in 0..200 {
        if state(client, room, key).await.as_ref() == Some(wanted) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

fn delay_id(reply: &hearth_conformance_tests::client::Reply) -> String {
    reply.assert_ok()["delay_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn delayed_events_are_scheduled_listed_restarted_sent_and_cancelled() {
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = call_room(&alice).await;
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();

    let versions = bob.get("/_matrix/client/versions").await;
    assert_eq!(versions.assert_ok()["unstable_features"]["org.matrix.msc4140"], json!(true));
    let caps = bob.get(&format!("{V3}/capabilities")).await;
    assert!(caps.assert_ok()["capabilities"]["org.matrix.msc4140.delayed_events"]["max_delay_ms"].is_u64());

    // A delayed state event and a delayed message.
    let key = "_@bob:localhost_D_m.call";
    let path = format!("{V3}/rooms/{room}/state/{CALL}/{key}?org.matrix.msc4140.delay=60000");
    let leave = delay_id(&bob.put(&path, json!({})).await);
    let path = format!("{V3}/rooms/{room}/send/m.room.message/t1?org.matrix.msc4140.delay=60000");
    let message = delay_id(&bob.put(&path, json!({"msgtype": "m.text", "body": "later"})).await);
    let retried = delay_id(&bob.put(&path, json!({"msgtype": "m.text", "body": "later"})).await);
    assert_eq!(retried, message, "a retried request is the same request");
    // The membership itself, sent now, does not cancel the sender's own delayed leave.
    bob.put(&format!("{V3}/rooms/{room}/state/{CALL}/{key}"), json!({"application": "m.call"}))
        .await
        .assert_ok();

    let listed = bob.get(DELAYED).await;
    let scheduled = listed.assert_ok()["scheduled"].as_array().unwrap().clone();
    assert_eq!(scheduled.len(), 2, "{}", listed.body);
    assert_eq!(listed.body["delayed_events"], json!(scheduled));
    let first = scheduled.iter().find(|e| e["delay_id"] == json!(leave)).unwrap();
    assert_eq!(
        (first["type"].as_str(), first["state_key"].as_str(), first["delay"].as_u64()),
        (Some(CALL), Some(key), Some(60000))
    );
    assert!(
        alice.get(DELAYED).await.assert_ok()["scheduled"].as_array().unwrap().is_empty(),
        "only one's own"
    );
    let one = bob.get(&format!("{DELAYED}/{message}")).await;
    assert_eq!(one.assert_ok()["content"]["body"], json!("later"));
    alice.get(&format!("{DELAYED}/{message}")).await.assert_error(404, "M_NOT_FOUND");

    // The delay ID is the capability: restart it without an access token.
    let anonymous = Client::new(&server.base_url);
    let before = first["running_since"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    anonymous.post(&format!("{DELAYED}/{leave}/restart"), json!({})).await.assert_ok();
    let after = bob.get(&format!("{DELAYED}/{leave}")).await;
    assert!(after.assert_ok()["running_since"].as_u64().unwrap() > before);

    // Send the message now (the body form of the action); cancel the leave.
    bob.post(&format!("{DELAYED}/{message}"), json!({"action": "send"})).await.assert_ok();
    bob.wait_for_bodies(&room, &["later"]).await;
    alice.post(&format!("{DELAYED}/{leave}/cancel"), json!({})).await.assert_ok();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(state(&bob, &room, key).await, Some(json!({"application": "m.call"})), "never sent");
    let finalised = bob.get(&format!("{DELAYED}?status=finalised")).await;
    let finalised = finalised.assert_ok()["finalised"].as_array().unwrap().clone();
    assert_eq!(finalised.len(), 2);
    assert!(finalised.iter().any(|f| f["outcome"] == json!("send") && f["event_id"].is_string()));
    assert!(finalised.iter().any(|f| f["outcome"] == json!("cancel") && f["reason"] == json!("action")));

    // A short delay and no restart: the server sends it.
    let path = format!("{V3}/rooms/{room}/state/{CALL}/{key}?org.matrix.msc4140.delay=50");
    delay_id(&bob.put(&path, json!({})).await);
    assert!(until_state(&alice, &room, key, &json!({})).await, "the silent participant left the call");
}

#[tokio::test]
async fn bad_delays_and_actions_get_the_msc_errors() {
    let server = TestServer::start_with(|c| {
        c.storage.sync_writes = false;
        c.calls.max_delay_ms = 60_000;
    })
    .await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = call_room(&bob).await;
    let send = |delay: &str| {
        let path = format!("{V3}/rooms/{room}/send/m.room.message/x{delay}?org.matrix.msc4140.delay={delay}");
        let bob = &bob;
        async move { bob.put(&path, json!({"body": "x"})).await }
    };
    send("-1").await.assert_error(400, "M_INVALID_PARAM");
    send("soon").await.assert_error(400, "M_INVALID_PARAM");
    let huge = send("60001").await;
    huge.assert_error(400, "M_UNKNOWN");
    assert_eq!(huge.body["org.matrix.msc4140.errcode"], json!("M_MAX_DELAY_EXCEEDED"));
    assert_eq!(huge.body["org.matrix.msc4140.max_delay"], json!(60000));
    send("99999999999999999999999").await.assert_error(400, "M_INVALID_PARAM");

    bob.post(&format!("{DELAYED}/nosuchid/send"), json!({})).await.assert_error(404, "M_NOT_FOUND");
    bob.post(&format!("{DELAYED}/nosuchid/explode"), json!({})).await.assert_error(400, "M_INVALID_PARAM");
    bob.post(&format!("{DELAYED}/nosuchid"), json!({"action": "explode"}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    bob.post(&format!("{DELAYED}/nosuchid"), json!({})).await.assert_error(400, "M_BAD_JSON");
    Client::new(&server.base_url).get(DELAYED).await.assert_error(401, "M_MISSING_TOKEN");
    let unknown_room =
        format!("{V3}/rooms/!nowhere:localhost/send/m.room.message/u?org.matrix.msc4140.delay=10");
    bob.put(&unknown_room, json!({"body": "x"})).await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn what_fell_due_while_the_server_was_down_is_sent_at_start() {
    let server = TestServer::start().await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = call_room(&bob).await;
    let key = "_@bob:localhost_D_m.call";
    bob.put(&format!("{V3}/rooms/{room}/state/{CALL}/{key}"), json!({"application": "m.call"}))
        .await
        .assert_ok();
    let path = format!("{V3}/rooms/{room}/state/{CALL}/{key}?org.matrix.msc4140.delay=1500");
    delay_id(&bob.put(&path, json!({})).await);

    let (config, dir) = server.stop().await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let server = TestServer::start_in(config, dir).await;
    let bob = Client::login(&server.base_url, "bob", "pw").await;
    assert!(until_state(&bob, &room, key, &json!({})).await, "sent once the server was back");
    // The timer records what it sent just after sending it.
    let mut listed = bob.get(DELAYED).await;
    for _ in 0..200 {
        if !listed.assert_ok()["finalised"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        listed = bob.get(DELAYED).await;
    }
    assert_eq!(listed.assert_ok()["scheduled"], json!([]));
    assert_eq!(listed.body["finalised"].as_array().unwrap().len(), 1, "sent once, not twice");
}

#[tokio::test]
async fn rtc_transports_are_found_at_the_endpoint_and_in_well_known() {
    let transport = json!({"type": "livekit", "livekit_service_url": "https://livekit-jwt.example.org"});
    let configured = transport.clone();
    let server = TestServer::start_with(move |c| {
        c.calls.rtc_transports = vec![serde_json::from_value(configured).unwrap()];
    })
    .await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let found = bob.get("/_matrix/client/unstable/org.matrix.msc4143/rtc/transports").await;
    assert_eq!(found.assert_ok()["rtc_transports"], json!([transport]));
    let well_known = Client::new(&server.base_url).get("/.well-known/matrix/client").await;
    assert_eq!(well_known.assert_ok()["org.matrix.msc4143.rtc_foci"], json!([transport]));
    let versions = bob.get("/_matrix/client/versions").await;
    assert_eq!(versions.assert_ok()["unstable_features"]["org.matrix.msc4143"], json!(true));
    Client::new(&server.base_url)
        .get("/_matrix/client/unstable/org.matrix.msc4143/rtc/transports")
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}

/// Call state is room state like any other: a member on another server joins the call, and the
/// delayed leave its server sends reaches this server's members through their syncs.
#[tokio::test]
async fn a_delayed_leave_sent_by_another_server_reaches_members_here() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let room = call_room(&alice).await;
    let server_a = alice.user_id().split(':').nth(1).unwrap().to_owned();
    bob.post(&format!("{V3}/join/{room}?via={server_a}"), json!({})).await.assert_ok();
    let key = format!("_{}_D_m.call", bob.user_id());

    let path = format!("{V3}/rooms/{room}/state/{CALL}/{key}?org.matrix.msc4140.delay=1500");
    delay_id(&bob.put(&path, json!({})).await);
    bob.put(&format!("{V3}/rooms/{room}/state/{CALL}/{key}"), json!({"application": "m.call"}))
        .await
        .assert_ok();
    let member_state = |wanted: Value| {
        let key = key.clone();
        move |body: &Value| {
            body["rooms"]["join"].as_object().into_iter().flat_map(|rooms| rooms.values()).any(|r| {
                r["timeline"]["events"].as_array().into_iter().flatten().any(|e| {
                    e["type"] == json!(CALL) && e["state_key"] == json!(key) && e["content"] == wanted
                })
            })
        }
    };
    let first =
        alice.sync_until(None, "bob in the call", member_state(json!({"application": "m.call"}))).await;
    // Both may come in one sync when federation is slow; the leave must come after the join.
    if !member_state(json!({}))(&first) {
        let since = first["next_batch"].as_str().unwrap().to_owned();
        alice.sync_until(Some(&since), "bob's delayed leave", member_state(json!({}))).await;
    }
    let _servers = (a, b);
}

/// A delayed event's content at the deepest nesting a body may have reads back whole once sent;
/// one level deeper is refused when scheduling, before anything is stored.
#[tokio::test]
async fn a_delayed_event_at_the_nesting_limit_reads_back_whole() {
    const LIMIT: usize = 64;
    let nest = |levels: usize| (0..levels).fold(json!(0), |inner, _| json!({ "a": inner }));
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = call_room(&bob).await;
    let deep = json!({"msgtype": "m.text", "body": "deep", "d": nest(LIMIT - 1)});
    let too_deep = json!({"msgtype": "m.text", "body": "too deep", "d": nest(LIMIT)});
    let path =
        |txn: &str| format!("{V3}/rooms/{room}/send/m.room.message/{txn}?org.matrix.msc4140.delay=60000");
    bob.put(&path("over"), too_deep).await.assert_error(400, "M_BAD_JSON");
    let id = delay_id(&bob.put(&path("at"), deep.clone()).await);
    assert_eq!(bob.get(&format!("{DELAYED}/{id}")).await.assert_ok()["content"], deep);
    bob.post(&format!("{DELAYED}/{id}/send"), json!({})).await.assert_ok();
    let messages = bob.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=5")).await;
    let sent = messages.assert_ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["content"]["body"] == json!("deep"))
        .cloned();
    assert_eq!(sent.unwrap()["content"], deep);
}
