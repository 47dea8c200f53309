//! Search on an in-memory homeserver, with the indexer running as it does in the binary.

use crate::test_support::user;
use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, UInt,
    api::client::search::search_events::v3::{Criteria, OrderBy, ResultRoomEvents},
    device_id,
    events::TimelineEventType,
};
use serde_json::json;

use crate::{Homeserver, config::HomeserverConfig, events::NewEvent, rooms::CreateRoom};

fn start(hs: &Homeserver) -> tokio::task::JoinHandle<()> {
    let hs = hs.clone();
    tokio::spawn(async move { hs.run_search_indexer(std::future::pending()).await })
}

async fn say(hs: &Homeserver, room: &OwnedRoomId, who: &OwnedUserId, body: &str) -> OwnedEventId {
    let content = json!({"msgtype": "m.text", "body": body});
    hs.rooms
        .append(room, who, NewEvent::message(TimelineEventType::RoomMessage, content), None)
        .await
        .unwrap()
}

async fn search(
    hs: &Homeserver,
    who: &OwnedUserId,
    criteria: Criteria,
    next: Option<String>,
) -> ResultRoomEvents {
    hs.search_room_events(who, device_id!("D"), criteria, false, next).await.unwrap()
}

fn ids(found: &ResultRoomEvents) -> Vec<String> {
    found
        .results
        .iter()
        .map(|r| {
            let event: serde_json::Value =
                serde_json::from_str(r.result.as_ref().unwrap().json().get()).unwrap();
            event["event_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

async fn room_with(hs: &Homeserver, creator: &OwnedUserId, visibility: &str) -> OwnedRoomId {
    let mut create = CreateRoom::new();
    create.public = true;
    let room = hs.rooms.create_room(creator, json!({}), create).await.unwrap();
    let content = json!({"history_visibility": visibility});
    let event = NewEvent::state(TimelineEventType::RoomHistoryVisibility, "", content);
    hs.rooms.append(&room, creator, event, None).await.unwrap();
    room
}

#[tokio::test]
async fn finds_words_by_stem_only_where_the_searcher_may_read_and_forgets_redacted_events() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let indexer = start(&hs);
    let (alice, bob, carol) = (user(&hs, "alice").await, user(&hs, "bob").await, user(&hs, "carol").await);
    let room = room_with(&hs, &alice, "joined").await;
    hs.rooms.join(&room, &bob, json!({}), None).await.unwrap();
    let early = say(&hs, &room, &bob, "The quick brown foxes jumped").await;

    let found = search(&hs, &alice, Criteria::new("fox".into()), None).await;
    assert_eq!(ids(&found), vec![early.to_string()], "found at once, by its stem");
    assert_eq!(found.count, Some(UInt::from(1_u32)));
    assert_eq!(found.highlights, vec!["foxes".to_owned()]);
    assert!(search(&hs, &carol, Criteria::new("fox".into()), None).await.results.is_empty(), "not a member");

    // With history visible to members only from their join, what came before stays hidden.
    hs.rooms.join(&room, &carol, json!({}), None).await.unwrap();
    let late = say(&hs, &room, &bob, "another fox").await;
    let seen = search(&hs, &carol, Criteria::new("fox".into()), None).await;
    assert_eq!(ids(&seen), vec![late.to_string()]);

    let redaction = NewEvent {
        kind: TimelineEventType::RoomRedaction,
        content: json!({}),
        state_key: None,
        redacts: Some(late.clone()),
        origin_server_ts: None,
    };
    hs.rooms.append(&room, &bob, redaction, None).await.unwrap();
    let gone = search(&hs, &alice, Criteria::new("fox".into()), None).await;
    assert_eq!(ids(&gone), vec![early.to_string()]);
    indexer.abort();
}

#[tokio::test]
async fn pages_by_recency_and_by_rank_cover_every_match_once() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let indexer = start(&hs);
    let alice = user(&hs, "alice").await;
    let room = room_with(&hs, &alice, "shared").await;
    let mut sent = Vec::new();
    for n in 0..25 {
        let body = if n % 5 == 0 { format!("ping ping {n}") } else { format!("ping {n}") };
        sent.push(say(&hs, &room, &alice, &body).await.to_string());
    }
    say(&hs, &room, &alice, "something else").await;

    for order in [OrderBy::Recent, OrderBy::Rank] {
        let (mut all, mut next, mut pages) = (Vec::new(), None, 0);
        loop {
            let mut criteria = Criteria::new("ping".into());
            criteria.order_by = Some(order.clone());
            let page = search(&hs, &alice, criteria, next.take()).await;
            assert_eq!(page.count, Some(UInt::from(25_u32)));
            assert!(page.results.len() <= 10);
            all.extend(ids(&page));
            pages += 1;
            match page.next_batch {
                Some(token) => next = Some(token),
                None => break,
            }
        }
        assert_eq!(pages, 3, "{order:?}");
        let mut expected = sent.clone();
        if order == OrderBy::Recent {
            expected.reverse();
            assert_eq!(all, expected, "newest first");
        } else {
            // The messages that say it twice rank first.
            let doubled: Vec<_> = sent.iter().step_by(5).cloned().collect();
            let mut top: Vec<_> = all[..5].to_vec();
            top.sort();
            let mut doubled_sorted = doubled.clone();
            doubled_sorted.sort();
            assert_eq!(top, doubled_sorted);
            all.sort();
            expected.sort();
            assert_eq!(all, expected);
        }
    }

    let mut criteria = Criteria::new("ping".into());
    criteria.order_by = Some(OrderBy::Recent);
    let first = search(&hs, &alice, criteria.clone(), None).await;
    criteria.order_by = Some(OrderBy::Rank);
    let wrong = hs.search_room_events(&alice, device_id!("D"), criteria, false, first.next_batch).await;
    assert!(wrong.is_err(), "a token of another order is refused");
    indexer.abort();
}

#[tokio::test]
async fn a_lost_index_is_refilled_from_the_database() {
    let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
    let indexer = start(&hs);
    let alice = user(&hs, "alice").await;
    let room = room_with(&hs, &alice, "shared").await;
    let event = say(&hs, &room, &alice, "remember me").await;
    indexer.abort();

    // The same database with a new, empty index: as after the index directory was deleted.
    let again = Homeserver::new(HomeserverConfig::for_tests(), hs.db.clone(), hs.ephemeral.clone()).unwrap();
    let indexer = start(&again);
    let found = search(&again, &alice, Criteria::new("remember".into()), None).await;
    assert_eq!(ids(&found), vec![event.to_string()]);
    indexer.abort();
}
