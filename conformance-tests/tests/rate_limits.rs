//! Per-action rate limits against the real server: a burst passes, the next request is 429
//! `M_LIMIT_EXCEEDED` with `retry_after_ms` and `Retry-After`, a client that waits gets every
//! message through, retries of a sent transaction are never refused, and two processes sharing
//! a real redis-server enforce one limit between them.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use hearth_conformance_tests::{Client, TestServer, redis::RedisServer};
use hearth_core::config::{RateLimit, RateLimitConfig};
use serde_json::json;

const V3: &str = "/_matrix/client/v3";

fn limits(customize: impl FnOnce(&mut RateLimitConfig)) -> RateLimitConfig {
    let mut config = RateLimitConfig::default();
    customize(&mut config);
    config
}

/// Sends `body` under `txn`, waiting out every 429 as a well-behaved client does; returns the
/// event ID and how many times it was told to wait.
async fn send_patiently(client: &Client, room: &str, txn: &str, body: &str) -> (String, u32) {
    let path = format!("{V3}/rooms/{room}/send/m.room.message/{txn}");
    let mut waits = 0;
    for _ in 0..100 {
        let reply = client.put(&path, json!({"msgtype": "m.text", "body": body})).await;
        if reply.status.as_u16() == 429 {
            reply.assert_error(429, "M_LIMIT_EXCEEDED");
            let wait = reply.body["retry_after_ms"].as_u64().expect("retry_after_ms");
            tokio::time::sleep(Duration::from_millis(wait)).await;
            waits += 1;
            continue;
        }
        return (reply.assert_ok()["event_id"].as_str().unwrap().to_owned(), waits);
    }
    panic!("{txn} never got through");
}

#[tokio::test]
async fn a_burst_passes_the_next_send_waits_and_a_patient_client_gets_everything_through() {
    let server = TestServer::start_with(|c| {
        c.rate_limits = limits(|l| l.message = RateLimit { per_second: 10.0, burst_count: 5 });
    })
    .await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({})).await;

    // A script sending 100 messages a second: its burst passes, then it is told to wait.
    let mut statuses = Vec::new();
    let mut first_limited = None;
    for i in 0..20 {
        let path = format!("{V3}/rooms/{room}/send/m.room.message/script{i}");
        let reply = alice.put(&path, json!({"msgtype": "m.text", "body": format!("script {i}")})).await;
        if reply.status.as_u16() == 429 && first_limited.is_none() {
            first_limited = Some(reply.clone());
        }
        statuses.push(reply.status.as_u16());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let limited = first_limited.expect("a script at 100/s is limited");
    limited.assert_error(429, "M_LIMIT_EXCEEDED");
    let wait = limited.body["retry_after_ms"].as_u64().unwrap();
    assert!(wait > 0 && wait <= 100, "one interval at 10/s at most: {wait}");
    assert_eq!(limited.headers["retry-after"], "1", "whole seconds, rounded up");
    // The room's creation took one token of the burst of five.
    assert!(statuses[..4].iter().all(|s| *s == 200), "{statuses:?}");
    let passed = statuses.iter().filter(|s| **s == 200).count();
    assert!(passed < 20, "{statuses:?}");

    // A sent transaction retried while limited is answered with its event, not refused.
    let first = alice
        .put(
            &format!("{V3}/rooms/{room}/send/m.room.message/script0"),
            json!({"msgtype": "m.text", "body": "script 0"}),
        )
        .await;
    let original = first.assert_ok()["event_id"].clone();

    // A client that honours retry_after_ms gets every message through, in order.
    let started = Instant::now();
    let mut sent = Vec::new();
    let mut waits = 0;
    for i in 0..30 {
        let (event_id, waited) =
            send_patiently(&alice, &room, &format!("patient{i}"), &format!("patient {i}")).await;
        sent.push(event_id);
        waits += waited;
    }
    assert!(waits > 0, "the patient client was limited too");
    assert!(started.elapsed() >= Duration::from_millis(2000), "30 sends at 10/s take about 3 s");
    let messages = alice.get(&format!("{V3}/rooms/{room}/messages?dir=b&limit=100")).await;
    let bodies: Vec<&str> = messages.assert_ok()["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["content"]["body"].as_str())
        .filter(|b| b.starts_with("patient"))
        .collect();
    let expected: Vec<String> = (0..30).rev().map(|i| format!("patient {i}")).collect();
    assert_eq!(bodies, expected);
    let script0 =
        messages.body["chunk"].as_array().unwrap().iter().filter(|e| e["event_id"] == original).count();
    assert_eq!(script0, 1, "the retried transaction made no second event");
}

#[tokio::test]
async fn logins_and_registrations_are_limited_per_address_and_failures_per_account() {
    let server = TestServer::start_with(|c| {
        c.rate_limits = limits(|l| {
            l.registration = RateLimit { per_second: 0.001, burst_count: 2 };
            l.login_address = RateLimit { per_second: 0.001, burst_count: 3 };
            l.login_failed = RateLimit { per_second: 0.001, burst_count: 2 };
        });
        c.client_api.x_forwarded = true;
    })
    .await;
    // A registration is a UIA exchange of two requests; it counts once.
    Client::register(&server.base_url, "alice", "pw").await;
    Client::register(&server.base_url, "bob", "pw").await;
    let third =
        server.client().post(&format!("{V3}/register"), json!({"username": "carol", "password": "pw"})).await;
    third.assert_error(429, "M_LIMIT_EXCEEDED");
    assert!(third.body["retry_after_ms"].as_u64().unwrap() > 0);

    let login = |user: &str, password: &str, from: &str| {
        let http = reqwest::Client::new();
        let url = format!("{}{V3}/login", server.base_url);
        let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password});
        let from = from.to_owned();
        async move {
            Client::reply(http.post(url).header("x-forwarded-for", from).json(&body).send().await.unwrap())
                .await
        }
    };
    // Wrong passwords: two are answered 403, then the account refuses further guesses, even
    // from another address and with the right password.
    login("alice", "wrong", "192.0.2.1").await.assert_error(403, "M_FORBIDDEN");
    login("alice", "wrong", "192.0.2.2").await.assert_error(403, "M_FORBIDDEN");
    login("alice", "pw", "192.0.2.3").await.assert_error(429, "M_LIMIT_EXCEEDED");
    // Another account is not affected; the address's own budget is.
    for _ in 0..3 {
        login("bob", "pw", "198.51.100.7").await.assert_ok();
    }
    login("bob", "pw", "198.51.100.7").await.assert_error(429, "M_LIMIT_EXCEEDED");
    // The proxy's last entry is the client: a forged first entry changes nothing.
    login("bob", "pw", "203.0.113.9, 198.51.100.7").await.assert_error(429, "M_LIMIT_EXCEEDED");
    login("bob", "pw", "198.51.100.7, 203.0.113.9").await.assert_ok();
}

#[tokio::test]
async fn joins_invites_and_uploads_have_their_own_limits() {
    let server = TestServer::start_with(|c| {
        c.rate_limits = limits(|l| {
            l.join = RateLimit { per_second: 0.001, burst_count: 1 };
            l.invite = RateLimit { per_second: 0.001, burst_count: 1 };
            l.media_upload = RateLimit { per_second: 0.001, burst_count: 1 };
        });
    })
    .await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    let rooms =
        [alice.create_room(json!({"preset": "public_chat"})).await, alice.create_room(json!({})).await];
    bob.post(&format!("{V3}/join/{}", rooms[0]), json!({})).await.assert_ok();
    bob.post(&format!("{V3}/rooms/{}/join", rooms[0]), json!({})).await.assert_error(429, "M_LIMIT_EXCEEDED");
    alice
        .post(&format!("{V3}/rooms/{}/invite", rooms[1]), json!({"user_id": "@bob:localhost"}))
        .await
        .assert_ok();
    let again =
        alice.post(&format!("{V3}/rooms/{}/invite", rooms[1]), json!({"user_id": "@carol:localhost"})).await;
    again.assert_error(429, "M_LIMIT_EXCEEDED");
    let upload = |client: &Client| {
        let http = reqwest::Client::new();
        let url = format!("{}/_matrix/media/v3/upload", server.base_url);
        let token = client.access_token.clone().unwrap();
        async move {
            Client::reply(
                http.post(url)
                    .bearer_auth(token)
                    .header("content-type", "text/plain")
                    .body("hi")
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    upload(&alice).await.assert_ok();
    upload(&alice).await.assert_error(429, "M_LIMIT_EXCEEDED");
    alice.post("/_matrix/media/v1/create", json!({})).await.assert_error(429, "M_LIMIT_EXCEEDED");
    upload(&bob).await.assert_ok();
}

#[tokio::test]
async fn two_processes_sharing_redis_enforce_one_limit() {
    let redis = RedisServer::start();
    let url = redis.url();
    let start = || {
        let url = url.clone();
        TestServer::start_with(move |c| {
            c.redis.url = Some(url);
            c.rate_limits = limits(|l| l.message = RateLimit { per_second: 0.001, burst_count: 4 });
        })
    };
    // Two servers of the same name: the same user acts through both.
    let (a, b) = (start().await, start().await);
    let on_a = Client::register(&a.base_url, "alice", "pw").await;
    let on_b = Client::register(&b.base_url, "alice", "pw").await;
    let room_a = on_a.create_room(json!({})).await;
    let room_b = on_b.create_room(json!({})).await;
    on_a.send_text(&room_a, "1", "one").await;
    on_b.send_text(&room_b, "2", "two").await;
    let over = |client: &Client, room: &str, txn: &str| {
        let path = format!("{V3}/rooms/{room}/send/m.room.message/{txn}");
        let client = client.clone();
        async move { client.put(&path, json!({"msgtype": "m.text", "body": "over"})).await }
    };
    over(&on_a, &room_a, "3").await.assert_error(429, "M_LIMIT_EXCEEDED");
    over(&on_b, &room_b, "4").await.assert_error(429, "M_LIMIT_EXCEEDED");
    let keys = redis.cli(&["KEYS", "hearth:ratelimit:message:*"]);
    assert!(keys.contains("@alice:localhost"), "{keys}");
}

#[tokio::test]
async fn limits_are_off_when_disabled() {
    let server = TestServer::start_with(|c| {
        c.rate_limits = RateLimitConfig {
            enabled: false,
            ..limits(|l| l.message = RateLimit { per_second: 0.001, burst_count: 1 })
        };
    })
    .await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({})).await;
    for i in 0..10 {
        alice.send_text(&room, &format!("t{i}"), "free").await;
    }
}
