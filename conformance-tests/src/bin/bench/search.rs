//! `--search N`: server-side search over N messages. One user fills 10 rooms with N messages of
//! generated prose (a fixed vocabulary with a few frequent words, many rare ones, and one word
//! in exactly 10 messages), then times `POST /search` for queries of each kind: the rare word,
//! a word in a few hundred messages, a word in about half of them, two words together, newest-first as
//! Element asks (with context), and a second page. Prints one JSON object.

use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};

use crate::{Api, ms, percentile};

/// Rooms the messages are spread over.
const ROOMS: usize = 10;
/// Concurrent senders while filling.
const SENDERS: usize = 16;
/// Timed runs of each query.
const RUNS: usize = 100;
/// The word that occurs in exactly ten messages.
const NEEDLE: &str = "quixotically";

/// A deterministic generator (xorshift), so every run and both servers get the same text.
struct Words(u64);

impl Words {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A word of the vocabulary: `common` in about half of the messages, `w<n>` for 5,000
    /// others with a skewed frequency (low numbers far more often).
    fn word(&mut self) -> String {
        let roll = self.next() % 1000;
        if roll < 60 {
            return "common".to_owned();
        }
        let n = (self.next() % 5000).min(self.next() % 5000);
        format!("w{n}")
    }

    fn message(&mut self, index: usize, needles: usize) -> String {
        let len = 6 + (self.next() % 10) as usize;
        let mut words: Vec<String> = (0..len).map(|_| self.word()).collect();
        if index.is_multiple_of(needles) {
            words.push(NEEDLE.to_owned());
        }
        words.join(" ")
    }
}

async fn search(api: &Api, criteria: Value, next_batch: Option<&str>) -> anyhow::Result<Value> {
    let mut body = json!({"search_categories": {"room_events": criteria}});
    if let Some(token) = next_batch {
        body["next_batch"] = json!(token);
    }
    let reply = api.call(reqwest::Method::POST, "/_matrix/client/v3/search", Some(body)).await?;
    Ok(reply["search_categories"]["room_events"].clone())
}

pub async fn run(http: &reqwest::Client, base: &str, run: &str, messages: usize) -> anyhow::Result<()> {
    let api = Api::register(http, base, &format!("{run}_searcher")).await?;
    let mut rooms = Vec::new();
    for _ in 0..ROOMS {
        rooms.push(api.create_room(&[]).await?);
    }
    let needles = (messages / 10).max(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..SENDERS {
        let (api, rooms) = (api.clone(), rooms.clone());
        tasks.push(tokio::spawn(async move {
            let mut words = Words(0x9E37_79B9_7F4A_7C15 ^ (worker as u64 + 1));
            for i in (worker..messages).step_by(SENDERS) {
                let body = words.message(i, needles);
                api.send(&rooms[i % ROOMS], &format!("s{i}"), &body).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let fill_secs = started.elapsed().as_secs_f64();

    // The first search also waits until everything sent is searchable: timed on its own.
    let started = Instant::now();
    let first = search(&api, json!({"search_term": NEEDLE}), None).await?;
    let first_ms = ms(started.elapsed());
    let needle_count = first["count"].as_u64().context("no count")?;

    let recent_context = json!({"search_term": "w1", "order_by": "recent",
        "event_context": {"before_limit": 1, "after_limit": 1, "include_profile": true}});
    let queries: Vec<(&str, Value)> = vec![
        ("rare_word_10_hits", json!({"search_term": NEEDLE})),
        ("uncommon_word", json!({"search_term": "w400"})),
        ("word_in_half", json!({"search_term": "common"})),
        ("two_words", json!({"search_term": "common w1"})),
        ("recent_with_context_like_element", recent_context.clone()),
    ];
    let mut report = serde_json::Map::new();
    for (name, criteria) in queries {
        let mut times = Vec::with_capacity(RUNS);
        let mut count = 0;
        for _ in 0..RUNS {
            let started = Instant::now();
            let found = search(&api, criteria.clone(), None).await?;
            times.push(ms(started.elapsed()));
            count = found["count"].as_u64().unwrap_or(0);
        }
        times.sort_by(f64::total_cmp);
        report.insert(
            name.to_owned(),
            json!({"count": count, "p50_ms": percentile(&times, 50.0), "p99_ms": percentile(&times, 99.0)}),
        );
    }
    let page_one = search(&api, recent_context.clone(), None).await?;
    let token = page_one["next_batch"].as_str().context("no next_batch on a first page")?.to_owned();
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let started = Instant::now();
        search(&api, recent_context.clone(), Some(&token)).await?;
        times.push(ms(started.elapsed()));
    }
    times.sort_by(f64::total_cmp);
    report.insert(
        "second_page".to_owned(),
        json!({"p50_ms": percentile(&times, 50.0), "p99_ms": percentile(&times, 99.0)}),
    );
    let out = json!({
        "messages": messages,
        "rooms": ROOMS,
        "fill_seconds": fill_secs,
        "fill_messages_per_second": messages as f64 / fill_secs,
        "first_search_ms": first_ms,
        "needle_count": needle_count,
        "queries": report,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
