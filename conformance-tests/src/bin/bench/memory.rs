//! `--memory --pid PID`: the server's resident memory through a registration burst, a login
//! burst and a steering-style workload, and how much of it is given back when idle.
//!
//! (1) registers 200 users at concurrency 16 (one password hash each), (2) logs all 200 in at
//! once, counting answers by status (a 429 is fine, a 5xx or a dropped connection is not),
//! (3) puts them in 10 rooms, sends 2,000 messages at concurrency 16, then gives every user an
//! initial and an incremental /sync, and (4) waits idle. The server's VmRSS is sampled every
//! 50 ms throughout (peak per phase) and VmHWM, the kernel's own peak, is read at the end.
//! Works against any homeserver whose process is `--pid`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::Api;

const USERS: usize = 200;
const CONCURRENCY: usize = 16;
const ROOMS: usize = 10;
const SENDS: usize = 2000;
const PASSWORD: &str = "bench-password";

/// A field of /proc/PID/status, in KiB.
fn status_kib(pid: &str, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field}"))?;
    line.split_whitespace().nth(1).context("status value")?.parse().context("status number")
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// Samples VmRSS in the background; `take_peak` returns the highest value since the last call.
struct Sampler {
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: String) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let seen = peak.clone();
        let task = tokio::spawn(async move {
            // Bounded: the run ends in minutes; this stops at the latest after an hour.
            for _ in 0..(3600 * 20) {
                if let Ok(rss) = status_kib(&pid, "VmRSS:") {
                    seen.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self { peak, task }
    }

    fn take_peak(&self) -> u64 {
        self.peak.swap(0, Ordering::Relaxed)
    }
}

/// Answers counted by kind.
#[derive(Default, Debug)]
struct Outcomes {
    ok: usize,
    limited: usize,
    server_error: usize,
    other_status: usize,
    connection_error: usize,
}

impl Outcomes {
    fn json(&self) -> Value {
        json!({
            "ok": self.ok, "429": self.limited, "5xx": self.server_error,
            "other_status": self.other_status, "connection_errors": self.connection_error,
        })
    }
}

pub async fn run(http: &reqwest::Client, base: &str, run: &str, pid: &str) -> anyhow::Result<()> {
    let start_kib = status_kib(pid, "VmRSS:")?;
    let sampler = Sampler::start(pid.to_owned());
    let mut phases = serde_json::Map::new();
    let mut record = |name: &str, took: Duration, extra: Value| -> anyhow::Result<()> {
        let mut v = json!({
            "seconds": (took.as_secs_f64() * 100.0).round() / 100.0,
            "peak_rss_mib": mib(sampler.take_peak()),
            "rss_after_mib": mib(status_kib(pid, "VmRSS:")?),
        });
        if let (Some(obj), Value::Object(more)) = (v.as_object_mut(), extra) {
            obj.extend(more);
        }
        phases.insert(name.to_owned(), v);
        Ok(())
    };

    // (1) Registration burst.
    let started = Instant::now();
    let results: Vec<anyhow::Result<Api>> = futures_util::stream::iter(0..USERS)
        .map(|i| async move { Api::register(http, base, &format!("{run}_m{i}")).await })
        .buffered(CONCURRENCY)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!("a registration failed: {e:#}");
    }
    let users: Vec<Api> = results.into_iter().filter_map(Result::ok).collect();
    record("register_200_at_16", started.elapsed(), json!({ "failed": failed }))?;

    // (2) Login burst: every user at once, each on its own connection.
    let burst = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
    let started = Instant::now();
    let mut logins = Vec::new();
    for i in 0..USERS {
        let (burst, url) = (burst.clone(), format!("{base}/_matrix/client/v3/login"));
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": format!("{run}_m{i}")},
            "password": PASSWORD,
        });
        logins.push(tokio::spawn(async move {
            burst.post(url).json(&body).timeout(Duration::from_secs(120)).send().await.map(|r| r.status())
        }));
    }
    let mut outcomes = Outcomes::default();
    for login in logins {
        match login.await? {
            Ok(s) if s.is_success() => outcomes.ok += 1,
            Ok(s) if s.as_u16() == 429 => outcomes.limited += 1,
            Ok(s) if s.is_server_error() => outcomes.server_error += 1,
            Ok(_) => outcomes.other_status += 1,
            Err(_) => outcomes.connection_error += 1,
        }
    }
    record("login_200_at_once", started.elapsed(), outcomes.json())?;

    // (3) Rooms, sends and syncs.
    let started = Instant::now();
    let mut rooms = Vec::new();
    for owner in users.iter().take(ROOMS) {
        rooms.push(owner.create_room(&[]).await?);
    }
    let joins: Vec<anyhow::Result<()>> = futures_util::stream::iter(users.iter().enumerate().skip(ROOMS))
        .map(|(i, u)| u.join(&rooms[i % ROOMS]))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    joins.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let sends: Vec<anyhow::Result<String>> = futures_util::stream::iter(0..SENDS)
        .map(|n| {
            let i = n % users.len().max(1);
            let (user, room) = (&users[i], &rooms[i % ROOMS]);
            async move { user.send(room, &format!("{run}m{n}"), "memory bench message").await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let failed_sends = sends.iter().filter(|r| r.is_err()).count();
    let syncs: Vec<anyhow::Result<()>> = futures_util::stream::iter(users.iter())
        .map(|u| async move {
            let first = u.sync(None, 0).await?;
            let since = first["next_batch"].as_str().unwrap_or_default().to_owned();
            u.sync(Some(&since), 0).await?;
            Ok(())
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let failed_syncs = syncs.iter().filter(|r| r.is_err()).count();
    record(
        "rooms_2000_sends_syncs",
        started.elapsed(),
        json!({ "failed_sends": failed_sends, "failed_syncs": failed_syncs }),
    )?;

    // (4) Idle: what the server gives back.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_10s = status_kib(pid, "VmRSS:")?;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let idle_30s = status_kib(pid, "VmRSS:")?;
    sampler.task.abort();

    let result = json!({
        "rss_start_mib": mib(start_kib),
        "phases": phases,
        "peak_rss_mib_vmhwm": mib(status_kib(pid, "VmHWM:")?),
        "idle_rss_mib_after_10s": mib(idle_10s),
        "idle_rss_mib_after_30s": mib(idle_30s),
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
