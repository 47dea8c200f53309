//! What survives: a graceful restart, `kill -9`, and start-up from the example config.

use hearth_conformance_tests::{
    Client, TestServer,
    binary::{HearthProcess, run_to_end},
};
use serde_json::json;

#[tokio::test]
async fn accounts_devices_and_tokens_survive_a_restart() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "keeper", "pw").await;
    alice
        .put("/_matrix/client/v3/profile/@keeper:localhost/displayname", json!({"displayname": "Kept"}))
        .await
        .assert_ok();
    let server = server.restart().await;
    let alice = Client { base_url: server.base_url.clone(), ..alice };
    let who = alice.get("/_matrix/client/v3/account/whoami").await;
    assert_eq!(who.assert_ok()["user_id"], json!("@keeper:localhost"));
    assert_eq!(
        alice.get("/_matrix/client/v3/devices").await.assert_ok()["devices"].as_array().unwrap().len(),
        1
    );
    assert_eq!(
        alice.get("/_matrix/client/v3/profile/@keeper:localhost/displayname").await.assert_ok()["displayname"],
        json!("Kept")
    );
    Client::login(&server.base_url, "keeper", "pw").await;
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let env = [("HEARTH_STORAGE__PATH", db.to_str().unwrap())];
    let process = HearthProcess::spawn(&[], &env);
    let alice = Client::register(&process.base_url, "survivor", "pw").await;
    let phone = Client::login(&process.base_url, "survivor", "pw").await;
    alice
        .put("/_matrix/client/v3/user/@survivor:localhost/account_data/org.example.k", json!({"v": 1}))
        .await
        .assert_ok();
    process.kill9();

    let process = HearthProcess::spawn(&[], &env);
    let alice = Client { base_url: process.base_url.clone(), ..alice };
    let phone = Client { base_url: process.base_url.clone(), ..phone };
    alice.get("/_matrix/client/v3/account/whoami").await.assert_ok();
    phone.get("/_matrix/client/v3/account/whoami").await.assert_ok();
    let devices = alice.get("/_matrix/client/v3/devices").await;
    assert_eq!(devices.assert_ok()["devices"].as_array().unwrap().len(), 2);
    let data = alice.get("/_matrix/client/v3/user/@survivor:localhost/account_data/org.example.k").await;
    assert_eq!(data.assert_ok(), &json!({"v": 1}));
    Client::login(&process.base_url, "survivor", "pw").await;
}

#[tokio::test]
async fn binary_starts_from_the_example_config_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../config.toml.example");
    let db = dir.path().join("db");
    // The example's own engine, RocksDB, whatever the suite runs on: its files are checked.
    let env = [("HEARTH_STORAGE__PATH", db.to_str().unwrap()), ("HEARTH_STORAGE__BACKEND", "rocksdb")];
    let process = HearthProcess::spawn(&["--config", example], &env);
    let alice = Client::register(&process.base_url, "example", "pw").await;
    assert_eq!(alice.user_id(), "@example:localhost");
    let status = process.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    // The signing key was generated on first start and persisted with the data.
    assert!(db.join("CURRENT").is_file());
}

#[test]
fn version_help_and_bad_config() {
    let (code, out, _) = run_to_end(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("hearth "), "{out}");
    let (code, out, _) = run_to_end(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--config"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[storage]\nno_such_key = 1\n").unwrap();
    let (code, _, err) = run_to_end(&["--config", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("no_such_key"), "{err}");
}

#[tokio::test]
async fn kill_9_under_concurrent_load_loses_no_acknowledged_event() {
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let env = [("HEARTH_STORAGE__PATH", db.to_str().unwrap())];
    let process = HearthProcess::spawn(&[], &env);
    let alice = Client::register(&process.base_url, "loader", "pw").await;
    let room = alice.create_room(json!({})).await;

    // Messages and state events from several writers at once; each is recorded only
    // once the server has answered 200.
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut writers = Vec::new();
    for worker in 0..6 {
        let (alice, room, acked) = (alice.clone(), room.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..500 {
                let (path, body) = match worker % 3 {
                    0 | 1 => (
                        format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/w{worker}-{i}"),
                        json!({"msgtype": "m.text", "body": format!("{worker}-{i}")}),
                    ),
                    _ => (
                        format!("/_matrix/client/v3/rooms/{room}/state/org.example.k/w{worker}-{i}"),
                        json!({"i": i}),
                    ),
                };
                let Some((status, id)) = alice.try_put_event(&path, &body).await else { break };
                let Some(id) = id else { continue };
                assert_eq!(status, 200);
                acked.lock().unwrap().push((worker, i, id));
            }
        }));
    }
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    process.kill9();
    for writer in writers {
        writer.await.unwrap();
    }

    let process = HearthProcess::spawn(&[], &env);
    let alice = Client { base_url: process.base_url.clone(), ..alice };
    let acked = acked.lock().unwrap().clone();
    for (worker, i, event_id) in &acked {
        let event = alice.get(&format!("/_matrix/client/v3/rooms/{room}/event/{event_id}")).await;
        let event = event.assert_ok();
        if worker % 3 == 2 {
            assert_eq!(event["content"], json!({"i": i}));
            let path = format!("/_matrix/client/v3/rooms/{room}/state/org.example.k/w{worker}-{i}");
            assert_eq!(alice.get(&path).await.assert_ok(), &json!({"i": i}), "state after kill -9");
        } else {
            assert_eq!(event["content"]["body"], json!(format!("{worker}-{i}")));
        }
    }
    // The server that came back takes writes as before.
    alice.send_text(&room, "after", "after the crash").await;
}
