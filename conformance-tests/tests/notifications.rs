//! Notifications: push rules evaluated on every event, unread and highlight counts in /sync
//! cleared by receipts, `GET /notifications`, and pushers delivering to a push gateway (a
//! stand-in on loopback speaking the Push Gateway API) durably, across failures and restarts.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use hearth_conformance_tests::{
    Client, TestServer,
    push_gateway::{Mode, PushGateway, SmsGateway},
    smtp_sink::SmtpSink,
};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

fn http_pusher(gateway: &PushGateway, pushkey: &str) -> Value {
    json!({
        "kind": "http",
        "app_id": "org.example.app",
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "pushkey": pushkey,
        "lang": "en",
        "data": {"url": gateway.url, "custom": "kept"},
    })
}

fn email_pusher() -> Value {
    json!({
        "kind": "email", "app_id": "m.email", "pushkey": "alice@example.org",
        "app_display_name": "E-mail", "device_display_name": "alice@example.org", "lang": "en", "data": {},
    })
}

async fn pair(server: &TestServer) -> (Client, Client, String) {
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let bob = Client::register(&server.base_url, "bob", "pw").await;
    alice.put(&format!("{V3}/profile/@alice:localhost/displayname"), json!({"displayname": "Alice"})).await;
    let room = bob.create_room(json!({"preset": "public_chat", "name": "Team"})).await;
    alice.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
    (alice, bob, room)
}

async fn send(client: &Client, room: &str, txn: &str, content: Value) -> String {
    let reply = client.put(&format!("{V3}/rooms/{room}/send/m.room.message/{txn}"), content).await;
    reply.assert_ok()["event_id"].as_str().unwrap().to_owned()
}

fn counts(sync: &Value, room: &str) -> (u64, u64) {
    let unread = &sync["rooms"]["join"][room]["unread_notifications"];
    (unread["notification_count"].as_u64().unwrap_or(0), unread["highlight_count"].as_u64().unwrap_or(0))
}

#[tokio::test]
async fn a_mention_highlights_a_receipt_clears_and_the_gateway_is_told() {
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let gateway = PushGateway::start().await;
    let (alice, bob, room) = pair(&server).await;
    alice.post(&format!("{V3}/pushers/set"), http_pusher(&gateway, "alice-phone")).await.assert_ok();
    let since = alice.since_now().await;

    // A plain message in a room of more than two notifies without highlighting (the default
    // `.m.rule.message`); a mention through `m.mentions` highlights.
    let carol = Client::register(&server.base_url, "carol", "pw").await;
    carol.post(&format!("{V3}/rooms/{room}/join"), json!({})).await.assert_ok();
    send(&bob, &room, "t1", json!({"msgtype": "m.text", "body": "morning all"})).await;
    let mention = send(
        &bob,
        &room,
        "t2",
        json!({"msgtype": "m.text", "body": "Alice: look", "m.mentions": {"user_ids": ["@alice:localhost"]}}),
    )
    .await;
    let synced = alice
        .sync_until(Some(&since), "the mention", |s| {
            s["rooms"]["join"][&room]["timeline"]["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["event_id"] == json!(mention)))
        })
        .await;
    assert_eq!(counts(&synced, &room), (2, 1), "{synced}");

    // The gateway hears of both, with alice's badge (rooms with unread notifications) and the
    // highlight tweak on the mention.
    let received = gateway.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 2, "{received:?}");
    let last = &received[1];
    assert_eq!(last["event_id"], json!(mention));
    assert_eq!(last["room_id"], json!(room));
    assert_eq!(last["counts"]["unread"], json!(1));
    // `high` is the Push Gateway API's default, so it may be left out.
    assert!(last.get("prio").is_none_or(|p| p == "high"), "{last}");
    assert_eq!(received[0]["prio"], json!("low"), "a message without sound or highlight");
    assert_eq!(last["sender"], json!("@bob:localhost"));
    assert_eq!(last["room_name"], json!("Team"));
    assert_eq!(last["content"]["body"], json!("Alice: look"));
    let device = &last["devices"][0];
    assert_eq!(device["pushkey"], json!("alice-phone"));
    assert_eq!(device["app_id"], json!("org.example.app"));
    assert_eq!(device["data"]["custom"], json!("kept"));
    assert!(device["data"].get("url").is_none(), "{device}");
    assert_eq!(device["tweaks"]["highlight"], json!(true));
    // The sender hears of nothing of their own.
    let bob_sync = bob.get(&format!("{V3}/sync?timeout=0")).await;
    assert_eq!(counts(bob_sync.assert_ok(), &room), (0, 0));

    // A read receipt on the mention clears both counts in the next sync.
    let next = synced["next_batch"].as_str().unwrap().to_owned();
    alice.post(&format!("{V3}/rooms/{room}/receipt/m.read/{mention}"), json!({})).await.assert_ok();
    let cleared =
        alice.sync_until(Some(&next), "cleared counts", |s| s["rooms"]["join"][&room].is_object()).await;
    assert_eq!(counts(&cleared, &room), (0, 0), "{cleared}");

    // /notifications lists both, newest first, now read; `only=highlight` just the mention.
    let list = alice.get(&format!("{V3}/notifications")).await;
    let list = list.assert_ok()["notifications"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["event"]["event_id"], json!(mention));
    assert!(list.iter().all(|n| n["read"] == json!(true)), "{list:?}");
    assert_eq!(list[0]["room_id"], json!(room));
    let highlights = alice.get(&format!("{V3}/notifications?only=highlight")).await;
    assert_eq!(highlights.assert_ok()["notifications"].as_array().unwrap().len(), 1);
    let page = alice.get(&format!("{V3}/notifications?limit=1")).await;
    let token = page.assert_ok()["next_token"].as_str().unwrap().to_owned();
    let rest = alice.get(&format!("{V3}/notifications?limit=1&from={token}")).await;
    let rest = rest.assert_ok()["notifications"].as_array().unwrap().clone();
    assert_eq!(rest.len(), 1);
    assert_ne!(rest[0]["event"]["event_id"], json!(mention));
}

#[tokio::test]
async fn own_messages_and_threads_clear_their_own_counts() {
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let (alice, bob, room) = pair(&server).await;
    let root = send(&bob, &room, "r", json!({"msgtype": "m.text", "body": "root"})).await;
    let reply = json!({
        "msgtype": "m.text",
        "body": "in thread",
        "m.relates_to": {"rel_type": "m.thread", "event_id": root},
    });
    let in_thread = send(&bob, &room, "t", reply).await;
    let threads = format!("&filter={}", json!({"room": {"timeline": {"unread_thread_notifications": true}}}));
    let sync = alice.get(&format!("{V3}/sync?timeout=0{threads}")).await;
    let joined = &sync.assert_ok()["rooms"]["join"][&room];
    // A two-person room: every message notifies (`.m.rule.room_one_to_one`).
    assert_eq!(joined["unread_notifications"]["notification_count"], json!(1), "{joined}");
    assert_eq!(joined["unread_thread_notifications"][&root]["notification_count"], json!(1), "{joined}");
    // Without the filter flag, threads are added into the room's count.
    let plain = alice.get(&format!("{V3}/sync?timeout=0")).await;
    assert_eq!(counts(plain.assert_ok(), &room), (2, 0));

    // A receipt in the main timeline leaves the thread unread ...
    let path = format!("{V3}/rooms/{room}/receipt/m.read/{root}");
    alice.post(&path, json!({"thread_id": "main"})).await.assert_ok();
    let sync = alice.get(&format!("{V3}/sync?timeout=0{threads}")).await;
    let joined = &sync.assert_ok()["rooms"]["join"][&room];
    assert_eq!(joined["unread_notifications"]["notification_count"], json!(0), "{joined}");
    assert_eq!(joined["unread_thread_notifications"][&root]["notification_count"], json!(1), "{joined}");
    // ... and alice's own reply in the thread reads it.
    let own = json!({"msgtype": "m.text", "body": "me too", "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
    send(&alice, &room, "o", own).await;
    let plain = alice.get(&format!("{V3}/sync?timeout=0")).await;
    assert_eq!(counts(plain.assert_ok(), &room), (0, 0), "{in_thread}");

    // A room rule that says not to notify mutes it.
    let rule = format!("{V3}/pushrules/global/room/{room}");
    alice.put(&rule, json!({"actions": []})).await.assert_ok();
    send(&bob, &room, "m", json!({"msgtype": "m.text", "body": "muted"})).await;
    let plain = alice.get(&format!("{V3}/sync?timeout=0")).await;
    assert_eq!(counts(plain.assert_ok(), &room), (0, 0));
}

#[tokio::test]
async fn a_gateway_that_was_down_gets_what_it_missed_even_across_a_restart() {
    let server = TestServer::start().await;
    let gateway = PushGateway::start().await;
    let (alice, bob, room) = pair(&server).await;
    alice.post(&format!("{V3}/pushers/set"), http_pusher(&gateway, "k1")).await.assert_ok();
    gateway.set_mode(Mode::Fail);
    let first = send(&bob, &room, "a", json!({"msgtype": "m.text", "body": "one"})).await;
    // Wait for a failed attempt, so the notification is queued and backing off.
    for _ in 0..200 {
        if gateway.failures() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gateway.failures() > 0);
    let server = server.restart().await;
    let bob = Client { base_url: server.base_url.clone(), ..bob };
    let second = send(&bob, &room, "b", json!({"msgtype": "m.text", "body": "two"})).await;
    gateway.set_mode(Mode::Accept);
    let received = gateway.wait_for(2, Duration::from_secs(20)).await;
    let ids: Vec<&Value> = received.iter().map(|n| &n["event_id"]).collect();
    assert_eq!(ids, [&json!(first), &json!(second)], "in order, once each: {received:?}");
    let _ = alice;
}

#[tokio::test]
async fn a_rejected_pushkey_removes_its_pusher_and_logout_removes_the_rest() {
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let gateway = PushGateway::start().await;
    let (alice, bob, room) = pair(&server).await;
    alice.post(&format!("{V3}/pushers/set"), http_pusher(&gateway, "gone")).await.assert_ok();
    let pushers = alice.get(&format!("{V3}/pushers")).await;
    let listed = pushers.assert_ok()["pushers"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["data"]["url"], json!(gateway.url));
    assert_eq!(listed[0]["kind"], json!("http"));

    gateway.set_mode(Mode::Reject(vec!["gone".into()]));
    send(&bob, &room, "x", json!({"msgtype": "m.text", "body": "hello"})).await;
    gateway.wait_for(1, Duration::from_secs(10)).await;
    let mut remaining = 1;
    for _ in 0..200 {
        let pushers = alice.get(&format!("{V3}/pushers")).await;
        remaining = pushers.assert_ok()["pushers"].as_array().unwrap().len();
        if remaining == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(remaining, 0, "a rejected pushkey's pusher is removed");

    // `append: false` (the default) moves a pushkey from one user to another; logging out
    // deletes the device's pushers.
    alice.post(&format!("{V3}/pushers/set"), http_pusher(&gateway, "shared")).await.assert_ok();
    bob.post(&format!("{V3}/pushers/set"), http_pusher(&gateway, "shared")).await.assert_ok();
    let of_alice = alice.get(&format!("{V3}/pushers")).await;
    assert_eq!(of_alice.assert_ok()["pushers"], json!([]));
    let mut deletion = http_pusher(&gateway, "shared");
    deletion["kind"] = Value::Null;
    bob.post(&format!("{V3}/pushers/set"), deletion).await.assert_ok();
    assert_eq!(bob.get(&format!("{V3}/pushers")).await.assert_ok()["pushers"], json!([]));
    bob.post(&format!("{V3}/pushers/set"), http_pusher(&gateway, "bobs")).await.assert_ok();
    let again = Client::login(&server.base_url, "bob", "pw").await;
    bob.post(&format!("{V3}/logout"), json!({})).await.assert_ok();
    assert_eq!(again.get(&format!("{V3}/pushers")).await.assert_ok()["pushers"], json!([]));
}

#[tokio::test]
async fn bad_pushers_get_matrix_errors() {
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let gateway = PushGateway::start().await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let path = format!("{V3}/pushers/set");
    let with = |change: &dyn Fn(&mut Value)| {
        let mut body = http_pusher(&gateway, "k");
        change(&mut body);
        body
    };
    let cases: Vec<(Value, &str)> = vec![
        (with(&|b| b["data"]["url"] = json!("http://127.0.0.1:1/elsewhere")), "M_INVALID_PARAM"),
        (with(&|b| b["data"]["url"] = json!("not a url")), "M_INVALID_PARAM"),
        (with(&|b| b["data"]["url"] = json!("ftp://127.0.0.1/_matrix/push/v1/notify")), "M_INVALID_PARAM"),
        (with(&|b| b["kind"] = json!("carrier-pigeon")), "M_INVALID_PARAM"),
        (with(&|b| b["app_id"] = json!("a".repeat(65))), "M_INVALID_PARAM"),
        (with(&|b| b["pushkey"] = json!("k".repeat(513))), "M_INVALID_PARAM"),
        (with(&|b| b["device_display_name"] = json!("d".repeat(600))), "M_INVALID_PARAM"),
        (with(&|b| b["data"]["blob"] = json!("x".repeat(9000))), "M_INVALID_PARAM"),
    ];
    for (body, errcode) in cases {
        let reply = alice.post(&path, body.clone()).await;
        assert_eq!(reply.status.as_u16(), 400, "{body} -> {}", reply.body);
        assert_eq!(reply.errcode(), errcode, "{body} -> {}", reply.body);
    }
    for body in [json!({}), json!({"kind": "http"}), with(&|b| b["data"] = json!({}))] {
        let reply = alice.post(&path, body.clone()).await;
        assert_eq!(reply.status.as_u16(), 400, "{body} -> {}", reply.body);
        assert!(reply.errcode().starts_with("M_"), "{body} -> {}", reply.body);
    }
    assert_eq!(alice.get(&format!("{V3}/pushers")).await.assert_ok()["pushers"], json!([]));
    let bad_token = alice.get(&format!("{V3}/notifications?from=nonsense")).await;
    bad_token.assert_error(400, "M_INVALID_PARAM");
}

#[tokio::test]
async fn unread_messages_are_mailed_after_the_delay_and_the_link_unsubscribes() {
    let sink = SmtpSink::start().await;
    let port = sink.port;
    let server = TestServer::start_at(|c, addr| {
        hearth_conformance_tests::idp::own_baseurl(c, addr);
        c.storage.sync_writes = false;
        c.email.smtp_host = Some("127.0.0.1".into());
        c.email.smtp_port = port;
        c.email.tls = hearth_core::config::SmtpTls::None;
        c.email.notif_delay_secs = 1;
        c.email.app_name = "Hearth Test".into();
    })
    .await;
    let (alice, bob, room) = pair(&server).await;
    alice.post(&format!("{V3}/pushers/set"), email_pusher()).await.assert_ok();

    // Read within the delay: no mail.
    let read = send(&bob, &room, "r", json!({"msgtype": "m.text", "body": "read in time"})).await;
    alice.post(&format!("{V3}/rooms/{room}/receipt/m.read/{read}"), json!({})).await.assert_ok();
    // Left unread: one mail for both.
    send(&bob, &room, "u1", json!({"msgtype": "m.text", "body": "first unread"})).await;
    send(&bob, &room, "u2", json!({"msgtype": "m.text", "body": "second unread"})).await;
    let mails = sink.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    // Nothing more comes for what was already mailed or read.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(mail.to, ["alice@example.org"]);
    assert!(mail.header("Subject").unwrap().contains("2 new messages in Team"), "{}", mail.data);
    assert!(mail.header("Content-Type").unwrap().starts_with("multipart/alternative"), "{}", mail.data);
    let decoded = mail.data.replace("=\r\n", "");
    assert!(decoded.contains("first unread") && decoded.contains("second unread"), "{}", mail.data);
    assert!(!decoded.contains("read in time"), "{}", mail.data);

    // The link in List-Unsubscribe works without logging in, and only as signed.
    let link = mail.header("List-Unsubscribe").unwrap();
    let link = link.trim_start_matches('<').trim_end_matches('>').to_owned();
    let anonymous = reqwest::Client::new();
    let forged = anonymous.get(link.replace("token=", "token=x")).send().await.unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(alice.get(&format!("{V3}/pushers")).await.assert_ok()["pushers"].as_array().unwrap().len(), 1);
    let page = anonymous.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("alice@example.org"));
    assert_eq!(alice.get(&format!("{V3}/pushers")).await.assert_ok()["pushers"], json!([]));
}

#[tokio::test]
async fn mentions_send_a_text_message_and_other_messages_do_not() {
    let gateway = SmsGateway::start().await;
    let (api_url, sid, token) =
        (gateway.base_url.clone(), gateway.account_sid.clone(), gateway.auth_token.clone());
    let server = TestServer::start_with(|c| {
        c.storage.sync_writes = false;
        c.sms.api_url = Some(api_url);
        c.sms.account_sid = sid;
        c.sms.auth_token = token;
        c.sms.from = "+15550000001".into();
    })
    .await;
    let (alice, bob, room) = pair(&server).await;
    let pusher = json!({
        "kind": "io.hearth.sms", "app_id": "io.hearth.sms", "pushkey": "+15551234567",
        "app_display_name": "SMS", "device_display_name": "Phone", "lang": "en", "data": {},
    });
    alice.post(&format!("{V3}/pushers/set"), pusher.clone()).await.assert_ok();
    let mut bad = pusher;
    bad["pushkey"] = json!("not a number");
    alice.post(&format!("{V3}/pushers/set"), bad).await.assert_error(400, "M_INVALID_PARAM");

    send(&bob, &room, "p", json!({"msgtype": "m.text", "body": "plain"})).await;
    let mention = json!({"msgtype": "m.text", "body": "Alice, call me", "m.mentions": {"user_ids": ["@alice:localhost"]}});
    send(&bob, &room, "m", mention).await;
    let mut sent = Vec::new();
    for _ in 0..500 {
        sent = gateway.sent();
        if !sent.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = if sent.is_empty() { sent } else { gateway.sent() };
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["To"], "+15551234567");
    assert_eq!(sent[0]["From"], "+15550000001");
    assert!(sent[0]["Body"].contains("mentioned you in Team: Alice, call me"), "{sent:?}");
}

#[tokio::test]
async fn events_from_another_server_notify_and_reach_the_gateway() {
    let (a, b) = TestServer::federating_pair().await;
    let gateway = PushGateway::start().await;
    let alice = Client::register(&a.base_url, "alice", "pw").await;
    let bob = Client::register(&b.base_url, "bob", "pw").await;
    alice.post(&format!("{V3}/pushers/set"), http_pusher(&gateway, "alice-phone")).await.assert_ok();
    let room = alice.create_room(json!({"preset": "public_chat", "name": "Across"})).await;
    let server_a = alice.user_id().split(':').nth(1).unwrap().to_owned();
    bob.post(&format!("{V3}/join/{room}?via={server_a}"), json!({})).await.assert_ok();
    let since = alice.since_now().await;

    let content =
        json!({"msgtype": "m.text", "body": "hi alice", "m.mentions": {"user_ids": [alice.user_id()]}});
    let mention = send(&bob, &room, "m", content).await;
    let synced = alice
        .sync_until(Some(&since), "the remote mention", |s| {
            s["rooms"]["join"][&room]["timeline"]["events"]
                .as_array()
                .is_some_and(|events| events.iter().any(|e| e["event_id"] == json!(mention)))
        })
        .await;
    assert_eq!(counts(&synced, &room), (1, 1), "{synced}");
    let received = gateway.wait_for(1, Duration::from_secs(10)).await;
    let last = received.last().unwrap();
    assert_eq!(last["event_id"], json!(mention));
    assert_eq!(last["sender"], json!(bob.user_id()));
}

#[tokio::test]
async fn an_event_id_only_pusher_gets_no_content() {
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let gateway = PushGateway::start().await;
    let (alice, bob, room) = pair(&server).await;
    let mut pusher = http_pusher(&gateway, "private");
    pusher["data"]["format"] = json!("event_id_only");
    alice.post(&format!("{V3}/pushers/set"), pusher).await.assert_ok();
    let event = send(&bob, &room, "s", json!({"msgtype": "m.text", "body": "secret"})).await;
    let received = gateway.wait_for(1, Duration::from_secs(10)).await;
    let only = &received[0];
    assert_eq!(only["event_id"], json!(event));
    assert_eq!(only["room_id"], json!(room));
    assert_eq!(only["counts"]["unread"], json!(1));
    for absent in ["content", "sender", "sender_display_name", "room_name", "type"] {
        assert!(only.get(absent).is_none(), "{absent} in {only}");
    }
    assert_eq!(only["devices"][0]["data"]["format"], json!("event_id_only"));
}

#[tokio::test]
async fn mail_goes_over_starttls_and_over_tls_from_the_first_byte() {
    use hearth_conformance_tests::smtp_sink::SinkTls;
    use hearth_core::config::SmtpTls;
    for (sink_tls, tls) in [(SinkTls::Starttls, SmtpTls::Starttls), (SinkTls::Implicit, SmtpTls::Tls)] {
        let sink = SmtpSink::start_with(sink_tls).await;
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("smtp.pem");
        std::fs::write(&ca, &sink.cert_pem).unwrap();
        let port = sink.port;
        let server = TestServer::start_with(|c| {
            c.storage.sync_writes = false;
            c.email.smtp_host = Some("127.0.0.1".into());
            c.email.smtp_port = port;
            c.email.tls = tls;
            c.email.ca_file = Some(ca.clone());
            c.email.notif_delay_secs = 0;
        })
        .await;
        let (alice, bob, room) = pair(&server).await;
        alice.post(&format!("{V3}/pushers/set"), email_pusher()).await.assert_ok();
        send(&bob, &room, "t", json!({"msgtype": "m.text", "body": "over TLS"})).await;
        let mails = sink.wait_for(1, Duration::from_secs(15)).await;
        assert_eq!(mails.len(), 1, "{tls:?}: {mails:?}");
        assert!(mails[0].data.contains("over TLS"), "{tls:?}: {}", mails[0].data);
    }
}
