//! `POST /search` against the real server: words found by stem and phrase, in the rooms the
//! searcher is joined to and only where history lets them read; filters, keys, order, paging,
//! groups, context with profiles and room state; bad requests refused with Matrix errors; events
//! from another server found; the index rebuilt when its directory is lost.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

async fn search(client: &Client, criteria: Value) -> Value {
    let reply =
        client.post(&format!("{V3}/search"), json!({"search_categories": {"room_events": criteria}})).await;
    reply.assert_ok()["search_categories"]["room_events"].clone()
}

fn bodies(found: &Value) -> Vec<String> {
    found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"]["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn finds_what_the_searcher_may_read_with_filters_keys_context_state_and_groups() {
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let carol = Client::register(&server.base_url, "carol", "pw").await;
    bob.put(&format!("{V3}/profile/@bob:localhost/displayname"), json!({"displayname": "Bobby"}))
        .await
        .assert_ok();
    let open = alice
        .create_room(
            json!({"preset": "public_chat", "name": "Gardening club", "topic": "all about tomatoes"}),
        )
        .await;
    let closed = alice
        .create_room(json!({"preset": "public_chat", "initial_state": [{"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]}))
        .await;
    for room in [&open, &closed] {
        bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    }
    alice.send_text(&open, "a1", "Our tomatoes are ripening nicely").await;
    bob.send_text(&open, "b1", "I planted tomato seeds yesterday").await;
    alice.send_text(&closed, "a2", "secret tomato sauce recipe").await;
    let encrypted = json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "tomato", "sender_key": "k", "session_id": "s", "device_id": "D"});
    alice.put(&format!("{V3}/rooms/{open}/send/m.room.encrypted/e1"), encrypted).await.assert_ok();

    // Stems match ("tomato" finds "tomatoes"), across the rooms the searcher is in; an
    // encrypted event has nothing to find.
    let found =
        search(&bob, json!({"search_term": "tomato", "keys": ["content.body"], "order_by": "recent"})).await;
    assert_eq!(
        bodies(&found),
        [
            "secret tomato sauce recipe",
            "I planted tomato seeds yesterday",
            "Our tomatoes are ripening nicely"
        ]
    );
    assert_eq!(found["count"], json!(3));
    let highlights: Vec<&str> =
        found["highlights"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    assert!(highlights.contains(&"tomatoes") && highlights.contains(&"tomato"), "{highlights:?}");

    // Carol joins the closed room after its message: she may not read it, so it is not found.
    carol.post(&format!("{V3}/join/{closed}"), json!({})).await.assert_ok();
    carol.post(&format!("{V3}/join/{open}"), json!({})).await.assert_ok();
    let for_carol = search(&carol, json!({"search_term": "tomato", "keys": ["content.body"]})).await;
    assert_eq!(for_carol["results"].as_array().unwrap().len(), 2, "{for_carol}");
    assert!(!bodies(&for_carol).contains(&"secret tomato sauce recipe".to_owned()));

    // A phrase, filters by room and by sender, and the room's name and topic as keys.
    let phrase = search(&bob, json!({"search_term": "\"tomato seeds\""})).await;
    assert_eq!(bodies(&phrase), ["I planted tomato seeds yesterday"]);
    let only_alice = search(&bob, json!({"search_term": "tomato", "keys": ["content.body"], "filter": {"senders": [alice.user_id()], "rooms": [open]}})).await;
    assert_eq!(
        bodies(&only_alice),
        ["Our tomatoes are ripening nicely"],
        "the topic (alice's too) is not a body"
    );
    let not_alice =
        search(&bob, json!({"search_term": "tomato", "filter": {"not_senders": [alice.user_id()]}})).await;
    assert_eq!(bodies(&not_alice), ["I planted tomato seeds yesterday"]);
    let names = search(&bob, json!({"search_term": "gardening", "keys": ["content.name"]})).await;
    assert_eq!(names["results"][0]["result"]["type"], json!("m.room.name"), "{names}");
    let topics = search(&bob, json!({"search_term": "tomatoes", "keys": ["content.topic"]})).await;
    assert_eq!(topics["results"][0]["result"]["content"]["topic"], json!("all about tomatoes"), "{topics}");
    let no_names = search(&bob, json!({"search_term": "gardening", "keys": ["content.body"]})).await;
    assert_eq!(no_names["results"], json!([]));

    // Context with the senders' profiles, the rooms' state, groups by room and by sender.
    let full = search(
        &bob,
        json!({"search_term": "seeds", "event_context": {"before_limit": 1, "after_limit": 1, "include_profile": true},
            "include_state": true, "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]}}),
    )
    .await;
    let result = &full["results"][0];
    assert_eq!(
        result["context"]["events_before"][0]["content"]["body"],
        json!("Our tomatoes are ripening nicely")
    );
    assert_eq!(result["context"]["events_after"][0]["type"], json!("m.room.encrypted"));
    assert_eq!(result["context"]["profile_info"]["@bob:localhost"]["displayname"], json!("Bobby"));
    assert!(result["context"]["start"].is_string() && result["context"]["end"].is_string());
    assert!(result["rank"].is_number());
    let state = full["state"][&open].as_array().unwrap();
    assert!(state.iter().any(|e| e["type"] == json!("m.room.name")), "{state:?}");
    let event_id = &result["result"]["event_id"];
    assert_eq!(full["groups"]["room_id"][&open]["results"], json!([event_id]));
    assert_eq!(full["groups"]["sender"]["@bob:localhost"]["results"], json!([event_id]));
    assert_eq!(full["groups"]["room_id"][&open]["order"], json!(1));

    // After leaving, a room is no longer searched.
    bob.post(&format!("{V3}/rooms/{closed}/leave"), json!({})).await.assert_ok();
    let after_leave = search(&bob, json!({"search_term": "sauce"})).await;
    assert_eq!(after_leave["results"], json!([]));
}

#[tokio::test]
async fn pages_and_groups_page_and_bad_requests_get_matrix_errors() {
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let one = alice.create_room(json!({"preset": "private_chat"})).await;
    let two = alice.create_room(json!({"preset": "private_chat"})).await;
    for n in 0..7 {
        alice.send_text(&one, &format!("a{n}"), &format!("apple {n}")).await;
        alice.send_text(&two, &format!("b{n}"), &format!("apple pie {n}")).await;
    }
    // Paging newest first, three at a time, returns every match once.
    let (mut seen, mut next) = (Vec::new(), None::<String>);
    for _ in 0..10 {
        let body = json!({"search_categories": {"room_events": {"search_term": "apple", "order_by": "recent", "filter": {"limit": 3}}}});
        let query = next.as_ref().map(|t| format!("?next_batch={t}")).unwrap_or_default();
        let reply = alice.post(&format!("{V3}/search{query}"), body).await;
        let page = reply.assert_ok()["search_categories"]["room_events"].clone();
        seen.extend(bodies(&page));
        match page["next_batch"].as_str() {
            Some(token) => next = Some(token.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 14, "{seen:?}");
    let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), 14);

    // A room group's next_batch pages within that room only.
    let grouped = search(
        &alice,
        json!({"search_term": "apple", "order_by": "recent", "filter": {"limit": 2},
        "groupings": {"group_by": [{"key": "room_id"}]}}),
    )
    .await;
    let token = grouped["groups"]["room_id"][&two]["next_batch"].as_str().unwrap().to_owned();
    let body = json!({"search_categories": {"room_events": {"search_term": "apple", "order_by": "recent"}}});
    let reply = alice.post(&format!("{V3}/search?next_batch={token}"), body).await;
    let in_two = bodies(&reply.assert_ok()["search_categories"]["room_events"]);
    // The first page held the newest of each room (limit 2); the group goes on below it.
    assert_eq!(in_two.len(), 6, "{in_two:?}");
    assert!(in_two.iter().all(|b| b.starts_with("apple pie")), "{in_two:?}");

    // Bad input: Matrix errors, never a 500.
    let post = |body: Value| {
        let alice = &alice;
        async move { alice.post(&format!("{V3}/search"), body).await }
    };
    post(json!({})).await.assert_error(400, "M_BAD_JSON");
    post(json!({"search_categories": {"room_events": {"search_term": "x", "order_by": "sideways"}}}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    post(json!({"search_categories": {"room_events": {"search_term": "x", "keys": ["content.nope"]}}}))
        .await
        .assert_error(400, "M_INVALID_PARAM");
    alice
        .post(
            &format!("{V3}/search?next_batch=nonsense"),
            json!({"search_categories": {"room_events": {"search_term": "x"}}}),
        )
        .await
        .assert_error(400, "M_INVALID_PARAM");
    for term in ["", "((( \"", "*", "-apple", "AND OR NOT", "a:b:c", &"x".repeat(5000)] {
        let reply = post(json!({"search_categories": {"room_events": {"search_term": term}}})).await;
        reply.assert_ok();
    }
    let unauthenticated =
        Client::new(&server.base_url).post(&format!("{V3}/search"), json!({"search_categories": {}})).await;
    unauthenticated.assert_error(401, "M_MISSING_TOKEN");
    // No categories asked for: nothing found, not an error.
    let empty = post(json!({"search_categories": {}})).await;
    empty.assert_ok();
}

#[tokio::test]
async fn a_lost_index_is_rebuilt_at_start_and_a_disabled_search_says_so() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({"preset": "private_chat"})).await;
    alice.send_text(&room, "t1", "kept across restarts").await;
    assert_eq!(bodies(&search(&alice, json!({"search_term": "restarts"})).await), ["kept across restarts"]);

    let (config, dir) = server.stop().await;
    let index = config.storage.path.join("search");
    assert!(index.is_dir(), "the index lives in the storage directory");
    std::fs::remove_dir_all(&index).unwrap();
    let server = TestServer::start_in(config.clone(), dir).await;
    let alice = Client::login(&server.base_url, "alice", "pw").await;
    assert_eq!(bodies(&search(&alice, json!({"search_term": "restarts"})).await), ["kept across restarts"]);

    let (mut config, dir) = server.stop().await;
    config.search.enabled = false;
    let server = TestServer::start_in(config, dir).await;
    let alice = Client::login(&server.base_url, "alice", "pw").await;
    let reply = alice
        .post(&format!("{V3}/search"), json!({"search_categories": {"room_events": {"search_term": "x"}}}))
        .await;
    reply.assert_error(400, "M_UNKNOWN");
}

#[tokio::test]
async fn events_from_another_server_are_found() {
    let (a, b) = TestServer::federating_pair().await;
    let _servers = (&a, &b);
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let server_a = alice.user_id().split(':').nth(1).unwrap().to_owned();
    bob.post(&format!("{V3}/join/{room}?via={server_a}"), json!({})).await.assert_ok();
    bob.send_text(&room, "b1", "greetings from afar").await;
    alice.wait_for_bodies(&room, &["greetings from afar"]).await;
    let found = search(&alice, json!({"search_term": "afar"})).await;
    assert_eq!(bodies(&found), ["greetings from afar"]);
}
