//! Client-Server API details clients depend on: transaction scope, event sizes and visibility,
//! member lists, push rules, aliases, invites, room creation and device keys.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

fn message(body: &str) -> Value {
    json!({"msgtype": "m.text", "body": body})
}

#[tokio::test]
async fn transaction_ids_are_scoped_to_device_and_endpoint() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let (room1, room2) = (alice.create_room(json!({})).await, alice.create_room(json!({})).await);
    let send = |room: &str, kind: &str| format!("{V3}/rooms/{room}/send/{kind}/abc");
    let first = alice.put(&send(&room1, "m.room.message"), message("first")).await;
    let first = first.assert_ok()["event_id"].clone();
    // A retry, even with other content, is the same request.
    let again = alice.put(&send(&room1, "m.room.message"), message("second")).await;
    assert_eq!(again.assert_ok()["event_id"], first);
    // The same ID in another room, or for another event type, is another request.
    let other_room = alice.put(&send(&room2, "m.room.message"), message("first")).await;
    assert_ne!(other_room.assert_ok()["event_id"], first);
    let other_type = alice.put(&send(&room1, "m.custom"), json!({"x": 1})).await;
    assert_ne!(other_type.assert_ok()["event_id"], first);
    // And so is a redaction with that ID.
    let event = first.as_str().unwrap();
    let redaction = alice.put(&format!("{V3}/rooms/{room1}/redact/{event}/abc"), json!({})).await;
    assert_ne!(redaction.assert_ok()["event_id"], first);
    // Another device of the same user has its own transactions.
    let laptop = Client::login(&server.base_url, "alice", "pw").await;
    let from_laptop = laptop.put(&send(&room1, "m.room.message"), message("laptop")).await;
    assert_ne!(from_laptop.assert_ok()["event_id"], first);
}

#[tokio::test]
async fn events_of_unreadable_rooms_do_not_exist() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "private_chat"})).await;
    let event = alice.send_text(&room, "t1", "secret").await;
    bob.get(&format!("{V3}/rooms/{room}/event/{event}")).await.assert_error(404, "M_NOT_FOUND");
    bob.get(&format!("{V3}/rooms/{room}/event/$nope")).await.assert_error(404, "M_NOT_FOUND");
    alice.get(&format!("{V3}/rooms/{room}/event/{event}")).await.assert_ok();
}

#[tokio::test]
async fn events_are_limited_to_the_pdu_size() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({})).await;
    let big = "and they dont stop coming ".repeat(2700);
    let reply = alice.put(&format!("{V3}/rooms/{room}/send/m.room.message/big"), message(&big)).await;
    reply.assert_error(413, "M_TOO_LARGE");
    let state = json!({"body": "Dormammu, I've Come To Bargain.\n".repeat(2200)});
    let reply = alice.put(&format!("{V3}/rooms/{room}/state/marvel.universe.fate"), state).await;
    reply.assert_error(413, "M_TOO_LARGE");
    // Just under the limit is accepted and readable back.
    let fits = "x".repeat(60_000);
    let reply = alice.put(&format!("{V3}/rooms/{room}/send/m.room.message/fits"), message(&fits)).await;
    let event = reply.assert_ok()["event_id"].as_str().unwrap().to_owned();
    let read = alice.get(&format!("{V3}/rooms/{room}/event/{event}")).await;
    assert_eq!(read.assert_ok()["content"]["body"].as_str().map(str::len), Some(60_000));
}

#[tokio::test]
async fn joined_members_always_show_name_and_avatar() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({})).await;
    let reply = alice.get(&format!("{V3}/rooms/{room}/joined_members")).await;
    let me = &reply.assert_ok()["joined"]["@alice:localhost"];
    assert_eq!(me["display_name"], "alice");
    assert!(me.as_object().unwrap().contains_key("avatar_url"), "{me}");
    assert!(me["avatar_url"].is_null());
}

#[tokio::test]
async fn push_rules_show_every_kind() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let kinds = ["override", "content", "room", "sender", "underride"];
    let sync = alice.get(&format!("{V3}/sync")).await;
    let events = sync.assert_ok()["account_data"]["events"].as_array().unwrap().clone();
    let rules = events.iter().find(|e| e["type"] == "m.push_rules").expect("push rules in initial sync");
    for kind in kinds {
        assert!(rules["content"]["global"][kind].is_array(), "{kind} in {rules}");
    }
    let all = alice.get(&format!("{V3}/pushrules/")).await;
    for kind in kinds {
        assert!(all.assert_ok()["global"][kind].is_array(), "{kind} in {}", all.body);
    }
    // After a change, stored rules keep every kind too.
    let path = format!("{V3}/pushrules/global/room/!foo:example.com");
    alice.put(&path, json!({"actions": ["notify"]})).await.assert_ok();
    let global = alice.get(&format!("{V3}/pushrules/global/")).await;
    assert_eq!(global.assert_ok()["room"][0]["rule_id"], "!foo:example.com");
    assert!(global.body["sender"].is_array(), "{}", global.body);
    let sync = alice.get(&format!("{V3}/sync")).await;
    let events = sync.assert_ok()["account_data"]["events"].as_array().unwrap().clone();
    let rules = events.iter().find(|e| e["type"] == "m.push_rules").unwrap();
    assert!(rules["content"]["global"]["sender"].is_array(), "{rules}");
}

#[tokio::test]
async fn aliases_follow_the_spec() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let other = alice.create_room(json!({})).await;
    let alias = |name: &str| format!("{V3}/directory/room/%23{name}:localhost");
    alice.put(&alias("a"), json!({"room_id": room})).await.assert_ok();
    alice.put(&alias("a"), json!({"room_id": room})).await.assert_error(409, "M_UNKNOWN");
    alice.put(&alias("elsewhere"), json!({"room_id": other})).await.assert_ok();

    let canonical = format!("{V3}/rooms/{room}/state/m.room.canonical_alias");
    let set = |alias: &str, alt: Option<Vec<&str>>| {
        let mut content = json!({"alias": alias});
        if let Some(alt) = alt {
            content["alt_aliases"] = json!(alt);
        }
        alice.put(&canonical, content)
    };
    set("#missing:localhost", None).await.assert_error(400, "M_BAD_ALIAS");
    set("%invalid:localhost", None).await.assert_error(400, "M_INVALID_PARAM");
    set("#elsewhere:localhost", None).await.assert_error(400, "M_BAD_ALIAS");
    set("#a:localhost", Some(vec!["#missing:localhost"])).await.assert_error(400, "M_BAD_ALIAS");
    set("#a:localhost", Some(vec!["%bad:localhost"])).await.assert_error(400, "M_INVALID_PARAM");
    set("#a:localhost", Some(vec!["#a:localhost"])).await.assert_ok();

    // Deleting the canonical alias takes it out of the room's canonical alias event.
    alice.request(reqwest::Method::DELETE, &alias("a"), None).await.assert_ok();
    let state = alice.get(&canonical).await;
    assert_eq!(state.assert_ok(), &json!({}));
    alice.request(reqwest::Method::DELETE, &alias("a"), None).await.assert_error(404, "M_NOT_FOUND");

    // A member without power deletes the alias they made, but not another's.
    bob.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
    bob.put(&alias("bobs"), json!({"room_id": room})).await.assert_ok();
    alice.put(&alias("alices"), json!({"room_id": room})).await.assert_ok();
    set("#bobs:localhost", None).await.assert_ok();
    bob.request(reqwest::Method::DELETE, &alias("alices"), None).await.assert_error(403, "M_FORBIDDEN");
    bob.request(reqwest::Method::DELETE, &alias("bobs"), None).await.assert_ok();
    server.client().get(&alias("bobs")).await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn invites_carry_the_invitees_profile() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let profile = format!("{V3}/profile/@bob:localhost");
    bob.put(&format!("{profile}/displayname"), json!({"displayname": "Bob"})).await.assert_ok();
    bob.put(&format!("{profile}/avatar_url"), json!({"avatar_url": "mxc://localhost/bob"})).await.assert_ok();
    let room = alice.create_room(json!({})).await;
    alice.post(&format!("{V3}/rooms/{room}/invite"), json!({"user_id": "@bob:localhost"})).await.assert_ok();
    let invited = json!({"membership": "invite", "displayname": "Bob", "avatar_url": "mxc://localhost/bob"});
    let member = alice.get(&format!("{V3}/rooms/{room}/state/m.room.member/@bob:localhost")).await;
    assert_eq!(member.assert_ok(), &invited);
    // So does the invite of a direct chat, made with the room.
    let dm = alice.create_room(json!({"invite": ["@bob:localhost"], "is_direct": true})).await;
    let member = alice.get(&format!("{V3}/rooms/{dm}/state/m.room.member/@bob:localhost")).await;
    let mut direct = invited;
    direct["is_direct"] = json!(true);
    assert_eq!(member.assert_ok(), &direct);
}

#[tokio::test]
async fn room_creation_topics_and_repeated_state() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let topic_of = |room: String| {
        let alice = alice.clone();
        async move { alice.get(&format!("{V3}/rooms/{room}/state/m.room.topic")).await.assert_ok().clone() }
    };
    // The rich form (spec v1.15): one plain-text block, whose mimetype defaults to text/plain.
    let is_rich = |content: &Value| {
        let blocks = content["m.topic"]["m.text"].as_array().unwrap();
        content["topic"] == "Test Room"
            && blocks.len() == 1
            && blocks[0]["body"] == "Test Room"
            && (blocks[0].get("mimetype").is_none() || blocks[0]["mimetype"] == "text/plain")
    };
    let room = alice.create_room(json!({"topic": "Test Room"})).await;
    let content = topic_of(room).await;
    assert!(is_rich(&content), "{content}");
    let initial = json!([{"type": "m.room.topic", "state_key": "", "content": {"topic": "Shenanigans"}}]);
    let room = alice.create_room(json!({"topic": "Test Room", "initial_state": initial})).await;
    let content = topic_of(room).await;
    assert!(is_rich(&content), "{content}");
    let room = alice.create_room(json!({"initial_state": initial})).await;
    assert_eq!(topic_of(room.clone()).await, json!({"topic": "Shenanigans"}));

    let path = format!("{V3}/rooms/{room}/state/a.test.state.type");
    let first = alice.put(&path, json!({"a_key": "a_value"})).await.assert_ok()["event_id"].clone();
    let second = alice.put(&path, json!({"a_key": "a_value"})).await.assert_ok()["event_id"].clone();
    assert_eq!(first, second);
    let changed = alice.put(&path, json!({"a_key": "other"})).await.assert_ok()["event_id"].clone();
    assert_ne!(changed, first);
}

#[tokio::test]
async fn key_query_leaves_out_a_missing_device_name() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let device = alice.device_id.clone().unwrap();
    alice.put(&format!("{V3}/devices/{device}"), json!({"display_name": "phone"})).await.assert_ok();
    alice.post(&format!("{V3}/keys/upload"), json!({"device_keys": alice.device_keys()})).await.assert_ok();
    let query = json!({"device_keys": {"@alice:localhost": []}});
    let keys = alice.post(&format!("{V3}/keys/query"), query.clone()).await;
    let unsigned = &keys.assert_ok()["device_keys"]["@alice:localhost"][&device]["unsigned"];
    assert_eq!(unsigned, &json!({"device_display_name": "phone"}));

    let other = Client::login(&server.base_url, "alice", "pw").await;
    let other_device = other.device_id.clone().unwrap();
    other.post(&format!("{V3}/keys/upload"), json!({"device_keys": other.device_keys()})).await.assert_ok();
    let keys = alice.post(&format!("{V3}/keys/query"), query).await;
    let unsigned = &keys.assert_ok()["device_keys"]["@alice:localhost"][&other_device]["unsigned"];
    assert_eq!(unsigned, &json!({}), "{}", keys.body);
}

#[tokio::test]
async fn device_keys_must_be_complete() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let bare =
        json!({"device_keys": {"user_id": bob.user_id(), "device_id": bob.device_id.clone().unwrap()}});
    bob.post(&format!("{V3}/keys/upload"), bare).await.assert_error(400, "M_BAD_JSON");
    let mut theirs = alice.device_keys();
    theirs["user_id"] = json!(bob.user_id());
    let reply = bob.post(&format!("{V3}/keys/upload"), json!({"device_keys": theirs})).await;
    assert_eq!(reply.status.as_u16(), 400, "{}", reply.body);
    bob.post(&format!("{V3}/keys/upload"), json!({"device_keys": bob.device_keys()})).await.assert_ok();
}

#[tokio::test]
async fn a_device_is_not_deleted_with_another_users_password() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "alicepw").await;
    Client::register(&server.base_url, "bob", "bobspassword").await;
    let second = Client::login(&server.base_url, "alice", "alicepw").await;
    let device = second.device_id.clone().unwrap();
    let path = format!("{V3}/devices/{device}");
    let as_bob = json!({"auth": {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "@bob:localhost"},
        "password": "bobspassword",
    }});
    alice.request(reqwest::Method::DELETE, &path, Some(as_bob)).await.assert_error(403, "M_FORBIDDEN");
    alice.get(&path).await.assert_ok();
    let as_alice = json!({"auth": {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "@alice:localhost"},
        "password": "alicepw",
    }});
    alice.request(reqwest::Method::DELETE, &path, Some(as_alice)).await.assert_ok();
    alice.get(&path).await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn legacy_events_without_a_room_follow_every_joined_room() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let (room1, room2) = (alice.create_room(json!({})).await, alice.create_room(json!({})).await);
    let from =
        alice.get(&format!("{V3}/events?timeout=0")).await.assert_ok()["end"].as_str().unwrap().to_owned();
    let first = alice.send_text(&room1, "e1", "one").await;
    let second = alice.send_text(&room2, "e2", "two").await;
    let events = alice.get(&format!("{V3}/events?from={from}&timeout=0")).await;
    let body = events.assert_ok();
    let ids: Vec<&Value> = body["chunk"].as_array().unwrap().iter().map(|e| &e["event_id"]).collect();
    assert_eq!(ids, vec![&json!(first), &json!(second)]);
    // From the end, nothing new, and the token moves on only with new events.
    let end = body["end"].as_str().unwrap();
    let again = alice.get(&format!("{V3}/events?from={end}&timeout=0")).await;
    assert!(again.assert_ok().get("chunk").is_none_or(|c| c.as_array().is_some_and(Vec::is_empty)));
    alice.get(&format!("{V3}/events?room_id=nonsense")).await.assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn to_device_transactions_are_scoped_to_the_event_type() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let since = bob.get(&format!("{V3}/sync")).await.assert_ok()["next_batch"].as_str().unwrap().to_owned();
    let body = json!({"messages": {"@bob:localhost": {"*": {"n": 1}}}});
    for kind in ["m.first", "m.first", "m.second"] {
        alice.put(&format!("{V3}/sendToDevice/{kind}/same"), body.clone()).await.assert_ok();
    }
    let sync = bob.get(&format!("{V3}/sync?since={since}")).await;
    let events = sync.assert_ok()["to_device"]["events"].as_array().unwrap().clone();
    let kinds: Vec<&Value> = events.iter().map(|e| &e["type"]).collect();
    assert_eq!(kinds, vec!["m.first", "m.second"]);
}

#[tokio::test]
async fn one_time_keys_are_claimed_in_upload_order() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let device = alice.device_id.clone().unwrap();
    for ids in [vec!["1"], vec!["0", "2"]] {
        let keys: serde_json::Map<String, Value> =
            ids.iter().map(|id| (format!("signed_curve25519:{id}"), json!({"key": id}))).collect();
        alice.post(&format!("{V3}/keys/upload"), json!({"one_time_keys": keys})).await.assert_ok();
    }
    let claim = json!({"one_time_keys": {"@alice:localhost": {&device: "signed_curve25519"}}});
    let (mut claimed, mut last) = (Vec::new(), json!(null));
    for _ in 0..4 {
        let reply = alice.post(&format!("{V3}/keys/claim"), claim.clone()).await;
        let body = reply.assert_ok().clone();
        let keys = &body["one_time_keys"]["@alice:localhost"][&device];
        claimed.push(keys.as_object().map(|k| k.keys().cloned().collect::<Vec<_>>()));
        last = body;
    }
    let ids = |id: &str| Some(vec![format!("signed_curve25519:{id}")]);
    assert_eq!(claimed, vec![ids("1"), ids("0"), ids("2"), None]);
    // A user with no key left is not named at all, as Synapse answers.
    assert_eq!(last["one_time_keys"], json!({}));
}

#[tokio::test]
async fn a_join_body_adds_to_the_member_event() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat", "room_alias_name": "hello"})).await;
    let member = |room: String| {
        let alice = alice.clone();
        async move {
            alice
                .get(&format!("{V3}/rooms/{room}/state/m.room.member/@bob:localhost"))
                .await
                .assert_ok()
                .clone()
        }
    };
    let body = json!({"foo": "bar", "reason": "hi", "membership": "leave"});
    bob.post(&format!("{V3}/join/{room}"), body).await.assert_ok();
    let content = member(room.clone()).await;
    assert_eq!(content, json!({"membership": "join", "foo": "bar", "reason": "hi", "displayname": "bob"}));
    bob.post(&format!("{V3}/rooms/{room}/leave"), json!({})).await.assert_ok();
    // A display name for this room only.
    bob.post(&format!("{V3}/join/%23hello:localhost"), json!({"displayname": "Bobby"})).await.assert_ok();
    assert_eq!(member(room.clone()).await, json!({"membership": "join", "displayname": "Bobby"}));
    bob.post(&format!("{V3}/rooms/{room}/join"), json!([])).await.assert_error(400, "M_BAD_JSON");
}

/// Complement's power-level, re-invite and alias tests name the creator in `users`, which room
/// version 12 forbids (creators are above power levels); in a room of version 10, the default
/// of Synapse and of Complement's expectations, each behaves as they check.
#[tokio::test]
async fn power_levels_reinvites_and_alias_rights_in_a_version_10_room() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let (a, b) = (alice.user_id().to_owned(), bob.user_id().to_owned());
    let v10 = |preset: &str| json!({"preset": preset, "room_version": "10"});

    // Levels are numbers, and the creator's is above the default.
    let room = alice.create_room(v10("private_chat")).await;
    let levels = alice.get(&format!("{V3}/rooms/{room}/state/m.room.power_levels")).await;
    let levels = levels.assert_ok().clone();
    for key in ["ban", "kick", "redact", "state_default", "events_default", "users_default"] {
        assert!(levels[key].is_i64(), "{key}: {levels}");
    }
    assert!(levels["users"][&a].as_i64() > levels["users_default"].as_i64(), "{levels}");
    // Set as given, read back as given.
    let content = json!({"invite": 100, "users": {&a: 100, "@random-other-user:their.home": 20}});
    let path = format!("{V3}/rooms/{room}/state/m.room.power_levels");
    let id = alice.put(&path, content.clone()).await.assert_ok()["event_id"].as_str().unwrap().to_owned();
    let event = alice.get(&format!("{V3}/rooms/{room}/event/{id}")).await;
    assert_eq!(event.assert_ok()["content"], content);
    // Without "events", then without "users": alice gives up her power, and then may not
    // change the levels (403, not a failure of the server).
    alice.put(&path, json!({"users": {&a: 100}})).await.assert_ok();
    alice.put(&path, json!({})).await.assert_ok();
    alice.put(&path, json!({"users": {}})).await.assert_error(403, "M_FORBIDDEN");
    let now = alice.get(&path).await;
    assert!(now.assert_ok().get("users").is_none(), "{}", now.body);

    // The creator, having left, is invited back by a member with power, and joins.
    let room = alice.create_room(v10("private_chat")).await;
    alice.post(&format!("{V3}/rooms/{room}/invite"), json!({"user_id": &b})).await.assert_ok();
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let path = format!("{V3}/rooms/{room}/state/m.room.power_levels");
    alice.put(&path, json!({"invite": 100, "users": {&a: 100, &b: 100}})).await.assert_ok();
    alice.post(&format!("{V3}/rooms/{room}/leave"), json!({})).await.assert_ok();
    bob.post(&format!("{V3}/rooms/{room}/invite"), json!({"user_id": &a})).await.assert_ok();
    alice.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();

    // Aliases: any member may add one when m.room.aliases is restricted (it no longer gates
    // aliases), and delete their own; one with enough power deletes another's.
    let room = alice.create_room(v10("private_chat")).await;
    alice.post(&format!("{V3}/rooms/{room}/invite"), json!({"user_id": &b})).await.assert_ok();
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let path = format!("{V3}/rooms/{room}/state/m.room.power_levels");
    alice.put(&path, json!({"users": {&a: 100}, "events": {"m.room.aliases": 50}})).await.assert_ok();
    let alias = format!("{V3}/directory/room/%23restricted_aliases:localhost");
    bob.put(&alias, json!({"room_id": room})).await.assert_ok();
    assert_eq!(alice.get(&alias).await.assert_ok()["room_id"], json!(room));
    bob.request(reqwest::Method::DELETE, &alias, None).await.assert_ok();

    let room = alice.create_room(v10("private_chat")).await;
    alice.post(&format!("{V3}/rooms/{room}/invite"), json!({"user_id": &b})).await.assert_ok();
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let path = format!("{V3}/rooms/{room}/state/m.room.power_levels");
    alice.put(&path, json!({"users": {&a: 100, &b: 100}})).await.assert_ok();
    let alias = format!("{V3}/directory/room/%23powerful_delete:localhost");
    alice.put(&alias, json!({"room_id": room})).await.assert_ok();
    assert_eq!(bob.get(&alias).await.assert_ok()["room_id"], json!(room));
    bob.request(reqwest::Method::DELETE, &alias, None).await.assert_ok();
}
