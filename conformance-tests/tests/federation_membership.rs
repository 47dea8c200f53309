//! Membership across two Hearth servers (hs-a.test on 127.0.0.1, hs-b.test on 127.0.0.2):
//! invites signed by the invitee's server and shown in its /sync before it is in the room,
//! invites rejected through `make_leave`/`send_leave`, leaving and rejoining, knocking through
//! `make_knock`/`send_knock`, and a server ACL that shuts a server out.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";
const A: &str = "hs-a.test";
const B: &str = "hs-b.test";

/// Waits until `viewer`'s server shows `user`'s membership in `room` as `membership`.
async fn wait_for_membership(viewer: &Client, room: &str, user: &str, membership: &str) {
    for _ in 0..100 {
        let reply = viewer.get(&format!("{V3}/rooms/{room}/state/m.room.member/{user}")).await;
        if reply.status.is_success() && reply.body["membership"] == membership {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{user} never showed as {membership} in {room} to {:?}", viewer.user_id);
}

fn state_of<'a>(events: &'a Value, kind: &str) -> Option<&'a Value> {
    events.as_array()?.iter().find(|e| e["type"] == kind)
}

#[tokio::test]
async fn an_invite_from_another_server_shows_in_sync_and_is_accepted() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let since = bob.since_now().await;
    let create =
        json!({"preset": "private_chat", "name": "plans", "invite": [bob.user_id()], "is_direct": true});
    let room = alice.create_room(create).await;

    // B is not in the room, yet bob sees the invite with the room's stripped state.
    let body =
        bob.sync_until(Some(&since), "the change", |b| b["rooms"]["invite"].get(&room).is_some()).await;
    let state = &body["rooms"]["invite"][&room]["invite_state"]["events"];
    assert_eq!(state_of(state, "m.room.name").unwrap()["content"]["name"], "plans", "{state}");
    assert!(state_of(state, "m.room.create").is_some(), "{state}");
    assert_eq!(state_of(state, "m.room.join_rules").unwrap()["content"]["join_rule"], "invite");
    let own = state
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id())
        .unwrap();
    assert_eq!(own["content"]["membership"], "invite");
    assert_eq!(own["sender"], alice.user_id());
    // A's copy of the invite is in its room state.
    wait_for_membership(&alice, &room, bob.user_id(), "invite").await;

    // Accepting needs no `via`: the inviting server is known.
    let since = bob.since_now().await;
    bob.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
    wait_for_membership(&alice, &room, bob.user_id(), "join").await;
    // Bob's join shows what it replaced: the invite, its `is_direct`, and who sent it.
    let is_own_join = |e: &Value| {
        e["type"] == "m.room.member"
            && e["state_key"] == bob.user_id()
            && e["content"]["membership"] == "join"
    };
    let body = bob
        .sync_until(Some(&since), "bob's join", |b| {
            b["rooms"]["join"][&room]["timeline"]["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(is_own_join))
        })
        .await;
    let events = body["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap();
    let join = events.iter().find(|e| is_own_join(e)).unwrap();
    assert_eq!(join["unsigned"]["prev_content"]["membership"], "invite", "{join}");
    assert_eq!(join["unsigned"]["prev_content"]["is_direct"], true, "{join}");
    assert_eq!(join["unsigned"]["prev_sender"], alice.user_id(), "{join}");
    let name = bob.get(&format!("{V3}/rooms/{room}/state/m.room.name")).await;
    assert_eq!(name.assert_ok()["name"], "plans");
    alice.send_text(&room, "a1", "welcome, bob").await;
    bob.wait_for_bodies(&room, &["welcome, bob"]).await;
    bob.send_text(&room, "b1", "thanks, alice").await;
    alice.wait_for_bodies(&room, &["thanks, alice"]).await;

    // Inviting someone who is not there is refused by their server.
    let ghost = format!("@nobody:{B}");
    let reply = alice.post(&format!("{V3}/rooms/{room}/invite"), json!({"user_id": ghost})).await;
    assert_eq!(reply.status.as_u16(), 404, "{:?}", reply.body);
}

#[tokio::test]
async fn a_rejected_invite_reaches_the_inviting_server() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let carol = Client::register(&b.base_url, "carol", "pw").await;
    let room = alice.create_room(json!({"preset": "private_chat"})).await;
    let since = carol.since_now().await;
    alice.post(&format!("{V3}/rooms/{room}/invite"), json!({"user_id": carol.user_id()})).await.assert_ok();
    let body =
        carol.sync_until(Some(&since), "the change", |b| b["rooms"]["invite"].get(&room).is_some()).await;
    let since = body["next_batch"].as_str().unwrap().to_owned();

    // B is not in the room: the rejection goes through make_leave/send_leave on A.
    carol.post(&format!("{V3}/rooms/{room}/leave"), json!({"reason": "not now"})).await.assert_ok();
    wait_for_membership(&alice, &room, carol.user_id(), "leave").await;
    let leave = alice.get(&format!("{V3}/rooms/{room}/state/m.room.member/{}", carol.user_id())).await;
    assert_eq!(leave.assert_ok()["reason"], "not now");

    // Carol's own /sync moves the room to `leave`, with her leave event.
    let body =
        carol.sync_until(Some(&since), "the change", |b| b["rooms"]["leave"].get(&room).is_some()).await;
    let events = &body["rooms"]["leave"][&room]["timeline"]["events"];
    assert_eq!(events[0]["content"]["membership"], "leave", "{body}");
    assert!(body["rooms"]["invite"].get(&room).is_none());
    // A full sync that asks for left rooms shows it too, though B never had the room.
    let filter = r#"{"room":{"include_leave":true}}"#;
    let full = carol.get(&format!("{V3}/sync?timeout=0&filter={filter}")).await;
    let left = &full.assert_ok()["rooms"]["leave"][&room]["timeline"]["events"][0];
    assert_eq!(left["content"]["membership"], "leave", "{:?}", full.body);
    // Leaving again is a no-op, and the invite cannot be accepted any more.
    carol.post(&format!("{V3}/rooms/{room}/leave"), json!({})).await.assert_ok();
    let join = carol.post(&format!("{V3}/join/{room}?via={A}"), json!({})).await;
    join.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn a_user_leaves_a_room_on_another_server_and_rejoins_it() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{room}?via={A}"), json!({})).await.assert_ok();
    wait_for_membership(&alice, &room, bob.user_id(), "join").await;

    bob.post(&format!("{V3}/rooms/{room}/leave"), json!({})).await.assert_ok();
    wait_for_membership(&alice, &room, bob.user_id(), "leave").await;
    alice.send_text(&room, "a1", "while bob was away").await;

    // No local member is left on B, so the rejoin goes through A (found from the room's
    // last known members; no `via`).
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    wait_for_membership(&alice, &room, bob.user_id(), "join").await;
    alice.send_text(&room, "a2", "welcome back").await;
    bob.wait_for_bodies(&room, &["welcome back"]).await;
    bob.send_text(&room, "b1", "glad to be back").await;
    alice.wait_for_bodies(&room, &["glad to be back"]).await;
}

#[tokio::test]
async fn a_knock_from_another_server_is_let_in_by_an_invite() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let dave = Client::register(&b.base_url, "dave", "pw").await;
    let room = alice
        .create_room(json!({
            "preset": "private_chat",
            "name": "knockers",
            "initial_state": [{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}],
        }))
        .await;
    let alice_since = alice.since_now().await;
    let dave_since = dave.since_now().await;

    let knock = dave.post(&format!("{V3}/knock/{room}?via={A}"), json!({"reason": "let me in"})).await;
    assert_eq!(knock.assert_ok()["room_id"], json!(room));
    let body =
        dave.sync_until(Some(&dave_since), "the change", |b| b["rooms"]["knock"].get(&room).is_some()).await;
    let state = &body["rooms"]["knock"][&room]["knock_state"]["events"];
    assert_eq!(state_of(state, "m.room.join_rules").unwrap()["content"]["join_rule"], "knock", "{state}");
    assert_eq!(state_of(state, "m.room.name").unwrap()["content"]["name"], "knockers");
    let dave_since = body["next_batch"].as_str().unwrap().to_owned();

    // A sees the knock in the room's timeline.
    let dave_id = dave.user_id().to_owned();
    alice
        .sync_until(Some(&alice_since), "the change", |b| {
            b["rooms"]["join"][&room]["timeline"]["events"].as_array().into_iter().flatten().any(|e| {
                e["type"] == "m.room.member"
                    && e["state_key"] == dave_id
                    && e["content"]["membership"] == "knock"
            })
        })
        .await;

    // Approving is inviting: B, still not in the room, turns the knock into an invite.
    alice.post(&format!("{V3}/rooms/{room}/invite"), json!({"user_id": dave.user_id()})).await.assert_ok();
    dave.sync_until(Some(&dave_since), "the change", |b| b["rooms"]["invite"].get(&room).is_some()).await;
    dave.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
    wait_for_membership(&alice, &room, dave.user_id(), "join").await;
    dave.send_text(&room, "d1", "thanks for letting me in").await;
    alice.wait_for_bodies(&room, &["thanks for letting me in"]).await;

    // A room whose join rule is not `knock` refuses the knock at A's make_knock.
    let closed = alice.create_room(json!({"preset": "private_chat"})).await;
    let refused = dave.post(&format!("{V3}/knock/{closed}?via={A}"), json!({})).await;
    refused.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn a_server_acl_shuts_out_a_denied_server() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let guarded = alice.create_room(json!({"preset": "public_chat"})).await;
    let open = alice.create_room(json!({"preset": "public_chat"})).await;
    for room in [&guarded, &open] {
        bob.post(&format!("{V3}/join/{room}?via={A}"), json!({})).await.assert_ok();
        wait_for_membership(&alice, room, bob.user_id(), "join").await;
    }
    bob.send_text(&guarded, "b0", "before the ACL").await;
    alice.wait_for_bodies(&guarded, &["before the ACL"]).await;

    let acl = json!({"allow": ["*"], "deny": [B], "allow_ip_literals": false});
    alice.put(&format!("{V3}/rooms/{guarded}/state/m.room.server_acl"), acl).await.assert_ok();

    // B sends to A in order, one transaction at a time: once A shows the message in the open
    // room, it has handled the one sent before it in the guarded room, and dropped it.
    let blocked = bob.send_text(&guarded, "b1", "after the ACL").await;
    bob.send_text(&open, "b2", "in the open room").await;
    alice.wait_for_bodies(&open, &["in the open room"]).await;
    let reply = alice.get(&format!("{V3}/rooms/{guarded}/event/{blocked}")).await;
    assert_eq!(reply.status.as_u16(), 404, "{:?}", reply.body);
    let messages = alice.get(&format!("{V3}/rooms/{guarded}/messages?dir=b&limit=50")).await;
    let bodies: Vec<&str> = messages.assert_ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .collect();
    assert!(bodies.contains(&"before the ACL") && !bodies.contains(&"after the ACL"), "{bodies:?}");

    // A server the ACL denies cannot join a room it is not in yet: A refuses its make_join.
    let fenced = alice
        .create_room(json!({
            "preset": "public_chat",
            "initial_state": [{"type": "m.room.server_acl", "state_key": "", "content": {"allow": ["*"], "deny": ["*-b.test"]}}],
        }))
        .await;
    let join = bob.post(&format!("{V3}/join/{fenced}?via={A}"), json!({})).await;
    join.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn a_user_banned_unbanned_and_invited_again_joins_from_another_server() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let room = bob.create_room(json!({"preset": "public_chat"})).await;
    alice.post(&format!("{V3}/join/{room}?via={B}"), json!({})).await.assert_ok();
    wait_for_membership(&bob, &room, alice.user_id(), "join").await;

    let since = alice.since_now().await;
    bob.post(&format!("{V3}/rooms/{room}/ban"), json!({"user_id": alice.user_id()})).await.assert_ok();
    // Alice's own server shows her the ban in the room's `leave` section.
    let banned = |body: &Value| {
        body["rooms"]["leave"][&room]["timeline"]["events"].as_array().into_iter().flatten().any(|e| {
            e["type"] == "m.room.member"
                && e["state_key"] == alice.user_id()
                && e["content"]["membership"] == "ban"
        })
    };
    alice.sync_until(Some(&since), "the ban", banned).await;
    bob.post(&format!("{V3}/rooms/{room}/unban"), json!({"user_id": alice.user_id()})).await.assert_ok();
    bob.post(&format!("{V3}/rooms/{room}/invite"), json!({"user_id": alice.user_id()})).await.assert_ok();
    let invited = alice.sync_until(None, "the invite", |b| b["rooms"]["invite"].get(&room).is_some()).await;
    assert!(invited["rooms"]["invite"].get(&room).is_some());

    let joined = alice.post(&format!("{V3}/join/{room}?via={B}"), json!({})).await;
    joined.assert_ok();
    wait_for_membership(&bob, &room, alice.user_id(), "join").await;
}

#[tokio::test]
async fn only_the_inviter_can_take_back_an_invite_to_a_room_the_invitee_server_is_not_in() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let alice2 = Client::register(&a.base_url, "alice2", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    // A room bob is in, to know when B has processed what A sent before a later message.
    let shared = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{shared}?via={A}"), json!({})).await.assert_ok();

    let room = alice.create_room(json!({"preset": "private_chat", "invite": [alice2.user_id()]})).await;
    alice2.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    alice2.post(&format!("{V3}/rooms/{room}/invite"), json!({"user_id": bob.user_id()})).await.assert_ok();
    bob.sync_until(None, "the invite", |b| b["rooms"]["invite"].get(&room).is_some()).await;

    // Alice, who did not invite bob, kicks him: A's room says so, but B keeps the invite.
    alice
        .post(&format!("{V3}/rooms/{room}/kick"), json!({"user_id": bob.user_id(), "reason": "no"}))
        .await
        .assert_ok();
    alice.send_text(&shared, "m1", "after the kick").await;
    bob.wait_for_bodies(&shared, &["after the kick"]).await;
    let now = bob.get(&format!("{V3}/sync?timeout=0")).await;
    assert!(now.assert_ok()["rooms"]["invite"].get(&room).is_some(), "{}", now.body["rooms"]);
}
