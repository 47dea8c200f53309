//! `--sliding N`: a user in N rooms (three messages each) starts a client two ways: a `/sync`
//! initial sync, and the first simplified sliding sync response Element X asks for (a window of
//! 20 rooms, one timeline event each, its required state, account data, receipts and typing).
//! Then, after one new message, the incremental response of each. Times run to the last byte;
//! bytes are the response bodies. Prints one JSON object.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::{Api, median, ms};

const SLIDING: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";
/// Concurrent requests while filling.
const FILLERS: usize = 8;
/// Timed runs of each initial request and of each incremental pair.
const RUNS: usize = 5;

/// What Element X's room list asks for on start-up.
fn element_x_request(conn: &str) -> Value {
    json!({
        "conn_id": conn,
        "lists": {"all_rooms": {
            "ranges": [[0, 19]],
            "timeline_limit": 1,
            "required_state": [
                ["m.room.encryption", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"],
                ["m.room.name", ""], ["m.room.avatar", ""], ["m.room.canonical_alias", ""],
                ["m.room.create", ""], ["m.room.join_rules", ""], ["m.room.power_levels", ""],
                ["m.room.topic", ""], ["m.room.history_visibility", ""], ["m.room.pinned_events", ""],
            ],
        }},
        "extensions": {
            "account_data": {"enabled": true},
            "receipts": {"enabled": true, "rooms": ["*"]},
            "typing": {"enabled": true},
        },
    })
}

/// One request's time to the last byte, its body size, and its JSON.
async fn timed(
    api: &Api,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(Duration, usize, Value)> {
    let mut req = api.http.request(method, format!("{}{path}", api.base)).bearer_auth(&api.token);
    if let Some(body) = body {
        req = req.json(body);
    }
    let started = Instant::now();
    let resp = req.send().await?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    let took = started.elapsed();
    if !status.is_success() {
        bail!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok((took, bytes.len(), serde_json::from_slice(&bytes)?))
}

pub async fn run(http: &reqwest::Client, base: &str, run: &str, rooms: usize) -> anyhow::Result<()> {
    let user = Api::register(http, base, &format!("{run}_reader")).await?;
    let other = Api::register(http, base, &format!("{run}_writer")).await?;
    let filled = Instant::now();
    let mut room_ids = Vec::with_capacity(rooms);
    for chunk in (0..rooms).collect::<Vec<_>>().chunks(FILLERS) {
        let mut tasks = Vec::new();
        for &i in chunk {
            let (user, other) = (user.clone(), other.clone());
            tasks.push(tokio::spawn(async move {
                let room = other.create_room(&[]).await?;
                user.join(&room).await?;
                for m in 0..3 {
                    other.send(&room, &format!("f{i}_{m}"), &format!("message {m} in room {i}")).await?;
                }
                anyhow::Ok(room)
            }));
        }
        for task in tasks {
            room_ids.push(task.await??);
        }
    }
    let fill_s = filled.elapsed().as_secs_f64();

    let (mut v2_times, mut v2_bytes, mut ss_times, mut ss_bytes) = (Vec::new(), 0, Vec::new(), 0);
    let mut since = String::new();
    let mut pos = String::new();
    for i in 0..RUNS {
        // Each filter differs, so that no response cache answers a repeat.
        let filter = format!("%7B%22account_data%22%3A%7B%22not_types%22%3A%5B%22x.bench{i}%22%5D%7D%7D");
        let (took, bytes, body) = timed(
            &user,
            reqwest::Method::GET,
            &format!("/_matrix/client/v3/sync?timeout=0&filter={filter}"),
            None,
        )
        .await?;
        v2_times.push(ms(took));
        v2_bytes = bytes;
        since = body["next_batch"].as_str().context("no next_batch")?.to_owned();
        let (took, bytes, body) =
            timed(&user, reqwest::Method::POST, SLIDING, Some(&element_x_request(&format!("bench{i}"))))
                .await?;
        ss_times.push(ms(took));
        ss_bytes = bytes;
        let count = body["lists"]["all_rooms"]["count"].as_u64().unwrap_or(0);
        if count != rooms as u64 {
            bail!("sliding sync counted {count} rooms, not {rooms}: {body}");
        }
        pos = body["pos"].as_str().context("no pos")?.to_owned();
    }
    let conn = format!("bench{}", RUNS - 1);

    let (mut v2_inc, mut ss_inc, mut v2_inc_bytes, mut ss_inc_bytes) = (Vec::new(), Vec::new(), 0, 0);
    for i in 0..RUNS * 4 {
        other.send(&room_ids[i % room_ids.len()], &format!("inc{i}"), "one more").await?;
        let path = format!("/_matrix/client/v3/sync?timeout=0&since={since}");
        let (took, bytes, body) = timed(&user, reqwest::Method::GET, &path, None).await?;
        v2_inc.push(ms(took));
        v2_inc_bytes = bytes;
        since = body["next_batch"].as_str().context("no next_batch")?.to_owned();
        let path = format!("{SLIDING}?pos={pos}&timeout=0");
        let (took, bytes, body) =
            timed(&user, reqwest::Method::POST, &path, Some(&element_x_request(&conn))).await?;
        ss_inc.push(ms(took));
        ss_inc_bytes = bytes;
        pos = body["pos"].as_str().context("no pos")?.to_owned();
    }

    let report = json!({
        "rooms": rooms,
        "fill_seconds": fill_s,
        "initial": {
            "sync_v2_ms_median": median(v2_times),
            "sync_v2_bytes": v2_bytes,
            "sliding_ms_median": median(ss_times),
            "sliding_bytes": ss_bytes,
        },
        "incremental_after_one_message": {
            "sync_v2_ms_median": median(v2_inc),
            "sync_v2_bytes": v2_inc_bytes,
            "sliding_ms_median": median(ss_inc),
            "sliding_bytes": ss_inc_bytes,
        },
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
