//! `bench`: drives any Matrix homeserver over the Client-Server API and prints JSON.
//!
//! Measures (a) send throughput at concurrency 16, (b) delivery latency from a send's 200 to
//! its arrival in 20 long-polling /syncs of other members, (c) initial sync time for a user in
//! 20 rooms of 100 messages each, and (d) incremental sync time.
//!
//! `--websockets N [--room-size R] --pid PID` opens N of Hearth's WebSocket connections instead and reports the
//! server's memory per connection and the push latency to all of them (see `websockets.rs`).
//!
//! `--big-room N [--remote URL --via NAME]` measures a room of N members instead: sends,
//! fan-out, syncs, member lists, and a join over federation (see `big_room.rs`).
//!
//! `--memory --pid PID` instead samples the server's resident memory through a registration
//! burst, a login burst and a workload of sends and syncs, then idle (see `memory.rs`).
//!
//! `--search N` fills rooms with N messages and times `POST /search` (see `search.rs`).
//!
//! `--sliding N` compares the first and an incremental response of `/sync` and of simplified
//! sliding sync for a user in N rooms (see `sliding.rs`).
//!
//! `bench --homeserver http://127.0.0.1:8008 [--label hearth] [--quick]`. The server must allow
//! registration with the dummy flow and must not rate-limit loopback. Bounded in count and time.

mod big_room;
mod memory;
mod search;
mod sliding;
mod websockets;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::sync::Mutex;

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
    user_id: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.with_context(|| format!("request {path}"))?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("{path}: HTTP {status}: {value}");
        }
        Ok(value)
    }

    async fn register(http: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<Self> {
        let anon =
            Self { http: http.clone(), base: base.to_owned(), token: String::new(), user_id: String::new() };
        let body = json!({"username": name, "password": "bench-password", "inhibit_login": false});
        let resp = http.post(format!("{base}/_matrix/client/v3/register")).json(&body).send().await?;
        let challenge: Value = resp.json().await?;
        let session = challenge["session"].as_str().unwrap_or_default().to_owned();
        let mut body = body;
        body["auth"] = json!({"type": "m.login.dummy", "session": session});
        let done = anon.call(reqwest::Method::POST, "/_matrix/client/v3/register", Some(body)).await?;
        Ok(Self {
            http: http.clone(),
            base: base.to_owned(),
            token: done["access_token"].as_str().context("no access_token")?.to_owned(),
            user_id: done["user_id"].as_str().context("no user_id")?.to_owned(),
        })
    }

    async fn create_room(&self, invite: &[String]) -> anyhow::Result<String> {
        let body = json!({"preset": "public_chat", "invite": invite});
        let v = self.call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(body)).await?;
        Ok(v["room_id"].as_str().context("no room_id")?.to_owned())
    }

    async fn join(&self, room: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::POST, &format!("/_matrix/client/v3/join/{room}"), Some(json!({}))).await?;
        Ok(())
    }

    async fn send(&self, room: &str, txn: &str, body: &str) -> anyhow::Result<String> {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        let v =
            self.call(reqwest::Method::PUT, &path, Some(json!({"msgtype": "m.text", "body": body}))).await?;
        Ok(v["event_id"].as_str().context("no event_id")?.to_owned())
    }

    async fn sync(&self, since: Option<&str>, timeout_ms: u64) -> anyhow::Result<Value> {
        Ok(self.timed_sync(since, timeout_ms, None).await?.0)
    }

    /// A /sync and the time until its whole body arrived (before the client parses it, so the
    /// bench's own JSON parsing does not count against the server).
    async fn timed_sync(
        &self,
        since: Option<&str>,
        timeout_ms: u64,
        filter: Option<&str>,
    ) -> anyhow::Result<(Value, Duration)> {
        let mut url = format!("{}/_matrix/client/v3/sync?timeout={timeout_ms}", self.base);
        if let Some(since) = since {
            url.push_str(&format!("&since={since}"));
        }
        if let Some(filter) = filter {
            url.push_str(&format!("&filter={filter}"));
        }
        let started = Instant::now();
        let resp = self.http.get(url).bearer_auth(&self.token).send().await?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let took = started.elapsed();
        if !status.is_success() {
            bail!("/sync: HTTP {status}");
        }
        Ok((serde_json::from_slice(&bytes)?, took))
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(&v, 50.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let base = arg("--homeserver").context("--homeserver URL is required")?;
    let label = arg("--label").unwrap_or_else(|| base.clone());
    let quick = args.iter().any(|a| a == "--quick");
    let host = url_host(&base);
    if !(host.starts_with("127.") || host == "localhost" || host == "[::1]") {
        bail!("bench only targets loopback addresses, not {host}");
    }
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let run = format!("b{}", std::process::id());
    if let Some(n) = arg("--idle") {
        return idle(&http, &base, &run, n.parse().context("--idle takes a number")?, arg("--pid")).await;
    }
    if args.iter().any(|a| a == "--memory") {
        let pid = arg("--pid").context("--memory needs --pid of the server")?;
        return memory::run(&http, &base, &run, &pid).await;
    }
    if let Some(n) = arg("--big-room") {
        let opts = big_room::Options {
            members: n.parse().context("--big-room takes a number")?,
            remote: arg("--remote"),
            via: arg("--via"),
            pid: arg("--pid"),
            remote_pid: arg("--remote-pid"),
        };
        if let Some(remote) = &opts.remote {
            let host = url_host(remote);
            if !host.starts_with("127.") {
                bail!("bench only targets loopback addresses, not {host}");
            }
        }
        return big_room::run(&http, &base, &run, opts).await;
    }
    if let Some(n) = arg("--search") {
        return search::run(&http, &base, &run, n.parse().context("--search takes a number")?).await;
    }
    if let Some(n) = arg("--sliding") {
        return sliding::run(&http, &base, &run, n.parse().context("--sliding takes a number")?).await;
    }
    if let Some(n) = arg("--websockets") {
        let n = n.parse().context("--websockets takes a number")?;
        let room_size =
            arg("--room-size").map(|r| r.parse()).transpose().context("--room-size takes a number")?;
        return websockets::run(&http, &base, &run, n, room_size.unwrap_or(20), arg("--pid")).await;
    }
    let (sends, rooms, per_room, deliveries, receivers) =
        if quick { (200, 4, 20, 20, 5) } else { (2000, 20, 100, 100, 20) };

    // (a) send throughput, 16 concurrent senders in one room.
    let sender = Api::register(&http, &base, &format!("{run}_sender")).await?;
    let room = sender.create_room(&[]).await?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let api = sender.clone();
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            for i in (worker..sends).step_by(16) {
                api.send(&room, &format!("t{i}"), &format!("message {i}")).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let throughput = sends as f64 / started.elapsed().as_secs_f64();

    // (b) delivery latency to 20 long-polling members.
    let poster = Api::register(&http, &base, &format!("{run}_poster")).await?;
    let live = poster.create_room(&[]).await?;
    let mut listeners = Vec::new();
    for i in 0..receivers {
        let api = Api::register(&http, &base, &format!("{run}_rx{i}")).await?;
        api.join(&live).await?;
        listeners.push(api);
    }
    let sent_at: Arc<Mutex<std::collections::HashMap<String, Instant>>> = Arc::default();
    let arrivals: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut pollers = Vec::new();
    for api in listeners {
        let mut since = api.sync(None, 0).await?["next_batch"].as_str().unwrap_or_default().to_owned();
        let (arrivals, stop, live) = (arrivals.clone(), stop.clone(), live.clone());
        pollers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let resp = api.sync(Some(&since), 5000).await?;
                let now = Instant::now();
                if let Some(events) = resp["rooms"]["join"][&live]["timeline"]["events"].as_array() {
                    let mut out = arrivals.lock().await;
                    for e in events {
                        if let Some(id) = e["event_id"].as_str() {
                            out.push((id.to_owned(), now));
                        }
                    }
                }
                since = resp["next_batch"].as_str().unwrap_or_default().to_owned();
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..deliveries {
        let id = poster.send(&live, &format!("d{i}"), "ping").await?;
        let acked = Instant::now();
        sent_at.lock().await.insert(id, acked);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the last deliveries land, bounded.
    let expected = deliveries * receivers;
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals.lock().await.len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent_at = sent_at.lock().await.clone();
    let mut latencies: Vec<f64> = arrivals
        .lock()
        .await
        .iter()
        .filter_map(|(id, at)| sent_at.get(id).map(|s| ms(at.saturating_duration_since(*s))))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let delivered = latencies.len();
    // Pollers finish within their 5 s long-poll; a poke wakes them sooner.
    poster.send(&live, "final", "bye").await?;
    for p in pollers {
        let _ = tokio::time::timeout(Duration::from_secs(10), p).await;
    }

    // (c) initial sync for a user in 20 rooms of 100 messages.
    let reader = Api::register(&http, &base, &format!("{run}_reader")).await?;
    let writer = Api::register(&http, &base, &format!("{run}_writer")).await?;
    for r in 0..rooms {
        let room = writer.create_room(&[]).await?;
        reader.join(&room).await?;
        let mut batch = Vec::new();
        for m in 0..per_room {
            let (api, room) = (writer.clone(), room.clone());
            batch.push(tokio::spawn(async move { api.send(&room, &format!("r{r}m{m}"), "history").await }));
            if batch.len() == 16 {
                for t in batch.drain(..) {
                    t.await??;
                }
            }
        }
        for t in batch {
            t.await??;
        }
    }
    let mut initial = Vec::new();
    let mut since = String::new();
    for round in 1..=5 {
        // Each round asks a different (equivalent) question, so no server can answer it from a
        // cache of the previous response: only the presence limit differs, and there is none.
        let filter = format!("%7B%22presence%22%3A%7B%22limit%22%3A{round}%7D%7D");
        let (resp, took) = reader.timed_sync(None, 0, Some(&filter)).await?;
        initial.push(ms(took));
        since = resp["next_batch"].as_str().unwrap_or_default().to_owned();
    }

    // (d) incremental sync after one new message.
    let probe_room = writer.create_room(&[]).await?;
    reader.join(&probe_room).await?;
    since = reader.sync(Some(&since), 0).await?["next_batch"].as_str().unwrap_or_default().to_owned();
    let mut incremental = Vec::new();
    for i in 0..20 {
        writer.send(&probe_room, &format!("inc{i}"), "new").await?;
        let (resp, took) = reader.timed_sync(Some(&since), 0, None).await?;
        incremental.push(ms(took));
        since = resp["next_batch"].as_str().unwrap_or_default().to_owned();
    }

    let result = json!({
        "label": label,
        "homeserver": base,
        "send_throughput_events_per_s": (throughput * 10.0).round() / 10.0,
        "sends": sends,
        "delivery_latency_ms": {
            "p50": (percentile(&latencies, 50.0) * 100.0).round() / 100.0,
            "p99": (percentile(&latencies, 99.0) * 100.0).round() / 100.0,
            "delivered": delivered,
            "expected": expected,
        },
        "initial_sync_ms": (median(initial) * 10.0).round() / 10.0,
        "initial_sync_rooms": rooms,
        "initial_sync_messages_per_room": per_room,
        "incremental_sync_ms": (median(incremental) * 100.0).round() / 100.0,
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

/// Holds `n` long-polling /syncs open (50 users, each with many) for 20 s and reports the
/// server's CPU time meanwhile, read from /proc for `--pid` (the server process).
async fn idle(
    http: &reqwest::Client,
    base: &str,
    run: &str,
    n: usize,
    pid: Option<String>,
) -> anyhow::Result<()> {
    let mut users = Vec::new();
    for i in 0..50 {
        users.push(Api::register(http, base, &format!("{run}_idle{i}")).await?);
    }
    let mut tokens = Vec::new();
    for u in &users {
        tokens.push(u.sync(None, 0).await?["next_batch"].as_str().unwrap_or_default().to_owned());
    }
    let client = reqwest::Client::builder().pool_max_idle_per_host(n).build()?;
    let mut polls = Vec::new();
    for i in 0..n {
        let (u, since) = (&users[i % users.len()], &tokens[i % users.len()]);
        let url = format!("{base}/_matrix/client/v3/sync?timeout=40000&since={since}");
        let req = client.get(url).bearer_auth(&u.token);
        polls.push(tokio::spawn(async move { req.send().await.map(|r| r.status()) }));
    }
    // Let every poll reach the server and settle before measuring.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu = |pid: &str| -> anyhow::Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
        Ok(fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
    };
    let window = Duration::from_secs(20);
    let before = pid.as_deref().map(cpu).transpose()?;
    tokio::time::sleep(window).await;
    let after = pid.as_deref().map(cpu).transpose()?;
    let ticks_per_s = 100.0;
    let cpu_percent = match (before, after) {
        (Some(b), Some(a)) => {
            Some(((a.saturating_sub(b)) as f64 / ticks_per_s) / window.as_secs_f64() * 100.0)
        }
        _ => None,
    };
    let still_open = polls.iter().filter(|p| !p.is_finished()).count();
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "idle_long_polls": n,
            "still_open_after_25s": still_open,
            "server_cpu_percent_over_20s": cpu_percent,
        }))?
    );
    for p in polls {
        p.abort();
    }
    Ok(())
}

fn url_host(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host.to_owned(),
        _ => authority.to_owned(),
    }
}
