//! `/relations`: thread replies, reactions and edits of an event, filtered by relation and
//! event type, paged both ways, recursive, without what was redacted or what the requester
//! may not see.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};

const V1: &str = "/_matrix/client/v1";
const V3: &str = "/_matrix/client/v3";

async fn send(client: &Client, room: &str, kind: &str, txn: &str, content: Value) -> String {
    let reply = client.put(&format!("{V3}/rooms/{room}/send/{kind}/{txn}"), content).await;
    reply.assert_ok()["event_id"].as_str().unwrap().to_owned()
}

/// Every byte but letters and digits percent-encoded, for JSON in a query string.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn ids(body: &Value) -> Vec<String> {
    body["chunk"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn relations_filter_page_recurse_and_forget_redacted_events() {
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let carol = Client::register(&server.base_url, "carol", "pw").await;
    let room = alice
        .create_room(json!({"preset": "private_chat", "invite": ["@bob:localhost"],
            "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]}))
        .await;
    bob.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
    let root =
        send(&alice, &room, "m.room.message", "root", json!({"msgtype": "m.text", "body": "root"})).await;
    let thread = |body: &str| json!({"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
    let mut replies = Vec::new();
    for i in 0..3 {
        replies
            .push(send(&bob, &room, "m.room.message", &format!("t{i}"), thread(&format!("reply {i}"))).await);
    }
    let reaction = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}});
    let react = send(&bob, &room, "m.reaction", "r", reaction).await;
    let edit = json!({"msgtype": "m.text", "body": "* root!", "m.new_content": {"msgtype": "m.text", "body": "root!"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": root}});
    let edited = send(&alice, &room, "m.room.message", "e", edit).await;
    // A reaction to a thread reply: a relation of a relation.
    let nested = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": replies[0], "key": "🎉"}});
    let deep = send(&alice, &room, "m.reaction", "d", nested).await;
    // A plain reply is no relation (`m.in_reply_to` has no rel_type).
    let reply =
        json!({"msgtype": "m.text", "body": "re", "m.relates_to": {"m.in_reply_to": {"event_id": root}}});
    send(&bob, &room, "m.room.message", "p", reply).await;

    let all = bob.get(&format!("{V1}/rooms/{room}/relations/{root}")).await;
    let expected: Vec<String> =
        [edited.clone(), react.clone(), replies[2].clone(), replies[1].clone(), replies[0].clone()].into();
    assert_eq!(ids(all.assert_ok()), expected, "newest first");
    assert!(all.body.get("next_batch").is_none());

    let threads = bob.get(&format!("{V1}/rooms/{room}/relations/{root}/m.thread?limit=2")).await;
    assert_eq!(ids(threads.assert_ok()), [replies[2].clone(), replies[1].clone()]);
    let next = threads.body["next_batch"].as_str().unwrap().to_owned();
    let rest = bob.get(&format!("{V1}/rooms/{room}/relations/{root}/m.thread?limit=2&from={next}")).await;
    assert_eq!(ids(rest.assert_ok()), [replies[0].clone()]);
    assert!(rest.body.get("next_batch").is_none(), "{}", rest.body);
    let forward = bob.get(&format!("{V1}/rooms/{room}/relations/{root}/m.thread?dir=f")).await;
    assert_eq!(ids(forward.assert_ok()), replies);

    let reactions = bob.get(&format!("{V1}/rooms/{room}/relations/{root}/m.annotation/m.reaction")).await;
    assert_eq!(ids(reactions.assert_ok()), std::slice::from_ref(&react));
    let none = bob.get(&format!("{V1}/rooms/{room}/relations/{root}/m.annotation/m.room.message")).await;
    assert_eq!(ids(none.assert_ok()), Vec::<String>::new());

    let recursive = bob.get(&format!("{V1}/rooms/{room}/relations/{root}/m.annotation?recurse=true")).await;
    assert_eq!(ids(recursive.assert_ok()), [deep.clone(), react.clone()]);
    assert_eq!(recursive.body["recursion_depth"], json!(3));

    // A redacted relation is no longer one.
    bob.put(&format!("{V3}/rooms/{room}/redact/{}/x", replies[1]), json!({})).await.assert_ok();
    let threads = bob.get(&format!("{V1}/rooms/{room}/relations/{root}/m.thread")).await;
    assert_eq!(ids(threads.assert_ok()), [replies[2].clone(), replies[0].clone()]);

    // Someone who may not read the room is refused, as by /messages; bad tokens are Matrix errors.
    carol.get(&format!("{V1}/rooms/{room}/relations/{root}")).await.assert_error(403, "M_FORBIDDEN");
    bob.get(&format!("{V1}/rooms/{room}/relations/{root}?from=nonsense"))
        .await
        .assert_error(400, "M_INVALID_PARAM");
}

/// Two federating servers, alice on the first in a public room, bob from the second joined,
/// and a root message from alice that bob has seen.
async fn federated_room() -> ((TestServer, TestServer), Client, Client, String, String) {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let server_a = alice.user_id().split(':').nth(1).unwrap().to_owned();
    bob.post(&format!("{V3}/join/{room}?via={server_a}"), json!({})).await.assert_ok();
    let root =
        send(&alice, &room, "m.room.message", "root", json!({"msgtype": "m.text", "body": "root"})).await;
    bob.wait_for_bodies(&room, &["root"]).await;
    ((a, b), alice, bob, room, root)
}

#[tokio::test]
async fn relations_from_another_server_are_indexed() {
    let (_servers, alice, bob, room, root) = federated_room().await;
    let content = json!({"msgtype": "m.text", "body": "from b", "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
    let reply = send(&bob, &room, "m.room.message", "t", content).await;
    alice.wait_for_bodies(&room, &["from b"]).await;
    let threads = alice.get(&format!("{V1}/rooms/{room}/relations/{root}/m.thread")).await;
    assert_eq!(ids(threads.assert_ok()), [reply]);
}

#[tokio::test]
async fn threads_list_by_latest_activity_with_their_summaries() {
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let carol = Client::register(&server.base_url, "carol", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
    let text = |body: &str| json!({"msgtype": "m.text", "body": body});
    let in_thread = |root: &str, body: &str| json!({"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
    let first = send(&alice, &room, "m.room.message", "r1", text("first root")).await;
    let second = send(&bob, &room, "m.room.message", "r2", text("second root")).await;
    send(&alice, &room, "m.room.message", "a", in_thread(&second, "on second")).await;
    send(&bob, &room, "m.room.message", "b", in_thread(&first, "on first")).await;
    let latest = send(&bob, &room, "m.room.message", "c", in_thread(&first, "again on first")).await;
    send(&alice, &room, "m.room.message", "plain", text("no thread")).await;

    let all = alice.get(&format!("{V1}/rooms/{room}/threads")).await;
    assert_eq!(ids(all.assert_ok()), [first.clone(), second.clone()], "newest activity first");
    let summary = &all.body["chunk"][0]["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(summary["count"], json!(2));
    assert_eq!(summary["latest_event"]["event_id"], json!(latest));
    assert_eq!(summary["current_user_participated"], json!(true), "alice wrote the root");

    // Bob took part in both; a newcomer in none.
    let bobs = bob.get(&format!("{V1}/rooms/{room}/threads?include=participated")).await;
    assert_eq!(ids(bobs.assert_ok()).len(), 2);
    carol.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
    let carols = carol.get(&format!("{V1}/rooms/{room}/threads?include=participated")).await;
    assert_eq!(ids(carols.assert_ok()), Vec::<String>::new());

    let page = alice.get(&format!("{V1}/rooms/{room}/threads?limit=1")).await;
    assert_eq!(ids(page.assert_ok()), std::slice::from_ref(&first));
    let next = page.body["next_batch"].as_str().unwrap().to_owned();
    let rest = alice.get(&format!("{V1}/rooms/{room}/threads?limit=1&from={next}")).await;
    assert_eq!(ids(rest.assert_ok()), std::slice::from_ref(&second));
    assert!(rest.body.get("next_batch").is_none(), "{}", rest.body);
}

/// What relates to an event travels with it (`unsigned.m.relations`) wherever it is served:
/// the thread summary, the newest edit by its sender, references; on another server too.
#[tokio::test]
async fn aggregations_come_with_the_event_everywhere_and_across_servers() {
    let (_servers, alice, bob, room, root) = federated_room().await;
    let reply = json!({"msgtype": "m.text", "body": "reply", "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
    let reply = send(&bob, &room, "m.room.message", "t", reply).await;
    // An edit by someone else does not count; the sender's own does.
    let forged = json!({"msgtype": "m.text", "body": "* hacked", "m.new_content": {"msgtype": "m.text", "body": "hacked"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": root}});
    send(&bob, &room, "m.room.message", "f", forged).await;
    let edit = json!({"msgtype": "m.text", "body": "* root!", "m.new_content": {"msgtype": "m.text", "body": "root!"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": root}});
    let edit = send(&alice, &room, "m.room.message", "e", edit).await;
    let reference = json!({"msgtype": "m.text", "body": "see above", "m.relates_to": {"rel_type": "m.reference", "event_id": root}});
    let reference = send(&alice, &room, "m.room.message", "r", reference).await;
    bob.wait_for_bodies(&room, &["see above"]).await;

    let check = |event: &Value, who: &str| {
        let relations = &event["unsigned"]["m.relations"];
        assert_eq!(relations["m.thread"]["count"], json!(1), "{who}: {event}");
        assert_eq!(relations["m.thread"]["latest_event"]["event_id"], json!(reply), "{who}");
        assert_eq!(relations["m.replace"]["event_id"], json!(edit), "{who}: {event}");
        assert_eq!(relations["m.reference"]["chunk"], json!([{"event_id": reference}]), "{who}");
        assert_eq!(event["content"]["body"], json!("root"), "{who}: the content stays as sent");
    };
    for (client, name, participated) in [(&alice, "alice on A", true), (&bob, "bob on B", true)] {
        let event = client.get(&format!("{V3}/rooms/{room}/event/{root}")).await;
        check(event.assert_ok(), name);
        assert_eq!(
            event.body["unsigned"]["m.relations"]["m.thread"]["current_user_participated"],
            json!(participated)
        );
        let context = client.get(&format!("{V3}/rooms/{room}/context/{root}?limit=0")).await;
        check(&context.assert_ok()["event"], name);
        let messages = client.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=50")).await;
        let found = messages.assert_ok()["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event_id"] == json!(root))
            .cloned();
        check(&found.unwrap(), name);
        let synced = client.get(&format!("{V3}/sync?timeout=0")).await;
        let events =
            synced.assert_ok()["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().clone();
        if let Some(in_sync) = events.iter().find(|e| e["event_id"] == json!(root)) {
            check(in_sync, name);
        }
    }
}

/// A user reacts with one key to one event once: a second identical reaction is refused, another
/// key or another user's is not, and redacting the first allows it again.
#[tokio::test]
async fn the_same_reaction_twice_is_refused() {
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let target = alice.send_text(&room, "t", "react to me").await;
    let reaction =
        |key: &str| json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}});
    let first = send(&alice, &room, "m.reaction", "r1", reaction("👍")).await;
    let again = alice.put(&format!("{V3}/rooms/{room}/send/m.reaction/r2"), reaction("👍")).await;
    again.assert_error(400, "M_DUPLICATE_ANNOTATION");
    // A retry of the first request is the same request, not a duplicate.
    let retried = alice.put(&format!("{V3}/rooms/{room}/send/m.reaction/r1"), reaction("👍")).await;
    assert_eq!(retried.assert_ok()["event_id"], json!(first));
    send(&alice, &room, "m.reaction", "r3", reaction("🎉")).await;
    send(&bob, &room, "m.reaction", "r4", reaction("👍")).await;
    alice.put(&format!("{V3}/rooms/{room}/redact/{first}/x"), json!({})).await.assert_ok();
    send(&alice, &room, "m.reaction", "r5", reaction("👍")).await;
}

/// `/messages` and `/context` filters can ask for the events others relate to: by relation type
/// and by the relating sender (as clients list the threads someone took part in).
#[tokio::test]
async fn messages_filtered_by_what_relates_to_them() {
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let one = alice.send_text(&room, "1", "one").await;
    let two = alice.send_text(&room, "2", "two").await;
    let three = alice.send_text(&room, "3", "three").await;
    let reply = |root: &str, body: &str| json!({"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
    send(&bob, &room, "m.room.message", "r1", reply(&one, "bob in one")).await;
    send(&alice, &room, "m.room.message", "r2", reply(&two, "alice in two")).await;
    let reaction = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": three, "key": "👍"}});
    send(&bob, &room, "m.reaction", "r3", reaction).await;

    let page = |filter: Value| {
        let (alice, room) = (&alice, &room);
        async move {
            let filter = percent_encode(&filter.to_string());
            ids(alice
                .get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=50&filter={filter}"))
                .await
                .assert_ok())
        }
    };
    assert_eq!(page(json!({"related_by_rel_types": ["m.thread"]})).await, [two.clone(), one.clone()]);
    assert_eq!(
        page(json!({"related_by_rel_types": ["m.thread"], "related_by_senders": [bob.user_id()]})).await,
        std::slice::from_ref(&one)
    );
    assert_eq!(page(json!({"related_by_senders": [bob.user_id()]})).await, [three.clone(), one.clone()]);
    assert_eq!(page(json!({"related_by_rel_types": ["m.replace"]})).await, Vec::<String>::new());
    let filter = percent_encode(&json!({"related_by_rel_types": ["m.thread"]}).to_string());
    let context = alice.get(&format!("{V3}/rooms/{room}/context/{two}?limit=10&filter={filter}")).await;
    let before: Vec<&str> = context.assert_ok()["events_before"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(before, [one.as_str()]);
}
