//! Space hierarchies (`GET /_matrix/client/v1/rooms/{roomId}/hierarchy`): depth-first in the
//! spec's child order, `max_depth`, `suggested_only`, pages that follow one another, removed
//! and non-space links ignored, only rooms the user may see (and under them only what they
//! may see); across servers through `GET /_matrix/federation/v1/hierarchy/{roomId}`.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

async fn space(client: &Client, name: &str, extra: Value) -> String {
    let mut body = json!({"preset": "public_chat", "name": name, "creation_content": {"type": "m.space"}});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    client.create_room(body).await
}

async fn room(client: &Client, name: &str, extra: Value) -> String {
    let mut body = json!({"preset": "public_chat", "name": name});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    client.create_room(body).await
}

/// Links `child` under `parent`. Links are ordered by their timestamps (then by room ID), so
/// each gets a millisecond of its own, as links made by hand would.
async fn link(client: &Client, parent: &str, child: &str, content: Value) {
    let path = format!("{V3}/rooms/{parent}/state/m.space.child/{child}");
    client.put(&path, content).await.assert_ok();
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
}

async fn hierarchy(client: &Client, root: &str, query: &str) -> Value {
    let reply = client.get(&format!("/_matrix/client/v1/rooms/{root}/hierarchy{query}")).await;
    reply.assert_ok().clone()
}

fn ids(page: &Value) -> Vec<String> {
    page["rooms"].as_array().unwrap().iter().map(|r| r["room_id"].as_str().unwrap().to_owned()).collect()
}

/// A space's links as the page shows them, in order.
fn links(page: &Value, space: &str) -> Vec<String> {
    let room = page["rooms"].as_array().unwrap().iter().find(|r| r["room_id"] == space).unwrap();
    room["children_state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "m.space.child");
            assert!(e["origin_server_ts"].is_u64(), "{e}");
            e["state_key"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_hierarchy_is_walked_depth_first_in_pages_to_the_depth_asked() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let via = json!(["localhost"]);
    let root = space(&alice, "Root", json!({})).await;
    let r1 = room(&alice, "R1", json!({})).await;
    let ss1 = space(&alice, "Sub-Space 1", json!({"topic": "the first"})).await;
    let r2 = room(&alice, "R2", json!({})).await;
    let ss2 = space(&alice, "SS2", json!({})).await;
    let r3 = room(&alice, "R3", json!({})).await;
    // Bob's rooms: alice is not in them; one is world-readable.
    let r4 = room(
        &bob,
        "R4",
        json!({"initial_state": [{"type": "m.room.history_visibility", "state_key": "",
        "content": {"history_visibility": "world_readable"}}]}),
    )
    .await;
    let r5 = room(&bob, "R5", json!({})).await;
    link(&alice, &root, &r1, json!({"via": via, "suggested": true})).await;
    link(&alice, &root, &ss1, json!({"via": via})).await;
    link(&alice, &root, &r2, json!({"via": via, "suggested": true})).await;
    // R2 is no space: its link to R5 is not followed.
    link(&alice, &r2, &r5, json!({"via": via})).await;
    link(&alice, &ss1, &ss2, json!({"via": via})).await;
    link(&alice, &ss2, &r3, json!({"via": via})).await;
    link(&alice, &ss2, &r4, json!({"via": via})).await;

    let whole = hierarchy(&alice, &root, "").await;
    assert_eq!(
        ids(&whole),
        [root.as_str(), r1.as_str(), ss1.as_str(), ss2.as_str(), r3.as_str(), r4.as_str(), r2.as_str()]
    );
    assert!(whole.get("next_batch").is_none(), "{whole}");
    assert_eq!(links(&whole, &root), [r1.as_str(), ss1.as_str(), r2.as_str()]);
    assert_eq!(links(&whole, &ss1), [ss2.as_str()]);
    assert_eq!(links(&whole, &ss2), [r3.as_str(), r4.as_str()]);
    assert!(links(&whole, &r2).is_empty(), "a room that is no space has no children");
    let first = &whole["rooms"][2];
    assert_eq!((first["name"].as_str(), first["room_type"].as_str()), (Some("Sub-Space 1"), Some("m.space")));
    assert_eq!(first["topic"], "the first");
    assert!(whole["rooms"][1].get("room_type").is_none(), "{whole}");

    // Rooms at the depth limit are shown with their links, which are not followed.
    let shallow = hierarchy(&alice, &root, "?max_depth=1").await;
    assert_eq!(ids(&shallow), [root.as_str(), r1.as_str(), ss1.as_str(), r2.as_str()]);
    assert_eq!(links(&shallow, &ss1), [ss2.as_str()]);
    assert_eq!(ids(&hierarchy(&alice, &root, "?max_depth=0").await), [root.as_str()]);

    // Suggested links only, in the walk and in the links shown.
    let suggested = hierarchy(&alice, &root, "?suggested_only=true").await;
    assert_eq!(ids(&suggested), [root.as_str(), r1.as_str(), r2.as_str()]);
    assert_eq!(links(&suggested, &root), [r1.as_str(), r2.as_str()]);

    // Pages follow one another; a token is for the parameters it was made with.
    let page = hierarchy(&alice, &root, "?limit=4").await;
    assert_eq!(ids(&page), [root.as_str(), r1.as_str(), ss1.as_str(), ss2.as_str()]);
    let next = page["next_batch"].as_str().unwrap();
    let rest = hierarchy(&alice, &root, &format!("?from={next}")).await;
    assert_eq!(ids(&rest), [r3.as_str(), r4.as_str(), r2.as_str()]);
    let mismatched =
        alice.get(&format!("/_matrix/client/v1/rooms/{root}/hierarchy?from={next}&max_depth=1")).await;
    mismatched.assert_error(400, "M_INVALID_PARAM");
    let bogus = alice.get(&format!("/_matrix/client/v1/rooms/{root}/hierarchy?from=nonsense")).await;
    bogus.assert_error(400, "M_INVALID_PARAM");
    let zero = alice.get(&format!("/_matrix/client/v1/rooms/{root}/hierarchy?limit=0")).await;
    zero.assert_error(400, "M_INVALID_PARAM");

    // A link without `via` is no link.
    link(&alice, &root, &ss1, json!({})).await;
    let pruned = hierarchy(&alice, &root, "").await;
    assert_eq!(ids(&pruned), [root.as_str(), r1.as_str(), r2.as_str()]);
    assert_eq!(links(&pruned, &root), [r1.as_str(), r2.as_str()]);

    // An `order` puts a link first.
    link(&alice, &root, &r2, json!({"via": via, "order": "a"})).await;
    assert_eq!(links(&hierarchy(&alice, &root, "").await, &root), [r2.as_str(), r1.as_str()]);
}

#[tokio::test]
async fn a_hierarchy_shows_only_the_rooms_a_user_may_see() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let via = json!(["localhost"]);
    let root = space(&alice, "Root", json!({})).await;
    let r1 = room(&alice, "R1", json!({"preset": "private_chat"})).await;
    let ss1 = space(&alice, "SS1", json!({"preset": "private_chat"})).await;
    let r2 = room(
        &alice,
        "R2",
        json!({"initial_state": [{"type": "m.room.history_visibility", "state_key": "",
        "content": {"history_visibility": "world_readable"}}]}),
    )
    .await;
    let r3 = room(&alice, "R3", json!({"preset": "private_chat"})).await;
    let restricted = room(
        &alice,
        "Restricted",
        json!({"room_version": "8", "initial_state": [{"type": "m.room.join_rules", "state_key": "",
            "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": root}]}}]}),
    )
    .await;
    for (parent, child) in [(&root, &r1), (&root, &ss1), (&root, &restricted), (&ss1, &r2), (&ss1, &r3)] {
        link(&alice, parent, child, json!({"via": via})).await;
    }

    // Before joining the root, bob sees it (it is public) but not the restricted room.
    assert_eq!(ids(&hierarchy(&bob, &root, "").await), [root.as_str()]);
    bob.post(&format!("{V3}/join/{root}"), json!({})).await.assert_ok();
    let seen = hierarchy(&bob, &root, "").await;
    // Every link is shown, whether or not bob may see the room it leads to.
    assert_eq!(links(&seen, &root), [r1.as_str(), ss1.as_str(), restricted.as_str()]);
    assert_eq!(ids(&seen), [root.as_str(), restricted.as_str()]);
    let entry = &seen["rooms"][1];
    assert_eq!(entry["join_rule"], "restricted");
    assert_eq!(entry["allowed_room_ids"], json!([root]));

    // An invite opens a room; what is under a room bob may not see stays hidden.
    for invited in [&r1, &r3] {
        alice
            .post(&format!("{V3}/rooms/{invited}/invite"), json!({"user_id": bob.user_id()}))
            .await
            .assert_ok();
    }
    assert_eq!(ids(&hierarchy(&bob, &root, "").await), [root.as_str(), r1.as_str(), restricted.as_str()]);
    alice.post(&format!("{V3}/rooms/{ss1}/invite"), json!({"user_id": bob.user_id()})).await.assert_ok();
    let all = hierarchy(&bob, &root, "").await;
    assert_eq!(
        ids(&all),
        [root.as_str(), r1.as_str(), ss1.as_str(), r2.as_str(), r3.as_str(), restricted.as_str()]
    );
    assert_eq!(links(&all, &ss1), [r2.as_str(), r3.as_str()]);

    // A root bob may not see is refused.
    let carol = Client::register(&server.base_url, "carol", "pw").await;
    let private = carol.get(&format!("/_matrix/client/v1/rooms/{r3}/hierarchy")).await;
    private.assert_error(403, "M_FORBIDDEN");
}

#[tokio::test]
async fn a_hierarchy_reaches_rooms_on_other_servers() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let dave = Client::register(&a.base_url, "dave", "pw").await;
    let readable = json!({"initial_state": [{"type": "m.room.history_visibility", "state_key": "",
        "content": {"history_visibility": "world_readable"}}]});
    let root = space(&alice, "ROOT", readable.clone()).await;
    let r1 = room(&alice, "R1", readable.clone()).await;
    let ss1 = space(&alice, "SS1", readable.clone()).await;
    let r4 = room(&alice, "R4", readable.clone()).await;
    let r2 = room(&bob, "r2", readable.clone()).await;
    let ss2 = space(&bob, "ss2", readable.clone()).await;
    let r3 = room(&bob, "r3", readable.clone()).await;
    let (a_via, b_via) = (json!({"via": ["hs-a.test"]}), json!({"via": ["hs-b.test"]}));
    link(&alice, &root, &r1, a_via.clone()).await;
    link(&alice, &root, &ss1, a_via.clone()).await;
    link(&alice, &root, &r2, b_via.clone()).await;
    link(&alice, &ss1, &ss2, b_via.clone()).await;
    link(&alice, &ss1, &r3, b_via.clone()).await;
    link(&bob, &ss2, &r4, a_via.clone()).await;

    let whole = hierarchy(&alice, &root, "").await;
    assert_eq!(
        ids(&whole),
        [root.as_str(), r1.as_str(), ss1.as_str(), ss2.as_str(), r4.as_str(), r3.as_str(), r2.as_str()]
    );
    assert_eq!(links(&whole, &ss2), [r4.as_str()]);
    let remote = whole["rooms"].as_array().unwrap().iter().find(|r| r["room_id"] == json!(ss2)).unwrap();
    assert_eq!((remote["name"].as_str(), remote["room_type"].as_str()), (Some("ss2"), Some("m.space")));

    // A restricted room on B, for members of ROOT: B can tell only once it is in ROOT.
    let inner = room(
        &bob,
        "Inner",
        json!({"room_version": "8", "initial_state": [{"type": "m.room.join_rules", "state_key": "",
            "content": {"join_rule": "restricted",
                "allow": [{"type": "m.room_membership", "room_id": root, "via": ["hs-a.test"]}]}}]}),
    )
    .await;
    link(&alice, &root, &inner, b_via).await;
    assert!(!ids(&hierarchy(&alice, &root, "?max_depth=1").await).contains(&inner));
    bob.post(&format!("{V3}/join/{root}?via=hs-a.test"), json!({})).await.assert_ok();
    // Once B is in ROOT it answers for alice's server; alice is in ROOT, dave is not.
    let mut shown = false;
    for _ in 0..50 {
        if ids(&hierarchy(&alice, &root, "?max_depth=1").await).contains(&inner) {
            shown = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(shown, "the restricted room never showed to a member of the allowed room");
    assert!(!ids(&hierarchy(&dave, &root, "?max_depth=1").await).contains(&inner));
}

#[tokio::test]
async fn a_room_summary_of_a_room_elsewhere_comes_from_its_server() {
    let (a, b) = TestServer::federating_pair().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let public = room(&bob, "Open", json!({"room_alias_name": "open"})).await;
    let private = room(&bob, "Closed", json!({"preset": "private_chat"})).await;
    let summary = "/_matrix/client/v1/room_summary";
    let open = alice.get(&format!("{summary}/{public}?via=hs-b.test")).await;
    let open = open.assert_ok();
    assert_eq!((open["room_id"].as_str(), open["name"].as_str()), (Some(public.as_str()), Some("Open")));
    assert_eq!(open["num_joined_members"], 1);
    // By alias, the alias's server is asked.
    let by_alias = alice.get(&format!("{summary}/%23open:hs-b.test")).await;
    assert_eq!(by_alias.assert_ok()["room_id"], json!(public));
    alice.get(&format!("{summary}/{private}?via=hs-b.test")).await.assert_error(404, "M_NOT_FOUND");
    alice.get(&format!("{summary}/{public}")).await.assert_error(404, "M_NOT_FOUND");
}
