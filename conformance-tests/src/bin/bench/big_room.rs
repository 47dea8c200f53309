//! `--big-room N [--remote URL --via SERVER] [--pid PID] [--remote-pid PID]`: one room of N
//! members (local users of `--homeserver`), and what is slow in big rooms elsewhere:
//!
//! (1) registering the N users and joining them (concurrency 16; set-up, timed but not the
//! point), (2) a send's latency into the big room against a 2-member room (200 each,
//! interleaved, p50/p99), (3) delivery from a send's 200 to its arrival in 1,000 long-polling
//! members' /syncs (20 sends a second apart), (4) a member's initial /sync with lazy-loaded members and without (median
//! of 5 and of 3), (5) `/members` and `/joined_members` (median of 3), and with `--remote`, (6)
//! a user of that second homeserver joining over federation (through `--via`, the big room's
//! server name) and sending: the time until the join's 200, until the send's 200, and until
//! the first server has the message; with `--remote-pid`, the joining server's peak memory.
//! Bounded in count and time.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::{Api, median, ms, percentile};

const CONCURRENCY: usize = 16;
const SENDS: usize = 200;
const POLLERS: usize = 1000;
const DELIVERIES: usize = 20;
/// `{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":10}}}`
const LAZY: &str = "%7B%22room%22%3A%7B%22state%22%3A%7B%22lazy_load_members%22%3Atrue%7D%2C%22timeline%22%3A%7B%22limit%22%3A10%7D%7D%7D";

pub struct Options {
    pub members: usize,
    pub remote: Option<String>,
    pub via: Option<String>,
    pub pid: Option<String>,
    pub remote_pid: Option<String>,
}

/// One mention of `target` by `sender` in `room`, with `target`'s pusher at a stand-in push
/// gateway.
async fn mention_round(target: &Api, sender: &Api, room: &str) -> anyhow::Result<Value> {
    let gateway = hearth_conformance_tests::push_gateway::PushGateway::start().await;
    let pusher = json!({
        "kind": "http", "app_id": "bench.app", "pushkey": "bench-key", "app_display_name": "Bench",
        "device_display_name": "Bench", "lang": "en", "data": {"url": gateway.url},
    });
    target.call(reqwest::Method::POST, "/_matrix/client/v3/pushers/set", Some(pusher)).await?;
    let (first, _) = target.timed_sync(None, 0, Some(LAZY)).await?;
    let mut since = first["next_batch"].as_str().unwrap_or_default().to_owned();
    let counts = |resp: &Value| resp["rooms"]["join"][room]["unread_notifications"].clone();
    let started = Instant::now();
    let content = json!({"msgtype": "m.text", "body": "ping", "m.mentions": {"user_ids": [target.user_id]}});
    let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/mention");
    let sent = sender.call(reqwest::Method::PUT, &path, Some(content)).await?;
    let event_id = sent["event_id"].as_str().unwrap_or_default().to_owned();
    let received = gateway.wait_for(1, Duration::from_secs(10)).await;
    let to_gateway_ms = (!received.is_empty()).then(|| round2(ms(started.elapsed())));
    let mut highlight_with_event = None;
    for _ in 0..20 {
        let (resp, _) = target.timed_sync(Some(&since), 5000, Some(LAZY)).await?;
        since = resp["next_batch"].as_str().unwrap_or_default().to_owned();
        let events =
            resp["rooms"]["join"][room]["timeline"]["events"].as_array().cloned().unwrap_or_default();
        if events.iter().any(|e| e["event_id"] == json!(event_id)) {
            highlight_with_event = Some(counts(&resp)["highlight_count"].clone());
            break;
        }
    }
    let receipt = format!("/_matrix/client/v3/rooms/{room}/receipt/m.read/{event_id}");
    target.call(reqwest::Method::POST, &receipt, Some(json!({}))).await?;
    let (after, _) = target.timed_sync(Some(&since), 5000, Some(LAZY)).await?;
    Ok(json!({
        "to_push_gateway_ms": to_gateway_ms,
        "gateway_counts": received.first().map(|n| n["counts"].clone()),
        "highlight_count_in_the_sync_with_the_event": highlight_with_event,
        "counts_after_read_receipt": counts(&after),
    }))
}

/// Turns every user's master push rule (`.m.rule.master`: nothing notifies) on or off.
async fn set_master_rule(users: &[Api], enabled: bool) -> anyhow::Result<()> {
    let path = "/_matrix/client/v3/pushrules/global/override/.m.rule.master/enabled";
    let done: Vec<anyhow::Result<Value>> = stream::iter(users)
        .map(|u| async move { u.call(reqwest::Method::PUT, path, Some(json!({ "enabled": enabled }))).await })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    done.into_iter().collect::<anyhow::Result<Vec<Value>>>()?;
    Ok(())
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The highest VmRSS of `pid` while `work` runs, sampled every 20 ms.
async fn peak_rss<T>(pid: Option<&str>, work: impl std::future::Future<Output = T>) -> (T, Option<f64>) {
    let Some(pid) = pid.map(str::to_owned) else { return (work.await, None) };
    let peak = Arc::new(AtomicU64::new(rss_kib(&pid).unwrap_or(0)));
    let done = Arc::new(AtomicBool::new(false));
    let (seen, stop) = (peak.clone(), done.clone());
    let sampler = tokio::spawn(async move {
        // Bounded: at most ten minutes of sampling.
        for _ in 0..30_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Some(rss) = rss_kib(&pid) {
                seen.fetch_max(rss, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let out = work.await;
    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    (out, Some((peak.load(Ordering::Relaxed) as f64 / 1024.0 * 10.0).round() / 10.0))
}

pub async fn run(http: &reqwest::Client, base: &str, run: &str, opts: Options) -> anyhow::Result<()> {
    let n = opts.members.max(POLLERS + 1);
    // (1) Set-up: N users, all joined.
    let started = Instant::now();
    let users: Vec<Api> = stream::iter(0..n)
        .map(|i| async move { Api::register(http, base, &format!("{run}_m{i}")).await })
        .buffered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let registered_s = started.elapsed().as_secs_f64();
    let owner = &users[0];
    let room = owner.create_room(&[]).await?;
    let started = Instant::now();
    let joins: Vec<anyhow::Result<()>> = stream::iter(&users[1..])
        .map(|u| {
            let room = room.clone();
            async move { u.join(&room).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    joins.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let joined_s = started.elapsed().as_secs_f64();
    let small = owner.create_room(&[]).await?;
    users[1].join(&small).await?;

    // Phase markers on stderr, so that a profiler can be attached to one phase.
    eprintln!("big-room: set up {n} members; phase: sends");
    // (2) Send latency, big room and small room interleaved.
    let (mut big, mut two) = (Vec::new(), Vec::new());
    for i in 0..SENDS {
        for (target, out) in [(&room, &mut big), (&small, &mut two)] {
            let started = Instant::now();
            owner.send(target, &format!("lat{i}"), "latency").await?;
            out.push(ms(started.elapsed()));
        }
    }
    big.sort_by(f64::total_cmp);
    two.sort_by(f64::total_cmp);

    // (2b) The same sends with every member's notifications off (the master rule on): the
    // rules are still evaluated, but nothing notifies, so the difference is what the default
    // rules' notifications for every member cost (counts, notification list).
    eprintln!("big-room: phase: sends with notifications off");
    set_master_rule(&users[1..], true).await?;
    let mut muted = Vec::new();
    for i in 0..SENDS {
        let started = Instant::now();
        owner.send(&room, &format!("muted{i}"), "latency").await?;
        muted.push(ms(started.elapsed()));
    }
    muted.sort_by(f64::total_cmp);
    set_master_rule(&users[1..], false).await?;

    // (2c) A mention of one member with a pusher: when the push gateway hears of it, whether
    // the sync that brings the event already counts the highlight, and a read receipt clearing it.
    eprintln!("big-room: phase: mention");
    let mention = mention_round(&users[n - 1], owner, &room).await?;

    // (3) Delivery to 1,000 long-polling members.
    let pollers = &users[1..=POLLERS];
    let tokens: Vec<anyhow::Result<String>> = stream::iter(pollers)
        .map(|u| async move {
            let (resp, _) = u.timed_sync(None, 0, Some(LAZY)).await?;
            Ok(resp["next_batch"].as_str().unwrap_or_default().to_owned())
        })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let arrivals: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (u, since) in pollers.iter().zip(tokens) {
        let (u, mut since) = (u.clone(), since?);
        let (arrivals, stop, room) = (arrivals.clone(), stop.clone(), room.clone());
        tasks.push(tokio::spawn(async move {
            // Bounded by the stop flag and a cap on rounds.
            for _ in 0..200 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok((resp, _)) = u.timed_sync(Some(&since), 5000, Some(LAZY)).await else { break };
                let now = Instant::now();
                if let Some(events) = resp["rooms"]["join"][&room]["timeline"]["events"].as_array() {
                    let mut out = arrivals.lock().await;
                    out.extend(
                        events.iter().filter_map(|e| e["event_id"].as_str()).map(|id| (id.to_owned(), now)),
                    );
                }
                since = resp["next_batch"].as_str().unwrap_or_default().to_owned();
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    eprintln!("big-room: phase: delivery");
    let mut sent_at = HashMap::new();
    for i in 0..DELIVERIES {
        let id = owner.send(&room, &format!("fan{i}"), "to everyone").await?;
        sent_at.insert(id, Instant::now());
        // A second apart: each send wakes 1,000 /syncs, and this measures how soon they all
        // have it, not how many a second two cores can answer.
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let expected = DELIVERIES * POLLERS;
    let deadline = Instant::now() + Duration::from_secs(60);
    while arrivals.lock().await.iter().filter(|(id, _)| sent_at.contains_key(id)).count() < expected
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut delivery: Vec<f64> = arrivals
        .lock()
        .await
        .iter()
        .filter_map(|(id, at)| sent_at.get(id).map(|s| ms(at.saturating_duration_since(*s))))
        .collect();
    delivery.sort_by(f64::total_cmp);
    owner.send(&room, "wake", "bye").await?;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }

    // (4) A member's initial sync, lazy and full; (5) the member lists.
    eprintln!("big-room: phase: syncs and member lists");
    let reader = &users[n - 1];
    let mut lazy = Vec::new();
    for round in 1..=5 {
        // Each request differs (the timeline limit), so no response cache can answer it.
        let filter = LAZY.replace("%3A10", &format!("%3A{}", 10 + round));
        lazy.push(ms(reader.timed_sync(None, 0, Some(&filter)).await?.1));
    }
    let mut full = Vec::new();
    let mut full_bytes = 0;
    for round in 1..=3 {
        let filter = format!("%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A{}%7D%7D%7D", 10 + round);
        let (resp, took) = reader.timed_sync(None, 0, Some(&filter)).await?;
        full.push(ms(took));
        full_bytes = resp.to_string().len();
    }
    let mut members = Vec::new();
    let mut joined_members = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let list = reader
            .call(reqwest::Method::GET, &format!("/_matrix/client/v3/rooms/{room}/members"), None)
            .await?;
        members.push(ms(started.elapsed()));
        anyhow::ensure!(list["chunk"].as_array().map_or(0, Vec::len) >= n, "/members lists fewer than {n}");
        let started = Instant::now();
        reader
            .call(reqwest::Method::GET, &format!("/_matrix/client/v3/rooms/{room}/joined_members"), None)
            .await?;
        joined_members.push(ms(started.elapsed()));
    }

    // (6) A user of another server joins over federation and sends.
    eprintln!("big-room: phase: remote join");
    let remote = match (&opts.remote, &opts.via) {
        (Some(remote), Some(via)) => {
            let joiner = Api::register(http, remote, &format!("{run}_remote")).await?;
            let work = async {
                let started = Instant::now();
                let path = format!("/_matrix/client/v3/join/{room}?server_name={via}&via={via}");
                joiner.call(reqwest::Method::POST, &path, Some(json!({}))).await?;
                let joined = started.elapsed();
                let id = joiner.send(&room, "remote1", "hello from afar").await?;
                let sent = started.elapsed();
                // Until the big room's own server has the message (bounded).
                let path = format!("/_matrix/client/v3/rooms/{room}/event/{id}");
                let deadline = Instant::now() + Duration::from_secs(60);
                while owner.call(reqwest::Method::GET, &path, None).await.is_err() {
                    anyhow::ensure!(Instant::now() < deadline, "the remote message never arrived");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                anyhow::Ok((joined, sent, started.elapsed()))
            };
            let (times, peak) = peak_rss(opts.remote_pid.as_deref(), work).await;
            let (joined, sent, arrived) = times?;
            Some(json!({
                "join_ms": round2(ms(joined)),
                "join_and_send_ms": round2(ms(sent)),
                "message_at_room_server_ms": round2(ms(arrived)),
                "joining_server_peak_rss_mib": peak,
            }))
        }
        _ => None,
    };
    let rss = opts.pid.as_deref().and_then(rss_kib).map(|k| (k as f64 / 1024.0 * 10.0).round() / 10.0);

    let result = json!({
        "members": n,
        "setup": {"register_s": round2(registered_s), "join_s": round2(joined_s),
                  "joins_per_s": round2((n - 1) as f64 / joined_s)},
        "send_ms": {
            "big_room": {"p50": round2(percentile(&big, 50.0)), "p99": round2(percentile(&big, 99.0))},
            "two_member_room": {"p50": round2(percentile(&two, 50.0)), "p99": round2(percentile(&two, 99.0))},
            "p99_ratio": round2(percentile(&big, 99.0) / percentile(&two, 99.0)),
            "big_room_notifications_off": {"p50": round2(percentile(&muted, 50.0)), "p99": round2(percentile(&muted, 99.0))},
        },
        "delivery_to_1000_long_polls_ms": {
            "p50": round2(percentile(&delivery, 50.0)), "p99": round2(percentile(&delivery, 99.0)),
            "delivered": delivery.len(), "expected": expected,
        },
        "initial_sync_ms": {"lazy_members": round2(median(lazy)), "all_members": round2(median(full)),
                            "all_members_bytes": full_bytes},
        "members_ms": round2(median(members)),
        "joined_members_ms": round2(median(joined_members)),
        "mention": mention,
        "remote_join": remote,
        "server_rss_mib_after": rss,
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
