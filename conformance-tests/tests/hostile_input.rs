//! Hostile input that must hurt no one else: JSON nested at every depth from 1 to the limit + 1
//! for every endpoint that stores what it is given (what is accepted is readable
//! back through every path that serves it, what is refused gets 400 `M_BAD_JSON`); an
//! unsendable federation item that must not hold back the rest; server names outside the
//! spec's grammar refused before any lookup; malformed bodies of every kind on every endpoint
//! that takes one answered with a Matrix error.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, SHARED_SECRET, TestServer};
use reqwest::Method;
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";
const ADMIN: &str = "/_synapse/admin";
const SLIDING: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
/// The server's nesting limit for request bodies (`hearth_core::json::MAX_DEPTH`), restated:
/// this suite checks the behaviour, not the constant.
const LIMIT: usize = 64;
const DEPTHS: [usize; 3] = [LIMIT - 1, LIMIT, LIMIT + 1];

/// `levels` objects nested in one another: `{"a":{"a":...{"a":0}}}`.
fn nest(levels: usize) -> Value {
    (0..levels).fold(json!(0), |inner, _| json!({ "a": inner }))
}

/// How deeply a value nests arrays and objects (`{}` is 1).
fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A message body nested `levels` deep in all.
fn message(levels: usize) -> Value {
    json!({"msgtype": "m.text", "body": format!("depth {levels}"), "d": nest(levels - 1)})
}

#[track_caller]
fn assert_accepted_or_refused(reply: &hearth_conformance_tests::client::Reply, levels: usize, what: &str) {
    if levels <= LIMIT {
        assert_eq!(reply.status.as_u16(), 200, "{what} at depth {levels}: {}", reply.body);
    } else {
        assert_eq!(reply.status.as_u16(), 400, "{what} at depth {levels}: {}", reply.body);
        assert_eq!(reply.errcode(), "M_BAD_JSON", "{what} at depth {levels}");
    }
}

fn timeline_events(sync: &Value, room: &str) -> Vec<Value> {
    sync["rooms"]["join"][room]["timeline"]["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn deep_events_are_refused_past_the_limit_and_every_member_reads_the_rest() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    // Bob, with power 0, may send state: the deep state events are his.
    let room = alice
        .create_room(json!({"preset": "public_chat", "power_level_content_override": {"state_default": 0}}))
        .await;
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();

    let (mut message_ids, mut state_ids) = (Vec::new(), Vec::new());
    for levels in DEPTHS {
        let path = format!("{V3}/rooms/{room}/send/m.room.message/m{levels}");
        let reply = bob.put(&path, message(levels)).await;
        assert_accepted_or_refused(&reply, levels, "a message");
        if levels <= LIMIT {
            message_ids.push(reply.body["event_id"].as_str().unwrap().to_owned());
        }
        let path = format!("{V3}/rooms/{room}/state/org.example.deep/k{levels}");
        let reply = bob.put(&path, json!({"d": nest(levels - 1)})).await;
        assert_accepted_or_refused(&reply, levels, "a state event");
        if levels <= LIMIT {
            state_ids.push((levels, reply.body["event_id"].as_str().unwrap().to_owned()));
        }
    }
    // The depth the issue reported (accepted before, then every member's /sync failed).
    let reply = bob.put(&format!("{V3}/rooms/{room}/send/m.room.message/m126"), message(126)).await;
    reply.assert_error(400, "M_BAD_JSON");
    // Far past any recursion limit: refused, not a crash.
    let body = format!("{}0{}", "{\"a\":".repeat(150_000), "}".repeat(150_000));
    let reply = bob
        .request_raw(Method::PUT, &format!("{V3}/rooms/{room}/send/m.room.message/huge"), body.into_bytes())
        .await;
    reply.assert_error(400, "M_BAD_JSON");

    // Every member (and one who joins later) syncs: timeline and state, at full depth.
    let carol = Client::register(&server.base_url, "carol", "pw").await;
    carol.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    // {"room":{"timeline":{"limit":50}}}
    let filter = "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A50%7D%7D%7D";
    for client in [&alice, &bob, &carol] {
        let sync = client.get(&format!("{V3}/sync?timeout=0&filter={filter}")).await;
        let sync = sync.assert_ok();
        let events = timeline_events(sync, &room);
        for (levels, id) in [LIMIT - 1, LIMIT].into_iter().zip(&message_ids) {
            let event = events.iter().find(|e| e["event_id"] == json!(id)).expect("the message in /sync");
            assert_eq!(event["content"], message(levels));
        }
    }

    // /messages, /state, one state event, /context and /event.
    let page = alice.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=50")).await;
    let chunk = page.assert_ok()["chunk"].as_array().unwrap().clone();
    for (levels, id) in [LIMIT - 1, LIMIT].into_iter().zip(&message_ids) {
        let event = chunk.iter().find(|e| e["event_id"] == json!(id)).expect("the message in /messages");
        assert_eq!(event["content"], message(levels));
    }
    let state = alice.get(&format!("{V3}/rooms/{room}/state")).await;
    let state = state.assert_ok().as_array().unwrap().clone();
    for (levels, _) in &state_ids {
        let key = format!("k{levels}");
        let event = state.iter().find(|e| e["state_key"] == json!(key)).expect("the deep state event");
        assert_eq!(depth(&event["content"]), *levels);
        let one = alice.get(&format!("{V3}/rooms/{room}/state/org.example.deep/{key}")).await;
        assert_eq!(one.assert_ok()["d"], nest(levels - 1));
    }
    let deepest = &message_ids[1];
    let context = alice.get(&format!("{V3}/rooms/{room}/context/{deepest}?limit=10")).await;
    assert_eq!(context.assert_ok()["event"]["content"], message(LIMIT));
    let event = carol.get(&format!("{V3}/rooms/{room}/event/{deepest}")).await;
    assert_eq!(event.assert_ok()["content"], message(LIMIT));

    // Redacting the deepest message and state event works, and everything still reads.
    alice.put(&format!("{V3}/rooms/{room}/redact/{deepest}/r1"), json!({})).await.assert_ok();
    let state_id = &state_ids.iter().find(|(l, _)| *l == LIMIT).unwrap().1;
    bob.put(&format!("{V3}/rooms/{room}/redact/{state_id}/r2"), json!({"reason": "deep"})).await.assert_ok();
    for client in [&alice, &bob, &carol] {
        client.get(&format!("{V3}/sync?timeout=0&filter={filter}")).await.assert_ok();
        client.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=50")).await.assert_ok();
        client.get(&format!("{V3}/rooms/{room}/state")).await.assert_ok();
    }
    let redacted = carol.get(&format!("{V3}/rooms/{room}/event/{deepest}")).await;
    assert_eq!(redacted.assert_ok()["content"], json!({}));

    // And after a restart.
    let server = server.restart().await;
    let alice = Client::new(&server.base_url).with_token(alice.access_token.as_ref().unwrap());
    alice.get(&format!("{V3}/sync?timeout=0&filter={filter}")).await.assert_ok();
    alice.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=50")).await.assert_ok();
}

#[tokio::test]
async fn deep_account_data_to_device_filters_and_profiles_are_refused_past_the_limit() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let (me, bob_id) = (alice.user_id().to_owned(), bob.user_id().to_owned());
    let bob_device = bob.device_id.clone().unwrap();
    let room = alice.create_room(json!({})).await;
    let bob_since = bob.since_now().await;

    for levels in DEPTHS {
        let content = json!({"d": nest(levels - 1)});
        let path = format!("{V3}/user/{me}/account_data/org.example.deep{levels}");
        assert_accepted_or_refused(&alice.put(&path, content.clone()).await, levels, "account data");
        let path = format!("{V3}/user/{me}/rooms/{room}/account_data/org.example.deep{levels}");
        assert_accepted_or_refused(&alice.put(&path, content.clone()).await, levels, "room account data");
        // messages → user → device → content: three levels around the content.
        let to_device = json!({"messages": {bob_id.clone(): {bob_device.clone(): {"d": nest(levels - 4)}}}});
        let path = format!("{V3}/sendToDevice/org.example.deep/t{levels}");
        assert_accepted_or_refused(&alice.put(&path, to_device).await, levels, "a to-device message");
        let filter = json!({"room": {"timeline": {"limit": 10}}, "d": nest(levels - 1)});
        let reply = alice.post(&format!("{V3}/user/{me}/filter"), filter).await;
        assert_accepted_or_refused(&reply, levels, "a filter");
        if levels <= LIMIT {
            let id = reply.body["filter_id"].as_str().unwrap();
            alice.get(&format!("{V3}/user/{me}/filter/{id}")).await.assert_ok();
        }
        let profile = json!({"displayname": format!("alice {levels}"), "d": nest(levels - 1)});
        let reply = alice.put(&format!("{V3}/profile/{me}/displayname"), profile).await;
        assert_accepted_or_refused(&reply, levels, "a display name");
        let receipt = json!({"thread_id": "main", "d": nest(levels - 1)});
        let reply = alice.post(&format!("{V3}/rooms/{room}/receipt/m.read/$nope"), receipt).await;
        if levels > LIMIT {
            reply.assert_error(400, "M_BAD_JSON");
        }
    }

    // What was accepted reads back, directly and through /sync.
    for levels in [LIMIT - 1, LIMIT] {
        let got = alice.get(&format!("{V3}/user/{me}/account_data/org.example.deep{levels}")).await;
        assert_eq!(got.assert_ok()["d"], nest(levels - 1));
        let path = format!("{V3}/user/{me}/rooms/{room}/account_data/org.example.deep{levels}");
        assert_eq!(alice.get(&path).await.assert_ok()["d"], nest(levels - 1));
    }
    let sync = alice.get(&format!("{V3}/sync?timeout=0")).await;
    let sync = sync.assert_ok();
    let global = sync["account_data"]["events"].as_array().unwrap();
    assert!(global.iter().any(|e| e["type"] == format!("org.example.deep{LIMIT}")), "{global:?}");
    let in_room = sync["rooms"]["join"][&room]["account_data"]["events"].as_array().unwrap();
    assert!(in_room.iter().any(|e| e["type"] == format!("org.example.deep{LIMIT}")), "{in_room:?}");
    let name = alice.get(&format!("{V3}/profile/{me}/displayname")).await;
    assert_eq!(name.assert_ok()["displayname"], format!("alice {LIMIT}"));

    // The recipient's /sync carries both accepted to-device messages.
    let sync = bob
        .sync_until(Some(&bob_since), "deep to-device messages", |body| {
            body["to_device"]["events"].as_array().is_some_and(|events| events.len() >= 2)
        })
        .await;
    let events = sync["to_device"]["events"].as_array().unwrap();
    assert!(events.iter().any(|e| e["content"]["d"] == nest(LIMIT - 4)), "{events:?}");
}

#[tokio::test]
async fn an_unsendable_item_does_not_hold_back_a_destination() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{room}?via=hs-a.test"), json!({})).await.assert_ok();
    alice.send_text(&room, "m1", "before").await;
    bob.wait_for_bodies(&room, &["before"]).await;

    // A float is not canonical JSON, so no transaction carrying this EDU could ever be signed.
    let bob_id = bob.user_id().to_owned();
    let to_device = json!({"messages": {bob_id: {"*": {"x": 1.5}}}});
    alice.put(&format!("{V3}/sendToDevice/org.example.float/t1"), to_device).await.assert_ok();
    alice.send_text(&room, "m2", "after the bad item").await;
    bob.wait_for_bodies(&room, &["after the bad item"]).await;

    // Inviting a remote user with a deep extra field is refused cleanly past the limit, and
    // works within it.
    let dave = Client::register(&b.base_url, "dave", "pw").await;
    let invite = |levels: usize| json!({"user_id": dave.user_id(), "extra": nest(levels - 1)});
    let reply = alice.post(&format!("{V3}/rooms/{room}/invite"), invite(LIMIT + 1)).await;
    reply.assert_error(400, "M_BAD_JSON");
    alice.post(&format!("{V3}/rooms/{room}/invite"), invite(LIMIT)).await.assert_ok();
}

#[tokio::test]
async fn server_names_outside_the_grammar_are_refused_before_any_lookup() {
    let mut servers = TestServer::start_federation(&["hs-a.test"], |_| {}).await;
    let a = servers.pop().unwrap();
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;

    for name in ["1", "a..b", "127.1", "example.org:0", "-.1"] {
        let reply = alice.get(&format!("/_matrix/client/v1/media/download/{name}/abc")).await;
        reply.assert_error(400, "M_INVALID_PARAM");
        let reply =
            alice.get(&format!("/_matrix/client/v1/media/thumbnail/{name}/abc?width=8&height=8")).await;
        reply.assert_error(400, "M_INVALID_PARAM");
        let reply = alice.post(&format!("{V3}/join/%21a%0D%0AX:{name}"), json!({})).await;
        reply.assert_error(400, "M_INVALID_PARAM");
        let reply = alice.post(&format!("{V3}/join/%23alias:{name}"), json!({})).await;
        reply.assert_error(400, "M_INVALID_PARAM");
        let reply = alice.post(&format!("{V3}/join/%21elsewhere:hs-a.test?via={name}"), json!({})).await;
        reply.assert_error(400, "M_INVALID_PARAM");
        let reply = alice.post(&format!("{V3}/knock/%21elsewhere:hs-a.test?via={name}"), json!({})).await;
        reply.assert_error(400, "M_INVALID_PARAM");
    }
    // A valid name still goes through (to a room that exists here).
    let bob = Client::register(&a.base_url, "bob", "pw").await;
    bob.post(&format!("{V3}/join/{room}?via=hs-a.test"), json!({})).await.assert_ok();
}

#[tokio::test]
async fn events_over_the_pdu_size_limit_are_too_large_and_those_under_it_read_back() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({})).await;
    let filler = |bytes: usize| json!({"msgtype": "m.text", "body": "x".repeat(bytes)});

    // The spec caps a PDU at 65,536 bytes of canonical JSON, envelope included.
    let reply = alice.put(&format!("{V3}/rooms/{room}/send/m.room.message/big"), filler(70_000)).await;
    reply.assert_error(413, "M_TOO_LARGE");
    let reply = alice.put(&format!("{V3}/rooms/{room}/state/org.example.big/k"), filler(70_000)).await;
    reply.assert_error(413, "M_TOO_LARGE");

    let reply = alice.put(&format!("{V3}/rooms/{room}/send/m.room.message/fits"), filler(60_000)).await;
    let id = reply.assert_ok()["event_id"].as_str().unwrap().to_owned();
    let page = alice.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=5")).await;
    let chunk = page.assert_ok()["chunk"].as_array().unwrap().clone();
    let event = chunk.iter().find(|e| e["event_id"] == json!(id)).expect("the large message");
    assert_eq!(event["content"]["body"].as_str().map(str::len), Some(60_000));
    alice.get(&format!("{V3}/sync?timeout=0")).await.assert_ok();
}

#[tokio::test]
async fn identifiers_over_the_key_limit_are_too_large() {
    let server = TestServer::start().await;
    hearth_conformance_tests::checks::identifiers_over_the_key_limit_are_too_large(&server.base_url).await;
}

/// Builds a request body around a nested value.
type BodyAround = fn(Value) -> Value;

#[tokio::test]
async fn every_endpoint_that_takes_a_body_answers_every_depth_and_refuses_one_past_the_limit() {
    let server = TestServer::start().await;
    // An admin, so that the admin API's handlers read the bodies too.
    let alice = Client::register_with_secret(&server.base_url, SHARED_SECRET, "alice", "pw", true).await;
    let me = alice.user_id().to_owned();
    let room = alice.create_room(json!({})).await;
    let event = alice.send_text(&room, "t0", "target").await;
    // Each body puts `deep` (nested as given) one level inside its own object.
    let endpoints: Vec<(Method, String, BodyAround)> = vec![
        (Method::POST, format!("{V3}/createRoom"), |deep| json!({"creation_content": deep})),
        (
            Method::POST,
            SLIDING.to_owned(),
            |deep| json!({"lists": {"l": {"ranges": [[0, 1]], "timeline_limit": 1, "x": deep}}}),
        ),
        (Method::POST, format!("{V3}/keys/upload"), |deep| json!({"one_time_keys": deep})),
        (Method::POST, format!("{V3}/keys/device_signing/upload"), |deep| json!({"master_key": deep})),
        (
            Method::PUT,
            format!("{V3}/pushrules/global/override/org.example.rule"),
            |deep| json!({"actions": ["notify"], "conditions": [], "x": deep}),
        ),
        (Method::POST, format!("{V3}/rooms/{room}/report/{event}"), |deep| json!({"reason": "r", "x": deep})),
        (
            Method::POST,
            format!("{V3}/rooms/{room}/read_markers"),
            |deep| json!({"m.fully_read": event_placeholder(), "x": deep}),
        ),
        (
            Method::PUT,
            format!("{V3}/rooms/{room}/typing/{me}"),
            |deep| json!({"typing": true, "timeout": 1000, "x": deep}),
        ),
        (
            Method::POST,
            format!("{V3}/room_keys/version"),
            |deep| json!({"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": deep}),
        ),
        (Method::PUT, format!("{V3}/presence/{me}/status"), |deep| json!({"presence": "online", "x": deep})),
        (Method::POST, format!("{V3}/pushers/set"), |deep| {
            json!({"kind": "http", "app_id": "a", "pushkey": "k", "app_display_name": "A",
                "device_display_name": "D", "lang": "en",
                "data": {"url": "http://127.0.0.1:9/_matrix/push/v1/notify", "x": deep}})
        }),
        (
            Method::PUT,
            format!("{V3}/user/{me}/rooms/{room}/tags/u.deep"),
            |deep| json!({"order": 0.5, "x": deep}),
        ),
        (
            Method::PUT,
            format!("{V3}/profile/{me}/org.example.deep"),
            |deep| json!({ "org.example.deep": deep }),
        ),
        (Method::POST, format!("{V3}/rooms/{room}/report"), |deep| json!({"reason": "r", "x": deep})),
        (Method::POST, format!("{V3}/users/{me}/report"), |deep| json!({"reason": "r", "x": deep})),
        (Method::POST, format!("{V3}/user/{me}/openid/request_token"), |deep| json!({ "x": deep })),
        (Method::POST, format!("{V3}/user_directory/search"), |deep| json!({"search_term": "a", "x": deep})),
        (Method::POST, format!("{V3}/search"), |deep| json!({"search_categories": {}, "x": deep})),
        (
            Method::PUT,
            format!("{V3}/rooms/{room}/send/m.room.message/delayed?org.matrix.msc4140.delay=60000"),
            |deep| json!({ "x": deep }),
        ),
        (
            Method::POST,
            "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/nosuchid".to_owned(),
            |deep| json!({"action": "send", "x": deep}),
        ),
        (
            Method::PUT,
            format!("{V3}/directory/room/%23deep:localhost"),
            |deep| json!({"room_id": "!r:localhost", "x": deep}),
        ),
        (Method::POST, "/_matrix/client/v1/appservice/mau/ping".to_owned(), |deep| json!({ "x": deep })),
        (
            Method::PUT,
            format!("{V3}/directory/list/appservice/net/{room}"),
            |deep| json!({"visibility": "public", "x": deep}),
        ),
        (
            Method::POST,
            format!("{V3}/register"),
            |deep| json!({"type": "m.login.application_service", "username": "mau_x", "x": deep}),
        ),
        (
            Method::PUT,
            format!("{ADMIN}/v2/users/@carol:localhost"),
            |deep| json!({"displayname": "C", "x": deep}),
        ),
        (Method::POST, format!("{ADMIN}/v1/registration_tokens/new"), |deep| json!({ "x": deep })),
        (Method::POST, format!("{ADMIN}/v1/users/{me}/override_ratelimit"), |deep| json!({ "x": deep })),
        (Method::PUT, format!("{ADMIN}/v1/rooms/{room}/block"), |deep| json!({"block": false, "x": deep})),
        (
            Method::POST,
            format!("{ADMIN}/v1/send_server_notice"),
            |deep| json!({"user_id": "@alice:localhost", "content": {"body": "n", "x": deep}}),
        ),
    ];
    for (method, path, body) in endpoints {
        for levels in 1..=LIMIT + 1 {
            let reply = alice.request(method.clone(), &path, Some(body(nest(levels - 1)))).await;
            if levels > LIMIT {
                assert_eq!(reply.status.as_u16(), 400, "{method} {path}: {}", reply.body);
                assert_eq!(reply.errcode(), "M_BAD_JSON", "{method} {path}");
            } else {
                assert!(reply.status.as_u16() < 500, "{method} {path} at the limit: {}", reply.body);
            }
        }
    }
}

/// A syntactically valid event ID for bodies that need one.
fn event_placeholder() -> Value {
    json!("$placeholder")
}

#[tokio::test]
async fn at_every_depth_up_to_the_limit_what_is_accepted_reads_back() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let me = alice.user_id().to_owned();
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    // State in a room of its own, so that the messages' room holds fewer events than a page.
    let state_room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{state_room}"), json!({})).await.assert_ok();

    let (bob_id, bob_device) = (bob.user_id().to_owned(), bob.device_id.clone().unwrap());
    let bob_since = bob.since_now().await;
    let mut sent = Vec::new();
    for levels in 1..=LIMIT + 1 {
        let path = format!("{V3}/rooms/{room}/send/m.room.message/every{levels}");
        let reply = alice.put(&path, message(levels)).await;
        assert_accepted_or_refused(&reply, levels, "a message");
        let content = if levels == 1 { json!({}) } else { json!({"d": nest(levels - 1)}) };
        let path = format!("{V3}/user/{me}/rooms/{room}/account_data/org.example.every{levels}");
        assert_accepted_or_refused(&alice.put(&path, content.clone()).await, levels, "room account data");
        let path = format!("{V3}/user/{me}/account_data/org.example.every{levels}");
        assert_accepted_or_refused(&alice.put(&path, content.clone()).await, levels, "account data");
        let path = format!("{V3}/rooms/{state_room}/state/org.example.every/k{levels}");
        assert_accepted_or_refused(&alice.put(&path, content).await, levels, "a state event");
        // messages -> user -> device -> content: the body is at least four deep.
        if levels >= 4 {
            let content = if levels == 4 { json!({}) } else { json!({"d": nest(levels - 4)}) };
            let body = json!({"messages": {bob_id.clone(): {bob_device.clone(): content}}});
            let path = format!("{V3}/sendToDevice/org.example.every/t{levels}");
            assert_accepted_or_refused(&alice.put(&path, body).await, levels, "a to-device message");
        }
        if levels <= LIMIT {
            sent.push((levels, reply.body["event_id"].as_str().unwrap().to_owned()));
        }
    }
    let expected = |levels: usize| if levels == 1 { json!({}) } else { json!({"d": nest(levels - 1)}) };

    // {"room":{"timeline":{"limit":100}}}
    let filter = "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A100%7D%7D%7D";
    let sync = bob.get(&format!("{V3}/sync?timeout=0&filter={filter}")).await;
    let timeline = timeline_events(sync.assert_ok(), &room);
    let page = bob.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=100")).await;
    let chunk = page.assert_ok()["chunk"].as_array().unwrap().clone();
    for (levels, id) in &sent {
        for (path, events) in [("/sync", &timeline), ("/messages", &chunk)] {
            let event = events.iter().find(|e| e["event_id"] == json!(id));
            assert_eq!(event.map(|e| &e["content"]), Some(&message(*levels)), "depth {levels} in {path}");
        }
    }
    // Sliding sync serves the same events and account data.
    let body = json!({"lists": {"all": {"ranges": [[0, 9]], "timeline_limit": 100, "required_state": []}},
        "extensions": {"account_data": {"enabled": true}}});
    let sliding = bob.post(SLIDING, body.clone()).await;
    let sliding_timeline = sliding.assert_ok()["rooms"][&room]["timeline"].as_array().unwrap().clone();
    for (levels, id) in &sent {
        let event = sliding_timeline.iter().find(|e| e["event_id"] == json!(id));
        assert_eq!(event.map(|e| &e["content"]), Some(&message(*levels)), "depth {levels} in sliding sync");
    }
    let sliding = alice.post(SLIDING, body).await;
    let sliding = sliding.assert_ok();
    let sliding_global = sliding["extensions"]["account_data"]["global"].as_array().unwrap().clone();
    let sliding_room = sliding["extensions"]["account_data"]["rooms"][&room].as_array().unwrap().clone();
    for levels in 1..=LIMIT {
        let kind = format!("org.example.every{levels}");
        for (place, events) in [("room", &sliding_room), ("global", &sliding_global)] {
            let event = events.iter().find(|e| e["type"] == json!(kind));
            assert_eq!(
                event.map(|e| &e["content"]),
                Some(&expected(levels)),
                "{place} {kind} in sliding sync"
            );
        }
    }

    let sync = alice.get(&format!("{V3}/sync?timeout=0")).await;
    let sync = sync.assert_ok();
    let in_room = sync["rooms"]["join"][&room]["account_data"]["events"].as_array().unwrap().clone();
    let global = sync["account_data"]["events"].as_array().unwrap().clone();
    for levels in 1..=LIMIT {
        let kind = format!("org.example.every{levels}");
        for (place, events) in [("room", &in_room), ("global", &global)] {
            let event = events.iter().find(|e| e["type"] == json!(kind));
            assert_eq!(event.map(|e| &e["content"]), Some(&expected(levels)), "{place} {kind} in /sync");
        }
    }

    // State: the whole state, each event alone, and the state a new member's /sync carries.
    let state = bob.get(&format!("{V3}/rooms/{state_room}/state")).await;
    let state = state.assert_ok().as_array().unwrap().clone();
    let carol = Client::register(&server.base_url, "carol", "pw").await;
    carol.post(&format!("{V3}/join/{state_room}"), json!({})).await.assert_ok();
    let first = carol.get(&format!("{V3}/sync?timeout=0")).await;
    let first = first.assert_ok();
    let mut joined =
        first["rooms"]["join"][&state_room]["state"]["events"].as_array().cloned().unwrap_or_default();
    joined.extend(timeline_events(first, &state_room));
    for levels in 1..=LIMIT {
        let key = format!("k{levels}");
        let event = state.iter().find(|e| e["type"] == "org.example.every" && e["state_key"] == json!(key));
        assert_eq!(event.map(|e| &e["content"]), Some(&expected(levels)), "state {key} in /state");
        let one = bob.get(&format!("{V3}/rooms/{state_room}/state/org.example.every/{key}")).await;
        assert_eq!(one.assert_ok(), &expected(levels), "state {key} alone");
        let event = joined.iter().find(|e| e["type"] == "org.example.every" && e["state_key"] == json!(key));
        assert_eq!(event.map(|e| &e["content"]), Some(&expected(levels)), "state {key} in a joiner's /sync");
    }

    // The recipient's /sync carries every accepted to-device message.
    let accepted = LIMIT - 3;
    let mut since = bob_since;
    let mut received = Vec::new();
    for _ in 0..20 {
        let sync = bob.get(&format!("{V3}/sync?timeout=1000&since={since}")).await;
        let sync = sync.assert_ok();
        received.extend(sync["to_device"]["events"].as_array().cloned().unwrap_or_default());
        since = sync["next_batch"].as_str().unwrap().to_owned();
        if received.len() >= accepted {
            break;
        }
    }
    assert_eq!(received.len(), accepted, "to-device messages received");
    for levels in 4..=LIMIT {
        let content = if levels == 4 { json!({}) } else { json!({"d": nest(levels - 4)}) };
        assert!(received.iter().any(|e| e["content"] == content), "to-device at depth {levels}");
    }
}

#[tokio::test]
async fn at_every_depth_what_is_accepted_reaches_the_other_server() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{room}?via=hs-a.test"), json!({})).await.assert_ok();

    let mut sent = Vec::new();
    for levels in 1..=LIMIT + 1 {
        let reply =
            alice.put(&format!("{V3}/rooms/{room}/send/m.room.message/f{levels}"), message(levels)).await;
        assert_accepted_or_refused(&reply, levels, "a message");
        let state = if levels == 1 { json!({}) } else { json!({"d": nest(levels - 1)}) };
        let path = format!("{V3}/rooms/{room}/state/org.example.fed/k{levels}");
        assert_accepted_or_refused(&alice.put(&path, state).await, levels, "a state event");
        if levels <= LIMIT {
            sent.push((levels, reply.body["event_id"].as_str().unwrap().to_owned()));
        }
    }
    alice.send_text(&room, "last", "after every depth").await;
    bob.wait_for_bodies(&room, &["after every depth"]).await;

    let page = bob.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=200")).await;
    let chunk = page.assert_ok()["chunk"].as_array().unwrap().clone();
    for (levels, id) in &sent {
        let event = chunk.iter().find(|e| e["event_id"] == json!(id));
        assert_eq!(
            event.map(|e| &e["content"]),
            Some(&message(*levels)),
            "depth {levels} on the other server"
        );
    }
    let state = bob.get(&format!("{V3}/rooms/{room}/state")).await;
    let state = state.assert_ok().as_array().unwrap().clone();
    for levels in 1..=LIMIT {
        let key = format!("k{levels}");
        assert!(
            state.iter().any(|e| e["type"] == "org.example.fed" && e["state_key"] == json!(key)),
            "state at depth {levels} on the other server"
        );
    }
}

#[tokio::test]
async fn federation_bodies_are_held_to_the_limit_too() {
    let mut servers = TestServer::start_federation(&["hs-a.test"], |_| {}).await;
    let a = servers.pop().unwrap();
    let fed = a.config.listen.federation.unwrap();
    let https = hearth_conformance_tests::insecure_https();
    // A federation body may carry one PDU (the client limit + 1) inside its own object and
    // one more level: 67 in all.
    for (levels, status) in [(67, 200), (68, 400)] {
        let body = json!({"server_keys": {}, "x": nest(levels - 1)});
        let reply =
            https.post(format!("https://{fed}/_matrix/key/v2/query")).json(&body).send().await.unwrap();
        assert_eq!(reply.status().as_u16(), status, "depth {levels}");
        if status == 400 {
            let error: Value = reply.json().await.unwrap();
            assert_eq!(error["errcode"], "M_BAD_JSON");
        }
    }
}

/// Bodies no client should send, as raw bytes: each must get a Matrix error (or, where the
/// bytes happen to be acceptable JSON, an ordinary answer), never a 5xx or a hang.
fn malformed_bodies() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("invalid UTF-8", b"{\"body\":\"\xff\xfe\"}".to_vec()),
        ("a byte-order mark", "\u{feff}{\"body\":\"x\"}".as_bytes().to_vec()),
        ("a raw NUL", b"{\"body\":\"a\0b\"}".to_vec()),
        ("an escaped NUL", br#"{"body":"a\u0000b","msgtype":"m.text"}"#.to_vec()),
        ("a lone surrogate", br#"{"body":"\ud800"}"#.to_vec()),
        ("a lone trailing surrogate", br#"{"body":"\udc00x"}"#.to_vec()),
        ("duplicate keys", br#"{"body":"a","body":"b","msgtype":"m.text","msgtype":1}"#.to_vec()),
        ("a number out of range", br#"{"body":"x","n":1e400}"#.to_vec()),
        ("a huge integer", br#"{"body":"x","n":123456789012345678901234567890}"#.to_vec()),
        ("a float", br#"{"body":"x","n":1.5}"#.to_vec()),
        ("an array", b"[]".to_vec()),
        ("a number", b"1".to_vec()),
        ("a string", b"\"body\"".to_vec()),
        ("null", b"null".to_vec()),
        ("nothing", Vec::new()),
        ("not JSON at all", b"not json at all".to_vec()),
        (
            "fields of the wrong types",
            br#"{"type": {}, "user_id": [], "room_id": 5, "content": null}"#.to_vec(),
        ),
        ("truncated JSON", b"{\"body\":".to_vec()),
        ("trailing garbage", b"{} {}".to_vec()),
        (
            "one past the nesting limit",
            format!("{}0{}", "[".repeat(LIMIT + 1), "]".repeat(LIMIT + 1)).into_bytes(),
        ),
        (
            "nested far past any limit",
            format!("{}0{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        ),
    ]
}

#[tokio::test]
async fn malformed_bodies_get_matrix_errors_on_every_endpoint_that_takes_one() {
    let server = TestServer::start().await;
    let alice = Client::register_with_secret(&server.base_url, SHARED_SECRET, "alice", "pw", true).await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let (me, bob_id) = (alice.user_id().to_owned(), bob.user_id().to_owned());
    let device = alice.device_id.clone().unwrap();
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let event = alice.send_text(&room, "t0", "target").await;
    let t = |n: usize| format!("txn{n}");
    let endpoints: Vec<(Method, String)> = vec![
        (Method::POST, format!("{V3}/register")),
        (Method::POST, format!("{V3}/login")),
        (Method::POST, format!("{V3}/refresh")),
        (Method::POST, format!("{V3}/account/password")),
        (Method::POST, format!("{V3}/account/deactivate")),
        (Method::POST, format!("{V3}/createRoom")),
        (Method::PUT, format!("{V3}/rooms/{room}/send/m.room.message/TXN")),
        (Method::PUT, format!("{V3}/rooms/{room}/send/m.room.message/TXN?org.matrix.msc4140.delay=60000")),
        (Method::POST, format!("{V3}/search")),
        (Method::POST, SLIDING.to_owned()),
        (Method::POST, "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/nosuchid".to_owned()),
        (Method::PUT, format!("{V3}/rooms/{room}/state/org.example.k/k")),
        (Method::PUT, format!("{V3}/rooms/{room}/state/m.room.power_levels/")),
        (Method::PUT, format!("{V3}/rooms/{room}/redact/{event}/TXN")),
        (Method::POST, format!("{V3}/rooms/{room}/invite")),
        (Method::POST, format!("{V3}/rooms/{room}/kick")),
        (Method::POST, format!("{V3}/rooms/{room}/ban")),
        (Method::POST, format!("{V3}/rooms/{room}/unban")),
        (Method::POST, format!("{V3}/rooms/{room}/upgrade")),
        (Method::POST, format!("{V3}/rooms/{room}/receipt/m.read/{event}")),
        (Method::POST, format!("{V3}/rooms/{room}/read_markers")),
        (Method::PUT, format!("{V3}/rooms/{room}/typing/{me}")),
        (Method::POST, format!("{V3}/rooms/{room}/report/{event}")),
        (Method::POST, format!("{V3}/rooms/{room}/report")),
        (Method::POST, format!("{V3}/users/{me}/report")),
        (Method::POST, format!("{V3}/user/{me}/openid/request_token")),
        (Method::PUT, format!("{V3}/profile/{me}/org.example.field")),
        (Method::POST, format!("{V3}/account/3pid/delete")),
        (Method::POST, format!("{V3}/join/{room}")),
        (Method::POST, format!("{V3}/knock/{room}")),
        (Method::PUT, format!("{V3}/user/{me}/account_data/org.example.k")),
        (Method::PUT, format!("{V3}/user/{me}/rooms/{room}/account_data/org.example.k")),
        (Method::PUT, format!("{V3}/user/{me}/rooms/{room}/tags/u.work")),
        (Method::POST, format!("{V3}/user/{me}/filter")),
        (Method::PUT, format!("{V3}/profile/{me}/displayname")),
        (Method::PUT, format!("{V3}/profile/{me}/avatar_url")),
        (Method::PUT, format!("{V3}/sendToDevice/org.example.k/TXN")),
        (Method::POST, format!("{V3}/keys/upload")),
        (Method::POST, format!("{V3}/keys/query")),
        (Method::POST, format!("{V3}/keys/claim")),
        (Method::POST, format!("{V3}/keys/device_signing/upload")),
        (Method::POST, format!("{V3}/keys/signatures/upload")),
        (Method::POST, format!("{V3}/room_keys/version")),
        (Method::PUT, format!("{V3}/room_keys/keys?version=1")),
        (Method::PUT, format!("{V3}/pushrules/global/override/org.example.rule")),
        (Method::PUT, format!("{V3}/pushrules/global/override/org.example.rule/enabled")),
        (Method::POST, format!("{V3}/pushers/set")),
        (Method::PUT, format!("{V3}/presence/{me}/status")),
        (Method::POST, format!("{V3}/user_directory/search")),
        (Method::PUT, format!("{V3}/directory/room/%23malformed:localhost")),
        (Method::PUT, format!("{V3}/directory/list/room/{room}")),
        (Method::POST, format!("{V3}/publicRooms")),
        (Method::PUT, format!("{V3}/devices/{device}")),
        (Method::POST, format!("{V3}/delete_devices")),
        (Method::POST, format!("{V3}/user/{bob_id}/openid/request_token")),
        (Method::POST, "/_matrix/client/v1/register/m.login.registration_token/validity".to_owned()),
        (Method::PUT, format!("{V3}/rooms/{room}/state/m.room.name")),
        (Method::PUT, format!("{V3}/room_keys/version/1")),
        (Method::PUT, format!("{V3}/room_keys/keys/{room}?version=1")),
        (Method::PUT, format!("{V3}/room_keys/keys/{room}/s?version=1")),
        (Method::PUT, format!("{V3}/pushrules/global/room/{room}")),
        (Method::PUT, format!("{V3}/pushrules/global/override/.m.rule.master/actions")),
        (Method::POST, format!("{V3}/rooms/{room}/join")),
        (Method::POST, "/_synapse/admin/v1/register".to_owned()),
        (Method::POST, "/_matrix/client/v1/appservice/mau/ping".to_owned()),
        (Method::PUT, format!("{V3}/directory/list/appservice/net/{room}")),
        (Method::PUT, format!("{ADMIN}/v2/users/@carol:localhost")),
        (Method::POST, format!("{ADMIN}/v1/reset_password/{bob_id}")),
        (Method::POST, format!("{ADMIN}/v1/deactivate/@nobody:localhost")),
        (Method::POST, format!("{ADMIN}/v2/users/{bob_id}/delete_devices")),
        (Method::PUT, format!("{ADMIN}/v1/users/{bob_id}/admin")),
        (Method::POST, format!("{ADMIN}/v1/users/{bob_id}/override_ratelimit")),
        (Method::PUT, format!("{ADMIN}/v1/rooms/{room}/block")),
        (Method::DELETE, format!("{ADMIN}/v2/rooms/!gone:localhost")),
        (Method::POST, format!("{ADMIN}/v1/registration_tokens/new")),
        (Method::PUT, format!("{ADMIN}/v1/registration_tokens/none")),
        (Method::POST, format!("{ADMIN}/v1/send_server_notice")),
    ];
    let mut txn = 0;
    for (method, path) in &endpoints {
        for (what, bytes) in malformed_bodies() {
            txn += 1;
            let path = path.replace("TXN", &t(txn));
            let request = alice
                .http
                .request(method.clone(), format!("{}{path}", server.base_url))
                .bearer_auth(alice.access_token.as_deref().unwrap())
                .header("content-type", "application/json")
                .body(bytes);
            let reply = tokio::time::timeout(std::time::Duration::from_secs(10), request.send())
                .await
                .unwrap_or_else(|_| panic!("{method} {path} with {what}: no answer in 10 s"))
                .expect("request sent");
            let reply = Client::reply(reply).await;
            assert!(
                reply.status.as_u16() < 500,
                "{method} {path} with {what}: {} {}",
                reply.status,
                reply.body
            );
            // A user-interactive auth challenge (401 with flows) is an answer, not an error.
            let challenge = reply.status.as_u16() == 401 && reply.body.get("flows").is_some();
            if reply.status.is_client_error() && !challenge {
                assert!(reply.errcode().starts_with("M_"), "{method} {path} with {what}: {}", reply.body);
            }
        }
        // The right body under the wrong content type (Synapse reads the body regardless).
        for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"] {
            txn += 1;
            let path = path.replace("TXN", &t(txn));
            let request = bob
                .http
                .request(method.clone(), format!("{}{path}", server.base_url))
                .bearer_auth(bob.access_token.as_deref().unwrap())
                .header("content-type", content_type)
                .body("{}");
            let reply = Client::reply(request.send().await.expect("request sent")).await;
            assert!(reply.status.as_u16() < 500, "{method} {path} as {content_type}: {}", reply.body);
        }
    }
    // Everyone still reads the room.
    for client in [&alice, &bob] {
        client.get(&format!("{V3}/sync?timeout=0")).await.assert_ok();
        client.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=50")).await.assert_ok();
    }
}

/// What the pusher and profile-field endpoints accept at the deepest allowed nesting reads back
/// whole: a pusher's data (from /pushers and at the push gateway), a profile field.
#[tokio::test]
async fn deep_pushers_and_profile_fields_read_back() {
    let gateway = hearth_conformance_tests::push_gateway::PushGateway::start().await;
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let me = alice.user_id().to_owned();
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    // Each body nests exactly LIMIT deep, the most the server accepts.
    let deep = nest(LIMIT - 2);
    let pusher = json!({"kind": "http", "app_id": "a", "pushkey": "k", "app_display_name": "A",
        "device_display_name": "D", "lang": "en", "data": {"url": gateway.url, "x": deep}});
    assert_eq!(depth(&pusher), LIMIT);
    alice.post(&format!("{V3}/pushers/set"), pusher).await.assert_ok();
    let listed = alice.get(&format!("{V3}/pushers")).await;
    assert_eq!(listed.assert_ok()["pushers"][0]["data"]["x"], deep);
    bob.send_text(&room, "m", "hello").await;
    let received = gateway.wait_for(1, std::time::Duration::from_secs(10)).await;
    assert_eq!(received[0]["devices"][0]["data"]["x"], deep, "{received:?}");

    let field = nest(LIMIT - 1);
    assert_eq!(depth(&json!({ "org.example.deep": field })), LIMIT);
    alice
        .put(&format!("{V3}/profile/{me}/org.example.deep"), json!({ "org.example.deep": field }))
        .await
        .assert_ok();
    let read = bob.get(&format!("{V3}/profile/{me}/org.example.deep")).await;
    assert_eq!(read.assert_ok()["org.example.deep"], field);
    assert_eq!(bob.get(&format!("{V3}/profile/{me}")).await.assert_ok()["org.example.deep"], field);
}
