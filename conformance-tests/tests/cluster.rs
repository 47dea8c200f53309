//! Three `hearth` processes on one PostgreSQL and one Redis, behind nginx (round-robin): what
//! users see through any process is what they would see on one server (messages, typing,
//! presence, WebSockets, sliding sync connections, rate limits), concurrent writers to
//! one room never fork it, and kill -9 of a process loses nothing it acknowledged.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use std::{collections::HashMap, time::Duration};

use futures_util::SinkExt;

use hearth_conformance_tests::{
    Client, binary::HearthProcess, nginx::Nginx, redis::RedisServer, ws::next_frame,
};
use hearth_storage::engine::postgres::test_cluster::TestCluster;
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

struct Deployment {
    processes: Vec<Option<HearthProcess>>,
    nginx: Nginx,
    cluster: TestCluster,
    _redis: RedisServer,
    _dirs: Vec<tempfile::TempDir>,
}

impl Deployment {
    fn start(count: usize) -> Self {
        Self::start_with(count, &[])
    }

    /// With extra settings (environment variables) for every process.
    fn start_with(count: usize, settings: &[(&str, &str)]) -> Self {
        let cluster = TestCluster::start();
        let redis = RedisServer::start();
        let media = tempfile::tempdir().unwrap();
        let mut dirs = Vec::new();
        let mut processes = Vec::new();
        for _ in 0..count {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            let redis_url = redis.url();
            let mut env = vec![
                ("HEARTH_STORAGE__BACKEND", "postgres"),
                ("HEARTH_STORAGE__POSTGRES_URL", cluster.url.as_str()),
                ("HEARTH_STORAGE__PATH", data.to_str().unwrap()),
                ("HEARTH_MEDIA__PATH", media.path().to_str().unwrap()),
                ("HEARTH_REDIS__URL", &redis_url),
            ];
            env.extend_from_slice(settings);
            processes.push(Some(HearthProcess::spawn(&[], &env)));
            dirs.push(dir);
        }
        dirs.push(media);
        let upstreams: Vec<&str> = processes.iter().flatten().map(|p| p.base_url.as_str()).collect();
        let nginx = Nginx::start(&upstreams);
        Self { processes, nginx, cluster, _redis: redis, _dirs: dirs }
    }

    /// The process that logs that it runs the delivery queues (waiting up to `within`), among
    /// those still running.
    fn queue_runner(&self, within: Duration) -> Option<usize> {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            for (i, process) in self.processes.iter().enumerate() {
                let Some(process) = process else { continue };
                while let Ok(line) = process.output.try_recv() {
                    if line.contains("this process now runs the delivery queues") {
                        return Some(i);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn url(&self, i: usize) -> String {
        self.processes[i].as_ref().unwrap().base_url.clone()
    }

    /// Rows of a query against the shared database, one string per row (`psql -At`).
    fn sql(&self, query: &str) -> Vec<String> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin/psql"))
            .find(|p| p.exists())
            .unwrap();
        let out = std::process::Command::new(bin)
            .arg(&self.cluster.url)
            .args(["-At", "-c", query])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
    }

    /// The prev events of every event in `room`'s timeline, read from the shared database.
    fn prev_events(&self, room: &str) -> Vec<Vec<String>> {
        let rows = self.sql(&format!(
            "SELECT r->>'json' FROM (SELECT convert_from(v, 'UTF8')::jsonb AS r FROM kv_pdus) p \
             WHERE r->>'room_id' = '{room}' AND r->'stream_pos' <> 'null'::jsonb"
        ));
        rows.iter()
            .map(|row| {
                let pdu: Value = serde_json::from_str(row).unwrap();
                pdu["prev_events"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap().to_owned())
                    .collect()
            })
            .collect()
    }

    fn forward_extremities(&self, room: &str) -> usize {
        let rows = self.sql(&format!(
            "SELECT jsonb_array_length(convert_from(v, 'UTF8')::jsonb->'forward_extremities') FROM kv_rooms \
             WHERE k = (SELECT k FROM kv_rooms WHERE position(convert_to('{room}', 'UTF8') in k) = 1)"
        ));
        rows[0].parse().unwrap()
    }
}

/// The same session, talking to another address.
fn via(client: &Client, base_url: &str) -> Client {
    Client { base_url: base_url.to_owned(), ..client.clone() }
}

fn bodies(events: &Value) -> Vec<String> {
    events
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["content"]["body"].as_str().map(ToOwned::to_owned))
        .collect()
}

/// Every message body of `room` in timeline order, paged back through /messages.
async fn history(client: &Client, room: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut from: Option<String> = None;
    for _ in 0..100 {
        let path = match &from {
            Some(token) => format!("{V3}/rooms/{room}/messages?dir=b&limit=100&from={token}"),
            None => format!("{V3}/rooms/{room}/messages?dir=b&limit=100"),
        };
        let page = client.get(&path).await.assert_ok().clone();
        all.extend(bodies(&page["chunk"]));
        match page["end"].as_str() {
            Some(end) if !page["chunk"].as_array().unwrap().is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    all.reverse();
    all
}

/// Incremental syncs from `since` until `count` messages of `room` were seen; returns them in
/// the order they came. The timeline limit is high enough that no response leaves a gap.
async fn sync_messages(client: &Client, room: &str, since: &str, count: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut since = since.to_owned();
    // {"room":{"timeline":{"limit":1000}}}
    let filter = "%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A1000%7D%7D%7D";
    for _ in 0..200 {
        let path = format!("{V3}/sync?timeout=2000&since={since}&filter={filter}");
        let body = client.get(&path).await.assert_ok().clone();
        let timeline = &body["rooms"]["join"][room]["timeline"];
        assert_ne!(timeline["limited"], json!(true), "a gap in sync");
        seen.extend(bodies(&timeline["events"]));
        since = body["next_batch"].as_str().unwrap().to_owned();
        if seen.len() >= count {
            break;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_behind_nginx_serve_one_server_without_forks_gaps_or_repeats() {
    let deployment = Deployment::start(3);
    let lb = deployment.nginx.base_url.clone();
    let (a, b, c) = (deployment.url(0), deployment.url(1), deployment.url(2));

    // Accounts and the room are made through the load balancer, so through every process.
    let alice = Client::register(&lb, "alice", "pw").await;
    let bob = Client::register(&lb, "bob", "pw").await;
    let carol = Client::register(&lb, "carol", "pw").await;
    let room = alice
        .create_room(json!({"preset": "public_chat", "name": "one room", "power_level_content_override": {"state_default": 0}}))
        .await;
    for user in [&bob, &carol] {
        user.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    }
    // A user registered through one process logs in through another.
    Client::login(&c, "alice", "pw").await;

    // Live delivery across processes: Bob long-polls on A, Alice sends through C; the poll
    // is woken by the write (not by its own timeout, which is far longer).
    // (Bob's token may predate his join, written through another process: the poll goes on
    // until the message comes, and the poll that brings it must not have run to its timeout.)
    let bob_a = via(&bob, &a);
    let since = bob_a.since_now().await;
    let poll = {
        let bob_a = bob_a.clone();
        let (room, mut since) = (room.clone(), since.clone());
        tokio::spawn(async move {
            for _ in 0..10 {
                let started = std::time::Instant::now();
                let body =
                    bob_a.get(&format!("{V3}/sync?timeout=30000&since={since}")).await.assert_ok().clone();
                let seen = bodies(&body["rooms"]["join"][&room]["timeline"]["events"]);
                if !seen.is_empty() {
                    return (started.elapsed(), seen);
                }
                since = body["next_batch"].as_str().unwrap().to_owned();
            }
            panic!("the message never reached Bob's long-poll on A");
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    via(&alice, &c).send_text(&room, "live", "from C to A").await;
    let (waited, seen) = poll.await.unwrap();
    assert_eq!(seen, ["from C to A"]);
    assert!(waited < Duration::from_secs(15), "the long-poll on A was not woken by C's write ({waited:?})");

    // Concurrent writers to one room through all three processes, messages and state both.
    let since = bob_a.since_now().await;
    let writers = [(alice.clone(), a.clone()), (bob.clone(), b.clone()), (carol.clone(), c.clone())];
    let mut tasks = Vec::new();
    for (w, (user, url)) in writers.into_iter().enumerate() {
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            let client = via(&user, &url);
            for i in 0..20 {
                client.send_text(&room, &format!("w{w}-{i}"), &format!("w{w} m{i}")).await;
                if i % 5 == 0 {
                    let topic = json!({"topic": format!("topic by w{w} at {i}")});
                    client.put(&format!("{V3}/rooms/{room}/state/m.room.topic"), topic).await.assert_ok();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    // No fork: one forward extremity, and every event has one parent no other event has.
    assert_eq!(deployment.forward_extremities(&room), 1);
    let prevs = deployment.prev_events(&room);
    assert!(prevs.len() > 80, "the room's events: {}", prevs.len());
    let mut children: HashMap<&str, usize> = HashMap::new();
    for parents in &prevs {
        assert!(parents.len() <= 1, "an event with several parents: {parents:?}");
        for parent in parents {
            *children.entry(parent.as_str()).or_default() += 1;
        }
    }
    assert!(children.values().all(|n| *n == 1), "a parent with several children: {children:?}");

    // Every process tells the same history, and the same current state.
    let wanted: Vec<String> = history(&via(&alice, &a), &room).await;
    assert_eq!(wanted.len(), 61, "{wanted:?}");
    for url in [&b, &c, &lb] {
        assert_eq!(history(&via(&carol, url), &room).await, wanted);
    }
    let topics: Vec<Value> = topics_through(&alice, &room, &[&a, &b, &c]).await;
    assert!(topics.windows(2).all(|w| w[0] == w[1]), "{topics:?}");

    // Sync through each process sees each new message once, in the same order as history.
    let sent: Vec<String> = wanted[1..].to_vec();
    for url in [&a, &b, &c] {
        let seen = sync_messages(&via(&bob, url), &room, &since, sent.len()).await;
        assert_eq!(seen, sent, "sync through {url}");
    }
    // And a client that moves between processes mid-stream (round-robin) misses nothing.
    let seen = sync_messages(&via(&bob, &lb), &room, &since, sent.len()).await;
    assert_eq!(seen, sent, "sync through nginx");
}

/// `seen` holds no message twice and every one of `wanted`.
fn assert_each_once(seen: &[String], wanted: &[String], what: &str) {
    let mut unique = seen.to_vec();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "a message twice in {what}");
    for body in wanted {
        assert!(seen.contains(body), "{body} is missing from {what}");
    }
}

async fn topics_through(user: &Client, room: &str, urls: &[&String]) -> Vec<Value> {
    let mut topics = Vec::new();
    for url in urls {
        let reply = via(user, url).get(&format!("{V3}/rooms/{room}/state/m.room.topic")).await;
        topics.push(reply.assert_ok()["topic"].clone());
    }
    topics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_process_under_load_loses_nothing_acknowledged() {
    let mut deployment = Deployment::start(3);
    let lb = deployment.nginx.base_url.clone();
    let alice = Client::register(&lb, "alice", "pw").await;
    let bob = Client::register(&lb, "bob", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    bob.post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let since = bob.since_now().await;

    // Two senders through nginx; one process dies under them. A send that fails is retried
    // with its transaction ID, as clients do, so each message is acknowledged exactly once.
    let mut senders = Vec::new();
    for (s, user) in [alice.clone(), bob.clone()].into_iter().enumerate() {
        let room = room.clone();
        senders.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..40 {
                let path = format!("{V3}/rooms/{room}/send/m.room.message/s{s}-{i}");
                let body = json!({"msgtype": "m.text", "body": format!("s{s} m{i}")});
                for _attempt in 0..20 {
                    let reply = user.put(&path, body.clone()).await;
                    if reply.status == 200 {
                        acknowledged.push(format!("s{s} m{i}"));
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
            acknowledged
        }));
    }
    // The process running the delivery queues is the one that dies.
    let runner = deployment.queue_runner(Duration::from_secs(10)).expect("one process runs the queues");
    tokio::time::sleep(Duration::from_millis(400)).await;
    deployment.processes[runner].take().unwrap().kill9();
    let next =
        deployment.queue_runner(Duration::from_secs(10)).expect("another process takes the queues over");
    assert_ne!(next, runner);
    let mut acknowledged = Vec::new();
    for sender in senders {
        acknowledged.extend(sender.await.unwrap());
    }
    assert_eq!(acknowledged.len(), 80, "every send was acknowledged in the end");

    // Everything acknowledged is there, once, through each surviving process.
    let survivors: Vec<String> = (0..3).filter(|i| *i != runner).map(|i| deployment.url(i)).collect();
    for url in survivors {
        let history = history(&via(&alice, &url), &room).await;
        assert_each_once(&history, &acknowledged, &format!("/messages through {url}"));
    }
    // Bob's sync, resumed through the load balancer from before the crash, sees every message
    // once, and the stream goes on (a position the dead process held is released in seconds).
    let seen = sync_messages(&bob, &room, &since, acknowledged.len()).await;
    assert_each_once(&seen, &acknowledged, "sync through nginx");
    let after = bob.since_now().await;
    alice.send_text(&room, "after", "after the crash").await;
    assert_eq!(sync_messages(&bob, &room, &after, 1).await, ["after the crash"]);
}

/// Long-polls Bob's sync from `since` until `found` picks something out of a response (or
/// ten polls pass); returns what it found and how long the poll that found it took.
async fn poll_until<T>(client: &Client, since: &str, found: impl Fn(&Value) -> Option<T>) -> (T, Duration) {
    let mut since = since.to_owned();
    for _ in 0..10 {
        let started = std::time::Instant::now();
        let body = client.get(&format!("{V3}/sync?timeout=10000&since={since}")).await.assert_ok().clone();
        if let Some(value) = found(&body) {
            return (value, started.elapsed());
        }
        since = body["next_batch"].as_str().unwrap().to_owned();
    }
    panic!("never seen through {}", client.base_url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_presence_websockets_sliding_sync_and_rate_limits_span_the_processes() {
    // Messages: a burst of 6, then one every 10 s, for the whole deployment.
    let deployment = Deployment::start_with(
        3,
        &[
            ("HEARTH_RATE_LIMITS__ENABLED", "true"),
            ("HEARTH_RATE_LIMITS__MESSAGE__PER_SECOND", "0.1"),
            ("HEARTH_RATE_LIMITS__MESSAGE__BURST_COUNT", "6"),
        ],
    );
    let lb = deployment.nginx.base_url.clone();
    let (a, b, c) = (deployment.url(0), deployment.url(1), deployment.url(2));
    let alice = Client::register(&lb, "alice", "pw").await;
    let bob = Client::register(&lb, "bob", "pw").await;
    let room = bob.create_room(json!({"preset": "public_chat"})).await;
    via(&alice, &b).post(&format!("{V3}/join/{room}"), json!({})).await.assert_ok();
    let alice_id = alice.user_id.clone().unwrap();
    let bob_a = via(&bob, &a);

    // Alice starts typing through C: Bob's long-poll on A is woken with her in the room's
    // typing list (a reader in another process finds the change in its own copy).
    let since = bob_a.since_now().await;
    let typing = json!({"typing": true, "timeout": 30000});
    via(&alice, &c).put(&format!("{V3}/rooms/{room}/typing/{alice_id}"), typing).await.assert_ok();
    let typing_users = |body: &Value| {
        body["rooms"]["join"][&room]["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["type"] == "m.typing")
            .map(|e| e["content"]["user_ids"].clone())
    };
    let (users, _) = poll_until(&bob_a, &since, typing_users).await;
    assert_eq!(users, json!([alice_id]));
    // She stops through B; A's copy follows.
    let since = bob_a.since_now().await;
    via(&alice, &b)
        .put(&format!("{V3}/rooms/{room}/typing/{alice_id}"), json!({"typing": false}))
        .await
        .assert_ok();
    let (users, waited) = poll_until(&bob_a, &since, typing_users).await;
    assert_eq!(users, json!([]));
    assert!(waited < Duration::from_secs(5), "the stop reached A by its poll's timeout only ({waited:?})");

    // Presence set through C is what Bob sees through A, by sync and by the presence API.
    let since = bob_a.since_now().await;
    let status = json!({"presence": "unavailable", "status_msg": "in a meeting"});
    via(&alice, &c).put(&format!("{V3}/presence/{alice_id}/status"), status).await.assert_ok();
    let presence_of_alice = |body: &Value| {
        body["presence"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["sender"] == alice_id.as_str() && e["content"]["status_msg"] == "in a meeting")
            .map(|e| e["content"]["presence"].clone())
    };
    let (state, _) = poll_until(&bob_a, &since, presence_of_alice).await;
    assert_eq!(state, "unavailable");
    for url in [&a, &b] {
        let reply = via(&bob, url).get(&format!("{V3}/presence/{alice_id}/status")).await;
        assert_eq!(reply.assert_ok()["status_msg"], "in a meeting", "through {url}");
        assert_eq!(reply.body["presence"], "unavailable", "through {url}");
    }

    // A WebSocket on A, opened with a ticket issued through B, is pushed what is sent through C.
    let ticket = via(&alice, &b).post("/_matrix/client/unstable/io.hearth/ws_ticket", json!({})).await;
    let ticket = ticket.assert_ok()["ticket"].as_str().unwrap().to_owned();
    let ws_url = format!("{}/ws?ticket={ticket}", a.replace("http://", "ws://"));
    let (mut socket, _) = tokio_tungstenite::connect_async(ws_url).await.expect("upgrade on A");
    assert_eq!(next_frame(&mut socket).await["type"], "ack");
    let sync = tokio_tungstenite::tungstenite::Message::Text(json!({"type": "sync"}).to_string().into());
    socket.send(sync).await.unwrap();
    assert_eq!(next_frame(&mut socket).await["type"], "sync");
    via(&bob, &c).send_text(&room, "ws", "pushed to A").await;
    let mut pushed = Vec::new();
    for _ in 0..10 {
        let frame = next_frame(&mut socket).await;
        pushed.extend(bodies(&frame["rooms"]["join"][&room]["timeline"]["events"]));
        if !pushed.is_empty() {
            break;
        }
    }
    assert_eq!(pushed, ["pushed to A"]);
    drop(socket);

    // A sliding sync connection (Element X) goes on through whichever process the next
    // request reaches: each answers from where the connection stood, not anew.
    let sliding = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
    let body = json!({"lists": {"all": {"ranges": [[0, 9]], "timeline_limit": 5, "required_state": []}}});
    let first = via(&alice, &a).post(sliding, body.clone()).await.assert_ok().clone();
    assert!(first["rooms"][&room].is_object(), "{first}");
    via(&bob, &c).send_text(&room, "sliding", "seen once through B").await;
    let mut pos = first["pos"].as_str().unwrap().to_owned();
    let mut next = Value::Null;
    for _ in 0..10 {
        let path = format!("{sliding}?pos={pos}&timeout=10000");
        next = via(&alice, &b).post(&path, body.clone()).await.assert_ok().clone();
        pos = next["pos"].as_str().unwrap().to_owned();
        if next["rooms"][&room].is_object() {
            break;
        }
    }
    let timeline = bodies(&next["rooms"][&room]["timeline"]);
    assert_eq!(timeline, ["seen once through B"], "only what is new since A's answer: {next}");
    let path = format!("{sliding}?pos={pos}&timeout=0");
    let last = via(&alice, &c).post(&path, body.clone()).await.assert_ok().clone();
    assert!(last["rooms"][&room].is_null(), "nothing new, through C: {last}");
    let unknown = via(&alice, &a).post(&format!("{sliding}?pos=1_99&timeout=0"), body).await;
    unknown.assert_error(400, "M_UNKNOWN_POS");

    // One message limit for the deployment: sends spread round-robin over three processes
    // get one burst between them, not one each.
    let mut passed = 0;
    let mut limited = 0;
    for i in 0..15 {
        let path = format!("{V3}/rooms/{room}/send/m.room.message/burst{i}");
        let reply = alice.put(&path, json!({"msgtype": "m.text", "body": format!("burst {i}")})).await;
        match reply.status.as_u16() {
            200 => passed += 1,
            _ => {
                reply.assert_error(429, "M_LIMIT_EXCEEDED");
                limited += 1;
            }
        }
    }
    assert!(passed <= 6, "one burst of 6 between the processes, but {passed} passed");
    assert!(passed >= 4 && limited > 0, "passed {passed}, limited {limited}");
}
