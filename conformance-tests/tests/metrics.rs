//! `/metrics` on its own listener (OpenMetrics text, which Prometheus scrapes), parsed by
//! Prometheus's own Python client, and `/health`.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeMap, io::Write, process::Stdio};

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};

const V3: &str = "/_matrix/client/v3";

/// Every sample of a scrape, as the reference parser reads it: name -> [(labels, value)].
fn parse(text: &str) -> BTreeMap<String, Vec<(Value, f64)>> {
    let script = format!("{}/clients/metrics_check.py", env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("HEARTH_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the scrape is not valid Prometheus text (pip install -r conformance-tests/clients/requirements.txt): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut samples: BTreeMap<String, Vec<(Value, f64)>> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let sample: Value = serde_json::from_str(line).unwrap();
        let name = sample["name"].as_str().unwrap().to_owned();
        samples.entry(name).or_default().push((sample["labels"].clone(), sample["value"].as_f64().unwrap()));
    }
    samples
}

fn value(samples: &BTreeMap<String, Vec<(Value, f64)>>, name: &str, labels: &Value) -> Option<f64> {
    let all = samples.get(name)?;
    all.iter().find(|(l, _)| labels.as_object().unwrap().iter().all(|(k, v)| &l[k] == v)).map(|(_, v)| *v)
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text_with_the_series_operators_need() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = probe.local_addr().unwrap();
    drop(probe);
    let server = TestServer::start_with(|c| c.listen.metrics = Some(metrics_addr)).await;
    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({})).await;
    for i in 0..3 {
        alice.send_text(&room, &format!("t{i}"), "counted").await;
    }
    alice.get(&format!("{V3}/rooms/!nowhere:localhost/messages?dir=b")).await;
    // A long-poll in flight while the scrape runs.
    let since = alice.since_now().await;
    let poller = alice.clone();
    let poll =
        tokio::spawn(async move { poller.get(&format!("{V3}/sync?timeout=3000&since={since}")).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let http = reqwest::Client::new();
    let scrape = http.get(format!("http://{metrics_addr}/metrics")).send().await.unwrap();
    assert_eq!(scrape.status(), 200);
    assert!(scrape.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let samples = parse(&scrape.text().await.unwrap());

    let send = json!({"method": "PUT", "endpoint": "/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}", "status": "200"});
    assert_eq!(
        value(&samples, "hearth_http_requests_total", &send),
        Some(3.0),
        "{:?}",
        samples.get("hearth_http_requests_total")
    );
    let forbidden = json!({"endpoint": "/_matrix/client/v3/rooms/{room_id}/messages", "status": "403"});
    assert_eq!(value(&samples, "hearth_http_requests_total", &forbidden), Some(1.0));
    let latency =
        json!({"method": "PUT", "endpoint": "/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}"});
    assert_eq!(value(&samples, "hearth_http_request_duration_seconds_count", &latency), Some(3.0));
    let all = json!({"method": "PUT", "endpoint": "/_matrix/client/v3/rooms/{room_id}/send/{event_type}/{txn_id}", "le": "+Inf"});
    assert_eq!(value(&samples, "hearth_http_request_duration_seconds_bucket", &all), Some(3.0));
    assert_eq!(value(&samples, "hearth_sync_long_polls", &json!({})), Some(1.0));
    assert_eq!(value(&samples, "hearth_websockets", &json!({})), Some(0.0));
    assert!(
        value(&samples, "hearth_events_persisted_total", &json!({})).unwrap() >= 9.0,
        "room creation and 3 messages"
    );
    assert_eq!(value(&samples, "hearth_push_queue_items", &json!({})), Some(0.0));
    // The engine's own series, when the suite runs on RocksDB (PostgreSQL has its own tools).
    if hearth_conformance_tests::backend::postgres().is_none() {
        assert!(value(&samples, "hearth_rocksdb_block_cache_capacity_bytes", &json!({})).unwrap() > 0.0);
        for name in [
            "hearth_rocksdb_sst_files_bytes",
            "hearth_rocksdb_pending_compaction_bytes",
            "hearth_rocksdb_block_cache_hits",
            "hearth_rocksdb_block_cache_misses",
        ] {
            assert!(samples.contains_key(name), "{name}");
        }
    }
    assert!(value(&samples, "hearth_process_resident_memory_bytes", &json!({})).unwrap() > 1_000_000.0);
    assert!(samples.contains_key("hearth_process_cpu_seconds_total"));
    poll.abort();

    // The client listener has no /metrics, and answers /health.
    server.client().get("/metrics").await.assert_error(404, "M_UNRECOGNIZED");
    let health = http.get(format!("{}/health", server.base_url)).send().await.unwrap();
    assert_eq!((health.status().as_u16(), health.text().await.unwrap()), (200, "OK".to_owned()));
}
