//! The rest of the rooms surface: knocking, context, the directory, timestamps, upgrades,
//! typing, receipts, read markers and reports.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

#[tokio::test]
async fn knocking() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let carol = Client::register(&server.base_url, "carol", "pw").await;
    let room = alice.create_room(json!({"room_alias_name": "knockable"})).await;
    // Invite-only rooms refuse knocks.
    carol.post(&format!("{V3}/knock/{room}"), json!({})).await.assert_error(403, "M_FORBIDDEN");
    alice
        .put(&format!("{V3}/rooms/{room}/state/m.room.join_rules"), json!({"join_rule": "knock"}))
        .await
        .assert_ok();
    let knocked =
        carol.post(&format!("{V3}/knock/%23knockable:localhost"), json!({"reason": "let me in"})).await;
    assert_eq!(knocked.assert_ok()["room_id"], json!(room));
    let members = alice.get(&format!("{V3}/rooms/{room}/members?membership=knock")).await;
    assert_eq!(members.assert_ok()["chunk"][0]["state_key"], "@carol:localhost");
    alice
        .post(&format!("{V3}/rooms/{room}/invite"), json!({"user_id": "@carol:localhost"}))
        .await
        .assert_ok();
    carol.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
}

#[tokio::test]
async fn context_and_timestamps() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({})).await;
    let mut ids = Vec::new();
    for i in 0..9 {
        ids.push(alice.send_text(&room, &format!("c{i}"), &format!("m{i}")).await);
    }
    let reply = alice.get(&format!("{V3}/rooms/{room}/context/{}?limit=4", ids[4])).await;
    let body = reply.assert_ok();
    assert_eq!(body["event"]["event_id"], json!(ids[4]));
    let before: Vec<&Value> =
        body["events_before"].as_array().unwrap().iter().map(|e| &e["event_id"]).collect();
    let after: Vec<&Value> =
        body["events_after"].as_array().unwrap().iter().map(|e| &e["event_id"]).collect();
    assert_eq!(before, vec![&json!(ids[3]), &json!(ids[2])]);
    assert_eq!(after, vec![&json!(ids[5]), &json!(ids[6])]);
    assert!(body["state"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"));
    // Paginating on from the context's tokens continues where it left off.
    let end = body["end"].as_str().unwrap();
    let next = alice.get(&format!("{V3}/rooms/{room}/messages?dir=f&limit=1&from={end}")).await;
    assert_eq!(next.assert_ok()["chunk"][0]["event_id"], json!(ids[7]));
    alice.get(&format!("{V3}/rooms/{room}/context/$nope")).await.assert_error(404, "M_NOT_FOUND");

    let event = alice.get(&format!("{V3}/rooms/{room}/event/{}", ids[0])).await;
    let ts = event.assert_ok()["origin_server_ts"].as_u64().unwrap();
    let found = alice.get(&format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir=f")).await;
    assert_eq!(found.assert_ok()["origin_server_ts"], json!(ts));
    let later = alice
        .get(&format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={}&dir=f", ts + 3_600_000))
        .await;
    later.assert_error(404, "M_NOT_FOUND");
    let outsider = Client::register(&server.base_url, "out", "pw").await;
    outsider
        .get(&format!("/_matrix/client/v1/rooms/{room}/timestamp_to_event?ts={ts}&dir=f"))
        .await
        .assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn public_room_directory() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let public = alice
        .create_room(json!({"visibility": "public", "preset": "public_chat", "name": "Rust fans"}))
        .await;
    alice.create_room(json!({"visibility": "public", "preset": "public_chat", "name": "Gardening"})).await;
    let private = alice.create_room(json!({"name": "Secret"})).await;

    let list = server.client().get(&format!("{V3}/publicRooms")).await;
    let body = list.assert_ok();
    assert_eq!(body["total_room_count_estimate"], 2);
    assert!(body["chunk"].as_array().unwrap().iter().all(|r| r["room_id"] != json!(private)));
    let paged = bob.get(&format!("{V3}/publicRooms?limit=1")).await;
    let next = paged.assert_ok()["next_batch"].as_str().unwrap().to_owned();
    let second = bob.get(&format!("{V3}/publicRooms?limit=1&since={next}")).await;
    assert_eq!(second.assert_ok()["chunk"].as_array().unwrap().len(), 1);
    let searched =
        bob.post(&format!("{V3}/publicRooms"), json!({"filter": {"generic_search_term": "rust"}})).await;
    let chunk = searched.assert_ok()["chunk"].as_array().unwrap().clone();
    assert_eq!(chunk.len(), 1);
    assert_eq!(chunk[0]["room_id"], json!(public));
    assert_eq!(chunk[0]["num_joined_members"], 1);
    // Absent means public, which ruma leaves out.
    assert!(chunk[0].get("join_rule").is_none_or(|r| r == "public"));

    let vis = format!("{V3}/directory/list/room/{private}");
    assert_eq!(bob.get(&vis).await.assert_ok()["visibility"], "private");
    bob.put(&vis, json!({"visibility": "public"})).await.assert_error(403, "M_FORBIDDEN");
    alice.put(&vis, json!({"visibility": "public"})).await.assert_ok();
    assert_eq!(bob.get(&vis).await.assert_ok()["visibility"], "public");
    bob.get(&format!("{V3}/directory/list/room/!nope:localhost")).await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn room_upgrade() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let old = alice
        .create_room(
            json!({"room_version": "10", "preset": "public_chat", "name": "Old", "room_alias_name": "up"}),
        )
        .await;
    bob.post(&format!("{V3}/join/{old}"), json!({})).await.assert_ok();
    bob.post(&format!("{V3}/rooms/{old}/upgrade"), json!({"new_version": "12"}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    alice
        .post(&format!("{V3}/rooms/{old}/upgrade"), json!({"new_version": "99"}))
        .await
        .assert_error(400, "M_UNSUPPORTED_ROOM_VERSION");
    let reply = alice.post(&format!("{V3}/rooms/{old}/upgrade"), json!({"new_version": "12"})).await;
    let new = reply.assert_ok()["replacement_room"].as_str().unwrap().to_owned();

    let tombstone = alice.get(&format!("{V3}/rooms/{old}/state/m.room.tombstone")).await;
    assert_eq!(tombstone.assert_ok()["replacement_room"], json!(new));
    let create = alice.get(&format!("{V3}/rooms/{new}/state/m.room.create")).await;
    assert_eq!(create.assert_ok()["room_version"], "12");
    assert_eq!(create.body["predecessor"]["room_id"], json!(old));
    assert_eq!(alice.get(&format!("{V3}/rooms/{new}/state/m.room.name")).await.assert_ok()["name"], "Old");
    let resolved = bob.get(&format!("{V3}/directory/room/%23up:localhost")).await;
    assert_eq!(resolved.assert_ok()["room_id"], json!(new));
    // The old room is read-only for ordinary members now.
    bob.put(
        &format!("{V3}/rooms/{old}/send/m.room.message/late"),
        json!({"msgtype": "m.text", "body": "hi"}),
    )
    .await
    .assert_error(403, "M_FORBIDDEN");
    bob.post(&format!("{V3}/join/{new}"), json!({})).await.assert_ok();
}

#[tokio::test]
async fn typing_receipts_markers_and_reports() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let outsider = Client::register(&server.base_url, "out", "pw").await;
    let room = alice.create_room(json!({})).await;
    let event = alice.send_text(&room, "t", "hello").await;

    let typing = format!("{V3}/rooms/{room}/typing/@alice:localhost");
    alice.put(&typing, json!({"typing": true, "timeout": 20000})).await.assert_ok();
    alice.put(&typing, json!({"typing": false})).await.assert_ok();
    outsider
        .put(&format!("{V3}/rooms/{room}/typing/@out:localhost"), json!({"typing": true, "timeout": 1000}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    outsider.put(&typing, json!({"typing": true, "timeout": 1000})).await.assert_error(403, "M_FORBIDDEN");

    alice.post(&format!("{V3}/rooms/{room}/receipt/m.read/{event}"), json!({})).await.assert_ok();
    alice
        .post(&format!("{V3}/rooms/{room}/receipt/m.read.private/{event}"), json!({"thread_id": "main"}))
        .await
        .assert_ok();
    alice
        .post(&format!("{V3}/rooms/{room}/receipt/m.read/$missing"), json!({}))
        .await
        .assert_error(404, "M_NOT_FOUND");
    outsider
        .post(&format!("{V3}/rooms/{room}/receipt/m.read/{event}"), json!({}))
        .await
        .assert_error(403, "M_FORBIDDEN");

    let markers = json!({"m.fully_read": event, "m.read": event});
    alice.post(&format!("{V3}/rooms/{room}/read_markers"), markers).await.assert_ok();
    let fully_read =
        alice.get(&format!("{V3}/user/@alice:localhost/rooms/{room}/account_data/m.fully_read")).await;
    assert_eq!(fully_read.assert_ok()["event_id"], json!(event));
    alice.post(&format!("{V3}/rooms/{room}/receipt/m.fully_read/{event}"), json!({})).await.assert_ok();

    alice.post(&format!("{V3}/rooms/{room}/report/{event}"), json!({"reason": "spam"})).await.assert_ok();
    outsider
        .post(&format!("{V3}/rooms/{room}/report/{event}"), json!({"reason": "x"}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    alice.post(&format!("{V3}/rooms/{room}/report/$nope"), json!({})).await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn restricted_rooms_admit_members_of_the_allowed_room() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let carol = Client::register(&server.base_url, "carol", "pw").await;
    let space = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{space}"), json!({})).await.assert_ok();
    let room = alice.create_room(
        json!({"initial_state": [{"type": "m.room.join_rules", "state_key": "",
            "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}}]}),
    )
    .await;
    // Bob is in the allowed room, so a member who may invite vouches for him; Carol is not.
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let member = bob.get(&format!("{V3}/rooms/{room}/state/m.room.member/@bob:localhost")).await;
    assert_eq!(member.assert_ok()["join_authorised_via_users_server"], "@alice:localhost");
    carol.post(&format!("{V3}/join/{room}"), json!({})).await.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn the_same_state_again_is_not_a_new_event_and_public_rooms_have_no_guest_access_event() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    // As with Synapse, absent guest access means "forbidden": no event is sent for it.
    alice.get(&format!("{V3}/rooms/{room}/state/m.room.guest_access")).await.assert_error(404, "M_NOT_FOUND");

    let path = format!("{V3}/rooms/{room}/state/m.room.history_visibility");
    let first = alice.put(&path, json!({"history_visibility": "joined"})).await;
    let first = first.assert_ok()["event_id"].clone();
    let again = alice.put(&path, json!({"history_visibility": "joined"})).await;
    assert_eq!(again.assert_ok()["event_id"], first, "identical state is deduplicated");
    let changed = alice.put(&path, json!({"history_visibility": "shared"})).await;
    assert_ne!(changed.assert_ok()["event_id"], first);
}

#[tokio::test]
async fn an_event_this_server_does_not_have_can_be_redacted() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let other = bob.create_room(json!({"preset": "public_chat"})).await;
    let elsewhere = bob.send_text(&other, "b1", "in another room").await;

    // Another server's event that has not reached us: the redaction is sent all the same.
    let unknown = "$not-here-yet:remote.example";
    let path = format!("{V3}/rooms/{room}/redact/{}/r1", urlencode(unknown));
    let sent = alice.put(&path, json!({"reason": "spam"})).await;
    let redaction = sent.assert_ok()["event_id"].as_str().unwrap().to_owned();
    let got = alice.get(&format!("{V3}/rooms/{room}/event/{}", urlencode(&redaction))).await;
    assert_eq!(got.assert_ok()["type"], "m.room.redaction");
    let redacts = got.body["content"].get("redacts").unwrap_or(&got.body["redacts"]);
    assert_eq!(redacts, unknown, "{}", got.body);

    // An event this server has in another room stays out of reach.
    let path = format!("{V3}/rooms/{room}/redact/{}/r2", urlencode(&elsewhere));
    alice.put(&path, json!({})).await.assert_error(404, "M_NOT_FOUND");
}

fn urlencode(id: &str) -> String {
    id.replace('$', "%24").replace(':', "%3A").replace('/', "%2F").replace('+', "%2B").replace('=', "%3D")
}

#[tokio::test]
async fn public_room_entries_name_their_join_rule() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let knock = alice.create_room(json!({"preset": "private_chat", "room_version": "10"})).await;
    alice
        .put(
            &format!("{V3}/rooms/{knock}/state/m.room.join_rules"),
            json!({"join_rule": "knock_restricted", "allow": []}),
        )
        .await
        .assert_ok();
    let public = alice.create_room(json!({"preset": "public_chat"})).await;
    for room in [&knock, &public] {
        let path = format!("{V3}/directory/list/room/{room}");
        alice.put(&path, json!({"visibility": "public"})).await.assert_ok();
    }
    let listed = alice.get(&format!("{V3}/publicRooms")).await;
    let chunk = listed.assert_ok()["chunk"].as_array().unwrap().clone();
    let rule = |room: &str| chunk.iter().find(|r| r["room_id"] == room).map(|r| r["join_rule"].clone());
    assert_eq!(rule(&knock), Some(json!("knock_restricted")), "{chunk:?}");
    // Even the default is said out loud: clients and Synapse's tests look for it.
    assert_eq!(rule(&public), Some(json!("public")), "{chunk:?}");
}

#[tokio::test]
async fn room_summaries_show_what_a_caller_may_see_before_joining() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let carol = Client::register(&server.base_url, "carol", "pw").await;
    let space = alice
        .create_room(json!({"preset": "public_chat", "name": "Space", "room_alias_name": "space",
            "creation_content": {"type": "m.space"}}))
        .await;
    bob.post(&format!("{V3}/join/{space}"), json!({})).await.assert_ok();
    let restricted = alice
        .create_room(json!({"room_version": "8", "name": "Inner", "topic": "members of the space",
            "initial_state": [{"type": "m.room.join_rules", "state_key": "",
            "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]}}]}))
        .await;
    let private = alice.create_room(json!({"preset": "private_chat"})).await;
    let summary = "/_matrix/client/v1/room_summary";

    // A restricted room: its allowed rooms, to a member of one of them.
    let inner = bob.get(&format!("{summary}/{restricted}")).await;
    let inner = inner.assert_ok();
    assert_eq!(inner["room_id"], json!(restricted));
    assert_eq!(inner["join_rule"], "restricted");
    assert_eq!(inner["allowed_room_ids"], json!([space]));
    assert_eq!(inner["name"], "Inner");
    assert_eq!(inner["topic"], "members of the space");
    assert_eq!(inner["room_version"], "8");
    assert_eq!(inner["num_joined_members"], 1);
    assert!(inner.get("membership").is_none(), "{inner}");
    // Someone in none of them cannot see it, as if it did not exist.
    carol.get(&format!("{summary}/{restricted}")).await.assert_error(404, "M_NOT_FOUND");

    // An invite-only room: to its members (with their membership), no allowed rooms.
    let own = alice.get(&format!("{summary}/{private}")).await;
    let own = own.assert_ok();
    assert_eq!(own["join_rule"], "invite");
    assert_eq!(own["membership"], "join");
    assert!(own.get("allowed_room_ids").is_none(), "{own}");
    bob.get(&format!("{summary}/{private}")).await.assert_error(404, "M_NOT_FOUND");
    alice.post(&format!("{V3}/rooms/{private}/invite"), json!({"user_id": bob.user_id()})).await.assert_ok();
    assert_eq!(bob.get(&format!("{summary}/{private}")).await.assert_ok()["membership"], "invite");

    // A public space, by alias and without a token.
    let anonymous = Client::new(&server.base_url);
    let public = anonymous.get(&format!("{summary}/%23space:localhost")).await;
    let public = public.assert_ok();
    assert_eq!(public["room_id"], json!(space));
    assert_eq!(public["room_type"], "m.space");
    assert_eq!(public["num_joined_members"], 2);
    anonymous.get(&format!("{summary}/{private}")).await.assert_error(404, "M_NOT_FOUND");
    alice.get(&format!("{summary}/!nowhere:localhost")).await.assert_error(404, "M_NOT_FOUND");
}

#[tokio::test]
async fn rooms_and_users_can_be_reported_and_shared_rooms_listed() {
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let carol = Client::register(&server.base_url, "carol", "pw").await;
    let shared = alice.create_room(json!({"preset": "public_chat"})).await;
    let other = alice.create_room(json!({"preset": "public_chat"})).await;
    alice.create_room(json!({"preset": "private_chat"})).await;
    for room in [&shared, &other] {
        bob.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
    }
    carol.post(&format!("{V3}/rooms/{shared}/join"), json!({})).await.assert_ok();

    let mutual = alice.get("/_matrix/client/v1/mutual_rooms?user_id=@bob:localhost").await;
    let mut joined: Vec<String> = mutual.assert_ok()["joined"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    joined.sort();
    let mut expected = vec![shared.clone(), other.clone()];
    expected.sort();
    assert_eq!(joined, expected);
    assert_eq!(mutual.body["count"], json!(2));
    let unstable = alice
        .get("/_matrix/client/unstable/uk.half-shot.msc2666/user/mutual_rooms?user_id=@carol:localhost")
        .await;
    assert_eq!(unstable.assert_ok()["joined"], json!([shared]));
    alice
        .get("/_matrix/client/v1/mutual_rooms?user_id=@alice:localhost")
        .await
        .assert_error(400, "M_INVALID_PARAM");

    // Reports: a room this server knows, a user it knows; anything else is not found.
    carol.post(&format!("{V3}/rooms/{other}/report"), json!({"reason": "spam"})).await.assert_ok();
    carol
        .post(&format!("{V3}/rooms/!nope:localhost/report"), json!({"reason": "x"}))
        .await
        .assert_error(404, "M_NOT_FOUND");
    carol.post(&format!("{V3}/users/@bob:localhost/report"), json!({"reason": "rude"})).await.assert_ok();
    carol
        .post(&format!("{V3}/users/@ghost:localhost/report"), json!({"reason": "x"}))
        .await
        .assert_error(404, "M_NOT_FOUND");
    carol
        .post(&format!("{V3}/users/@far:elsewhere.example/report"), json!({"reason": "x"}))
        .await
        .assert_error(404, "M_NOT_FOUND");
}
