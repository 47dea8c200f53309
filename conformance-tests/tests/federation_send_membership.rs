//! `send_join`, `send_leave` (v1 and v2) and `send_knock` against a hand-rolled remote server
//! (`fake.test`): each takes only its own kind of membership event, for the sender itself, and
//! answers 400 to anything else; knocks need a room version that has them (403 otherwise); the
//! v1 endpoints answer with `[200, {...}]`.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use std::{net::SocketAddr, time::Duration};

use hearth_conformance_tests::{Client, TestServer, fake_remote::FakeRemote};
use reqwest::Method;
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";
const A: &str = "hs-a.test";
const FAKE: &str = "fake.test";

struct Setup {
    a: TestServer,
    fake: FakeRemote,
    alice: Client,
}

impl Setup {
    async fn start() -> Self {
        let fake = FakeRemote::start(FAKE, "127.0.0.9").await;
        let fake_addr = fake.addr.to_string();
        let mut servers = TestServer::start_federation(&[A], |config| {
            config.federation.resolve_overrides.insert(FAKE.to_owned(), fake_addr.clone());
        })
        .await;
        let a = servers.pop().unwrap();
        let alice = Client::register(&a.base_url, "alice", "pw").await;
        Self { a, fake, alice }
    }

    fn addr(&self) -> SocketAddr {
        self.a.config.listen.federation.unwrap()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.fake.request(A, self.addr(), Method::GET, path, None).await
    }

    async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.fake.request(A, self.addr(), Method::PUT, path, Some(body)).await
    }

    /// A `make_*` template for `user`: the room version and the event.
    async fn template(&self, kind: &str, room: &str, user: &str) -> (String, Value) {
        let versions: String = (1..=12).map(|v| format!("ver={v}&")).collect();
        let (status, body) =
            self.get(&format!("/_matrix/federation/v1/make_{kind}/{room}/{user}?{versions}")).await;
        assert_eq!(status, 200, "make_{kind}: {body}");
        (body["room_version"].as_str().unwrap_or("1").to_owned(), body["event"].clone())
    }

    /// Signs a variation of `template` and PUTs it to `endpoint` (e.g. `v2/send_join`).
    async fn send(&self, endpoint: &str, room: &str, version: &str, event: &Value) -> (u16, Value) {
        let (event_id, signed) = self.fake.sign_event(event, version);
        let path = format!("/_matrix/federation/{endpoint}/{room}/{}", event_id.replace('$', "%24"));
        self.put(&path, &signed).await
    }

    async fn wait_for_membership(&self, room: &str, user: &str, membership: &str) {
        for _ in 0..100 {
            let reply = self.alice.get(&format!("{V3}/rooms/{room}/state/m.room.member/{user}")).await;
            if reply.status.is_success() && reply.body["membership"] == membership {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{user} never showed as {membership} in {room}");
    }
}

/// Events an endpoint for `expected` memberships must refuse, built from a template of the
/// right room: a message, a member event without a state key, every other membership, and the
/// right membership for someone else, unreadable references, and another room.
fn wrong_events(template: &Value, sender: &str, other_user: &str, expected: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut message = template.clone();
    message["type"] = json!("m.room.message");
    message.as_object_mut().unwrap().remove("state_key");
    message["content"] = json!({"msgtype": "m.text", "body": "bzz"});
    out.push(("a message".to_owned(), message));
    let mut stateless = template.clone();
    stateless.as_object_mut().unwrap().remove("state_key");
    stateless["content"] = json!({"membership": expected});
    out.push(("a member event without a state key".to_owned(), stateless));
    for membership in ["join", "leave", "knock", "invite"] {
        if membership != expected {
            let mut event = template.clone();
            event["content"] = json!({"membership": membership});
            out.push((format!("a {membership}"), event));
        }
    }
    let mut someone_else = template.clone();
    someone_else["state_key"] = json!(other_user);
    someone_else["content"] = json!({"membership": expected});
    out.push((format!("a {expected} for someone else"), someone_else));
    let mut bad_references = template.clone();
    bad_references["prev_events"] = json!([123]);
    bad_references["content"] = json!({"membership": expected});
    out.push(("an event whose prev_events are not event IDs".to_owned(), bad_references));
    let mut other_room = template.clone();
    other_room["room_id"] = json!(format!("!elsewhere:{A}"));
    out.push(("an event of another room".to_owned(), other_room));
    assert_eq!(template["sender"], sender);
    out
}

#[tokio::test]
async fn send_join_and_send_leave_v1_and_v2_take_only_their_own_membership() {
    let s = Setup::start().await;
    let room = s.alice.create_room(json!({"preset": "public_chat", "name": "validation"})).await;
    let charlie = s.fake.user("charlie");
    let doris = s.fake.user("doris");

    // A server that does not support the room's version is told which version it is.
    let (status, body) =
        s.get(&format!("/_matrix/federation/v1/make_join/{room}/{charlie}?ver=10&ver=11")).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INCOMPATIBLE_ROOM_VERSION")), "{body}");
    assert_eq!(body["room_version"], "12", "{body}");
    // Without `ver` the joining server supports version 1 only.
    let (status, body) = s.get(&format!("/_matrix/federation/v1/make_join/{room}/{charlie}")).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INCOMPATIBLE_ROOM_VERSION")), "{body}");

    let (version, join) = s.template("join", &room, &charlie).await;
    assert_eq!(version, "12");
    for endpoint in ["v1/send_join", "v2/send_join"] {
        for (what, event) in wrong_events(&join, &charlie, &doris, "join") {
            let (status, body) = s.send(endpoint, &room, &version, &event).await;
            assert_eq!(status, 400, "{endpoint} took {what}: {body}");
            assert_eq!(body["errcode"], "M_BAD_JSON", "{endpoint}, {what}: {body}");
        }
    }
    // Nothing of that reached the room.
    let members = s.alice.get(&format!("{V3}/rooms/{room}/members")).await;
    assert_eq!(members.assert_ok()["chunk"].as_array().unwrap().len(), 1, "{:?}", members.body);

    // The real join through v1: the state comes back in the v1 body.
    let (status, body) = s.send("v1/send_join", &room, &version, &join).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0], 200, "{body}");
    let state = body[1]["state"].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.name"), "{body}");
    assert!(!body[1]["auth_chain"].as_array().unwrap().is_empty(), "{body}");
    s.wait_for_membership(&room, &charlie, "join").await;

    let (version, leave) = s.template("leave", &room, &charlie).await;
    for endpoint in ["v1/send_leave", "v2/send_leave"] {
        for (what, event) in wrong_events(&leave, &charlie, &doris, "leave") {
            let (status, body) = s.send(endpoint, &room, &version, &event).await;
            assert_eq!(status, 400, "{endpoint} took {what}: {body}");
            assert_eq!(body["errcode"], "M_BAD_JSON", "{endpoint}, {what}: {body}");
        }
    }
    s.wait_for_membership(&room, &charlie, "join").await;
    let (status, body) = s.send("v1/send_leave", &room, &version, &leave).await;
    assert_eq!((status, &body), (200, &json!([200, {}])));
    s.wait_for_membership(&room, &charlie, "leave").await;

    // And back in through v2, whose body is the object itself.
    let (version, join) = s.template("join", &room, &charlie).await;
    let (status, body) = s.send("v2/send_join", &room, &version, &join).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["state"].is_array(), "{body}");
    s.wait_for_membership(&room, &charlie, "join").await;
    let (version, leave) = s.template("leave", &room, &charlie).await;
    let (status, body) = s.send("v2/send_leave", &room, &version, &leave).await;
    assert_eq!((status, &body), (200, &json!({})));
    s.wait_for_membership(&room, &charlie, "leave").await;
}

#[tokio::test]
async fn send_knock_takes_only_knocks_and_only_in_versions_with_knocking() {
    let s = Setup::start().await;
    let knock_rule =
        json!([{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}]);
    let room = s.alice.create_room(json!({"room_version": "7", "initial_state": knock_rule})).await;
    let charlie = s.fake.user("charlie");
    let doris = s.fake.user("doris");

    let (version, knock) = s.template("knock", &room, &charlie).await;
    assert_eq!(version, "7");
    for (what, event) in wrong_events(&knock, &charlie, &doris, "knock") {
        let (status, body) = s.send("v1/send_knock", &room, &version, &event).await;
        assert_eq!(status, 400, "send_knock took {what}: {body}");
        assert_eq!(body["errcode"], "M_BAD_JSON", "{what}: {body}");
    }
    let (status, body) = s.send("v1/send_knock", &room, &version, &knock).await;
    assert_eq!(status, 200, "{body}");
    let state = body["knock_room_state"].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == "m.room.join_rules"), "{body}");
    s.wait_for_membership(&room, &charlie, "knock").await;

    // Version 6 has no knocking: make_knock refuses, and a knock sent anyway is forbidden.
    let old = s.alice.create_room(json!({"room_version": "6", "preset": "public_chat"})).await;
    let (status, body) =
        s.get(&format!("/_matrix/federation/v1/make_knock/{old}/{charlie}?ver=6&ver=7")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["errcode"], "M_INCOMPATIBLE_ROOM_VERSION", "{body}");
    assert_eq!(body["room_version"], "6", "{body}");
    let (version, join) = s.template("join", &old, &charlie).await;
    let mut knock = join.clone();
    knock["content"] = json!({"membership": "knock"});
    let (status, body) = s.send("v1/send_knock", &old, &version, &knock).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
}

/// A restricted room: the resident server vouches (and signs) only for a user who meets the
/// allow rules, whatever the joining server's event claims.
#[tokio::test]
async fn a_restricted_join_is_countersigned_only_for_users_the_rules_allow() {
    let s = Setup::start().await;
    let space = s.alice.create_room(json!({"preset": "public_chat", "room_version": "9"})).await;
    let rule = json!([{"type": "m.room.join_rules", "state_key": "", "content": {
        "join_rule": "restricted",
        "allow": [{"type": "m.room_membership", "room_id": space}],
    }}]);
    let room = s.alice.create_room(json!({"room_version": "9", "initial_state": rule})).await;
    let charlie = s.fake.user("charlie");

    // Charlie is in no allowed room: no template, and a hand-made join naming Alice as the
    // authoriser is refused rather than signed.
    let (status, body) = s.get(&format!("/_matrix/federation/v1/make_join/{room}/{charlie}?ver=9")).await;
    assert_eq!(status, 403, "{body}");
    let state = s.alice.get(&format!("{V3}/rooms/{room}/state")).await;
    let id_of = |kind: &str, key: &str| {
        let events = state.body.as_array().unwrap();
        let event = events.iter().find(|e| e["type"] == kind && e["state_key"] == key).unwrap();
        event["event_id"].as_str().unwrap().to_owned()
    };
    let auth_events = json!([
        id_of("m.room.create", ""),
        id_of("m.room.power_levels", ""),
        id_of("m.room.join_rules", ""),
        id_of("m.room.member", s.alice.user_id()),
    ]);
    let latest = s.alice.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=1")).await;
    let latest = latest.assert_ok()["chunk"][0]["event_id"].clone();
    let forged = json!({
        "type": "m.room.member", "room_id": room, "sender": charlie, "state_key": charlie,
        "content": {"membership": "join", "join_authorised_via_users_server": s.alice.user_id()},
        "origin_server_ts": 1_700_000_000_000_u64, "depth": 50,
        "prev_events": [latest], "auth_events": auth_events,
    });
    let (status, body) = s.send("v2/send_join", &room, "9", &forged).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");

    // Once in the allowed room, the template names Alice and the join comes back signed by A.
    let (version, join) = s.template("join", &space, &charlie).await;
    let (status, body) = s.send("v2/send_join", &space, &version, &join).await;
    assert_eq!(status, 200, "{body}");
    s.wait_for_membership(&space, &charlie, "join").await;
    let (version, join) = s.template("join", &room, &charlie).await;
    assert_eq!(join["content"]["join_authorised_via_users_server"], s.alice.user_id(), "{join}");
    let (status, body) = s.send("v2/send_join", &room, &version, &join).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["event"]["signatures"][A].is_object(), "{body}");
    assert!(body["event"]["signatures"][FAKE].is_object(), "{body}");
    s.wait_for_membership(&room, &charlie, "join").await;
}

#[tokio::test]
async fn a_local_join_announces_the_joiners_devices_to_servers_new_to_them() {
    let s = Setup::start().await;
    let room = s.alice.create_room(json!({"preset": "public_chat"})).await;
    let charlie = s.fake.user("charlie");
    let (version, join) = s.template("join", &room, &charlie).await;
    let (status, body) = s.send("v2/send_join", &room, &version, &join).await;
    assert_eq!(status, 200, "{body}");
    s.wait_for_membership(&room, &charlie, "join").await;

    // Bob shares no room with fake.test until he joins this one; he has uploaded no keys.
    let bob = Client::register(&s.a.base_url, "bob", "pw").await;
    let device = bob.device_id.clone().unwrap();
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let announced = |edus: &[Value]| {
        edus.iter().any(|edu| {
            edu["edu_type"] == "m.device_list_update"
                && edu["content"]["user_id"] == bob.user_id()
                && edu["content"]["device_id"] == device.as_str()
        })
    };
    for _ in 0..100 {
        if announced(&s.fake.edus()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(announced(&s.fake.edus()), "no device list update for bob: {:?}", s.fake.edus());
    // Alice joined before fake.test was in the room: nothing is announced for her.
    let for_alice =
        |e: &Value| e["edu_type"] == "m.device_list_update" && e["content"]["user_id"] == s.alice.user_id();
    assert!(!s.fake.edus().iter().any(for_alice), "{:?}", s.fake.edus());
}
