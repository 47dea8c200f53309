//! Bridges built on the frameworks real bridges use, registered from the YAML they generate
//! themselves: mautrix-python (`clients/appservice/mautrix_bridge.py`) and the npm
//! `matrix-appservice` HTTP layer under matrix-appservice-bridge (`clients/js/appservice_bot.mjs`).
//! Each small echo bridge is invited into a room, joins, sees a message, makes a ghost user of
//! its namespace that takes a display name, joins and replies; gets typing and a read receipt;
//! then is stopped, misses messages while Hearth also restarts, and gets each of them once, in
//! order, when it comes back.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use hearth_conformance_tests::{Client, TestServer};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

const V3: &str = "/_matrix/client/v3";

/// How a bridge program is started.
struct Framework {
    program: String,
    script: String,
    dir: String,
    prefix: &'static str,
}

fn mautrix() -> Framework {
    Framework {
        program: std::env::var("HEARTH_PYTHON").unwrap_or_else(|_| "python3".to_owned()),
        script: concat!(env!("CARGO_MANIFEST_DIR"), "/clients/appservice/mautrix_bridge.py").to_owned(),
        dir: concat!(env!("CARGO_MANIFEST_DIR"), "/clients/appservice").to_owned(),
        prefix: "mau",
    }
}

fn matrix_appservice() -> Framework {
    Framework {
        program: "node".to_owned(),
        script: "appservice_bot.mjs".to_owned(),
        dir: concat!(env!("CARGO_MANIFEST_DIR"), "/clients/js").to_owned(),
        prefix: "jsb",
    }
}

/// A running bridge and every JSON line it printed.
struct Bridge {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Bridge {
    fn start(framework: &Framework, registration: &str, homeserver: &str, port: u16) -> Self {
        let mut child = tokio::process::Command::new(&framework.program)
            .current_dir(&framework.dir)
            .args([
                framework.script.as_str(),
                "run",
                registration,
                homeserver,
                "localhost",
                &port.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", framework.program));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap().push(value);
                }
            }
        });
        Self { child, lines }
    }

    fn lines(&self) -> Vec<Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits (bounded) for a line `found` accepts, and returns it.
    async fn wait_for(&self, what: &str, found: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..600 {
            if let Some(line) = self.lines().into_iter().find(&found) {
                return line;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the bridge never printed {what}; it printed:\n{:#?}", self.lines());
    }

    /// The bodies of the messages it was sent, in order.
    fn bodies(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter(|l| l["event"]["type"] == "m.room.message")
            .filter_map(|l| l["event"]["body"].as_str().map(str::to_owned))
            .collect()
    }

    /// Stops it, after checking that nothing it did failed.
    async fn stop(mut self) {
        let _ = self.child.kill().await;
        let errors: Vec<Value> = self.lines().into_iter().filter(|l| l.get("error").is_some()).collect();
        assert!(errors.is_empty(), "the bridge reported failures: {errors:#?}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn bridge_scenario(framework: Framework) {
    let dir = tempfile::tempdir().unwrap();
    let registration = dir.path().join("registration.yaml");
    let registration = registration.to_str().unwrap();
    let port = free_port();
    // The bridge writes its own registration, as real bridges do.
    let generated = std::process::Command::new(&framework.program)
        .current_dir(&framework.dir)
        .args([
            framework.script.as_str(),
            "register",
            registration,
            &format!("http://127.0.0.1:{port}"),
            "localhost",
            framework.prefix,
        ])
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "generating the registration failed (pip install -r / npm ci in conformance-tests/clients):\n{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    let file = registration.to_owned();
    let server = TestServer::start_with(move |c| {
        c.storage.sync_writes = false;
        c.appservice.registration_files = vec![file.into()];
    })
    .await;
    let bridge = Bridge::start(&framework, registration, &server.base_url, port);
    bridge.wait_for("ready", |l| l["ready"] == true).await;

    let alice = Client::register(&server.base_url, "alice", "pw").await;
    let room = alice.create_room(json!({"preset": "public_chat"})).await;
    let bot = format!("@{}bot:localhost", framework.prefix);
    alice.post(&format!("{V3}/rooms/{room}/invite"), json!({"user_id": bot})).await.assert_ok();
    bridge.wait_for("its join", |l| l["joined"] == room.as_str()).await;

    // A message is echoed by a ghost of the namespace, as a reply, under its display name.
    let hello = alice.send_text(&room, "h", "hello bridge").await;
    let replied = bridge.wait_for("the reply", |l| l["replied"]["in_reply_to"] == hello.as_str()).await;
    let ghost = format!("@{}_alice:localhost", framework.prefix);
    assert_eq!(replied["replied"]["ghost"], ghost.as_str());
    alice.wait_for_bodies(&room, &["echo: hello bridge"]).await;
    let name = alice.get(&format!("{V3}/profile/{ghost}/displayname")).await;
    assert_eq!(name.assert_ok()["displayname"], "alice (bridged)");

    // Typing and a read receipt reach it (its registration asks for ephemeral events).
    alice
        .put(&format!("{V3}/rooms/{room}/typing/@alice:localhost"), json!({"typing": true, "timeout": 30000}))
        .await
        .assert_ok();
    let reply_id = replied["replied"]["event_id"].as_str().unwrap().to_owned();
    alice.post(&format!("{V3}/rooms/{room}/receipt/m.read/{reply_id}"), json!({})).await.assert_ok();
    bridge
        .wait_for("typing", |l| {
            l["ephemeral"]["type"] == "m.typing"
                && l["ephemeral"]["content"]["user_ids"] == json!(["@alice:localhost"])
        })
        .await;
    bridge
        .wait_for("the receipt", |l| {
            l["ephemeral"]["type"] == "m.receipt"
                && l["ephemeral"]["content"][&reply_id]["m.read"]["@alice:localhost"].is_object()
        })
        .await;
    assert_eq!(bridge.bodies(), ["hello bridge", "echo: hello bridge"]);

    // Down for a while, with Hearth restarting in between: it gets what it missed, each once.
    bridge.stop().await;
    for i in 0..2 {
        alice.send_text(&room, &format!("m{i}"), &format!("missed {i}")).await;
    }
    let server = server.restart().await;
    let alice = Client::login(&server.base_url, "alice", "pw").await;
    alice.send_text(&room, "m2", "missed 2").await;
    let bridge = Bridge::start(&framework, registration, &server.base_url, port);
    for i in 0..3 {
        let wanted = format!("echo: missed {i}");
        bridge.wait_for(&wanted, |l| l["event"]["body"] == wanted.as_str()).await;
    }
    let missed: Vec<String> = bridge.bodies().into_iter().filter(|b| b.starts_with("missed")).collect();
    assert_eq!(missed, ["missed 0", "missed 1", "missed 2"], "in order, each once");
    alice.wait_for_bodies(&room, &["echo: missed 0", "echo: missed 1", "echo: missed 2"]).await;
    bridge.stop().await;
}

#[tokio::test]
async fn a_mautrix_python_bridge_bridges_and_catches_up() {
    bridge_scenario(mautrix()).await;
}

#[tokio::test]
async fn a_matrix_appservice_bot_bridges_and_catches_up() {
    bridge_scenario(matrix_appservice()).await;
}
