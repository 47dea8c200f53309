//! `--websockets N [--room-size R]`: N concurrent connections to Hearth's WebSocket channel.
//!
//! Registers N/2 users, two sockets each (a phone and a laptop), in rooms of R users (default
//! 20; `--room-size N` puts everyone in one room, the worst case of fan-out). Opens the sockets
//! with single-use tickets and starts a sync on each, then (1) reads the server's resident memory
//! before and after to get the cost per connection, and (2) sends messages into the rooms in
//! turn and times each from the start of its send request to its arrival on every socket of the
//! room. Hearth-only: no other server has this channel.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::{connect_async, tungstenite::Message};

use super::{Api, ms, percentile};

const SOCKETS_PER_USER: usize = 2;
const MESSAGES: usize = 60;
const TICKET_PATH: &str = "/_matrix/client/unstable/io.hearth/ws_ticket";

/// Resident memory of `pid` in KiB, from /proc.
fn rss_kib(pid: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    line.split_whitespace().nth(1).context("VmRSS value")?.parse().context("VmRSS number")
}

pub async fn run(
    http: &reqwest::Client,
    base: &str,
    run: &str,
    n: usize,
    room_size: usize,
    pid: Option<String>,
) -> anyhow::Result<()> {
    let owner = Api::register(http, base, &format!("{run}_wsowner")).await?;
    let user_count = n.div_ceil(SOCKETS_PER_USER);
    let mut rooms = Vec::new();
    for _ in 0..user_count.div_ceil(room_size.max(1)) {
        rooms.push(owner.create_room(&[]).await?);
    }
    let mut users = Vec::new();
    for i in 0..user_count {
        let user = Api::register(http, base, &format!("{run}_ws{i}")).await?;
        user.join(&rooms[i / room_size.max(1)]).await?;
        users.push(user);
    }
    let settle = Duration::from_secs(3);
    tokio::time::sleep(settle).await;
    let before = pid.as_deref().map(rss_kib).transpose()?;

    // Every message's send start, by index; each socket reports arrivals against it.
    let started = Instant::now();
    let sent_at: Arc<Mutex<Vec<Option<f64>>>> = Arc::new(Mutex::new(vec![None; MESSAGES]));
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::with_capacity(n * MESSAGES)));
    let ws_base = base.replacen("http", "ws", 1);
    let mut readers = Vec::new();
    let mut expected = vec![0usize; rooms.len()];
    for i in 0..n {
        let user_index = i % users.len();
        let user = &users[user_index];
        let room = rooms[user_index / room_size.max(1)].clone();
        expected[user_index / room_size.max(1)] += 1;
        let ticket = user.call(reqwest::Method::POST, TICKET_PATH, Some(json!({}))).await?;
        let ticket = ticket["ticket"].as_str().context("no ticket")?;
        let (mut socket, _) = connect_async(format!("{ws_base}/ws?ticket={ticket}"))
            .await
            .with_context(|| format!("opening socket {i}"))?;
        socket.send(Message::Text(json!({"type": "sync"}).to_string().into())).await?;
        let (sent_at, latencies) = (sent_at.clone(), latencies.clone());
        let wanted = (0..MESSAGES).filter(|m| m % rooms.len() == user_index / room_size.max(1)).count();
        readers.push(tokio::spawn(async move {
            let mut seen = 0;
            while seen < wanted {
                let text = match socket.next().await {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    other => bail!("socket {i} ended: {other:?}"),
                };
                let arrived = ms(started.elapsed());
                let frame: Value = serde_json::from_str(text.as_str())?;
                let events = frame["rooms"]["join"][&room]["timeline"]["events"].as_array().cloned();
                for event in events.unwrap_or_default() {
                    let index = event["content"]["body"]
                        .as_str()
                        .and_then(|b| b.strip_prefix("wsbench "))
                        .and_then(|i| i.parse::<usize>().ok());
                    if let Some(index) = index
                        && let Some(Some(at)) = sent_at.lock().await.get(index).copied()
                    {
                        latencies.lock().await.push(arrived - at);
                        seen += 1;
                    }
                }
            }
            // Hold the socket open until the run ends, so the memory reading counts it.
            std::future::pending::<()>().await;
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(settle).await;
    let after = pid.as_deref().map(rss_kib).transpose()?;

    for index in 0..MESSAGES {
        // Recorded before the request leaves, so no arrival can beat its own start time.
        sent_at.lock().await[index] = Some(ms(started.elapsed()));
        let room = &rooms[index % rooms.len()];
        owner.send(room, &format!("{run}-ws{index}"), &format!("wsbench {index}")).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total: usize = (0..MESSAGES).map(|m| expected[m % rooms.len()]).sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    while latencies.lock().await.len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut failed = 0;
    let mut first_failure = None;
    for reader in readers {
        if reader.is_finished() {
            failed += 1;
            if let Ok(Err(error)) = reader.await {
                first_failure.get_or_insert(format!("{error:#}"));
            }
        } else {
            reader.abort();
        }
    }
    let mut samples = latencies.lock().await.clone();
    samples.sort_by(f64::total_cmp);
    let per_connection_kib = match (before, after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / n as f64),
        _ => None,
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "websockets": n,
            "users": user_count,
            "room_size": room_size,
            "sockets_that_failed": failed,
            "first_failure": first_failure,
            "server_rss_kib_before": before,
            "server_rss_kib_with_all_open": after,
            "server_kib_per_connection": per_connection_kib,
            "messages": MESSAGES,
            "deliveries_expected": total,
            "deliveries_seen": samples.len(),
            "push_latency_ms_p50": percentile(&samples, 50.0),
            "push_latency_ms_p99": percentile(&samples, 99.0),
            "push_latency_ms_max": samples.last(),
        }))?
    );
    Ok(())
}
