//! Connection hygiene and shutdown: silent, trickling and stalled connections are closed,
//! a flood of idle sockets from one address leaves others served, and SIGTERM answers
//! long-polls and WebSockets, finishes in-flight requests and loses no acknowledged event.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use hearth_conformance_tests::{Client, TestServer, binary::HearthProcess};
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tokio_tungstenite::{connect_async, tungstenite::Message};

const V3: &str = "/_matrix/client/v3";
/// Upper bound on any wait here: a connection still open after it has hung.
const HANG: Duration = Duration::from_secs(20);

async fn quick_server() -> TestServer {
    TestServer::start_with(|config| {
        config.connections.header_timeout_secs = 2;
        config.connections.body_idle_timeout_secs = 2;
    })
    .await
}

/// Reads until the server closes the connection; returns what it sent. Fails if it never does.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(HANG, stream.read(&mut buf))
            .await
            .expect("the server closed the connection")
        {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&seen).into_owned(),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_partial_request_line_is_closed_after_the_header_timeout() {
    let server = quick_server().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET /_matrix/cli").await.unwrap();
    read_until_closed(&mut stream).await;
}

#[tokio::test]
async fn blank_lines_alone_are_closed_after_the_header_timeout() {
    let server = quick_server().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"\r\n\r\n\r\n").await.unwrap();
    read_until_closed(&mut stream).await;
}

#[tokio::test]
async fn a_connection_that_never_speaks_is_closed() {
    let server = quick_server().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    read_until_closed(&mut stream).await;
}

#[tokio::test]
async fn headers_trickled_a_byte_at_a_time_are_cut_off() {
    let server = quick_server().await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    // One header byte every 300 ms would never finish; the header timeout ends it.
    let mut closed = false;
    for _ in 0..100 {
        if stream.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a trickling connection stayed open for 30 s");
}

#[tokio::test]
async fn a_body_shorter_than_its_length_is_abandoned() {
    let server = quick_server().await;
    let alice = Client::register(&server.base_url, "stall", "pw").await;
    let token = alice.access_token.clone().unwrap();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "PUT {V3}/user/@stall:localhost/account_data/org.example HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{}}"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(!answer.contains(" 200 "), "a truncated body was accepted: {answer}");
    assert!(!answer.contains(" 500 "), "a stalled body answered 500: {answer}");
    // The server itself is fine.
    alice.get(&format!("{V3}/account/whoami")).await.assert_ok();
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    let big = "a".repeat(70 * 1024);
    let reply =
        client.get(format!("{}/_matrix/client/versions", server.base_url)).header("x-junk", big).send().await;
    // Either a 431 or the connection is closed; never a 2xx or a 5xx.
    if let Ok(reply) = reply {
        assert_eq!(reply.status().as_u16(), 431);
    }
    let mut many = client.get(format!("{}/_matrix/client/versions", server.base_url));
    for i in 0..200 {
        many = many.header(format!("x-h{i}"), "v");
    }
    if let Ok(reply) = many.send().await {
        assert_eq!(reply.status().as_u16(), 431);
    }
}

/// A client socket from a chosen loopback address.
async fn connect_from(ip: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((ip, 0)))?;
    socket.connect(to).await
}

/// Opens `count` idle sockets from 127.0.0.1 and checks that requests from 127.0.0.2 are still
/// answered and that the sockets over the per-address cap were refused.
async fn flood_and_check(addr: SocketAddr, count: usize, per_ip: usize) {
    let mut idle = Vec::new();
    for _ in 0..count {
        match connect_from([127, 0, 0, 1], addr).await {
            Ok(stream) => idle.push(stream),
            // The test process's own descriptors ran out: enough sockets are open.
            Err(_) => break,
        }
    }
    assert!(idle.len() > per_ip, "only {} sockets could be opened", idle.len());
    // The ones past the cap are told so and closed.
    let mut last = idle.pop().unwrap();
    let refusal = read_until_closed(&mut last).await;
    assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal}");
    assert!(refusal.contains("M_LIMIT_EXCEEDED"), "{refusal}");
    // Someone else is served normally, repeatedly, while the flood stays open.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for _ in 0..20 {
        let reply =
            tokio::time::timeout(HANG, other.get(format!("http://{addr}/_matrix/client/versions")).send())
                .await
                .expect("answered in time")
                .expect("answered");
        assert_eq!(reply.status().as_u16(), 200);
    }
    drop(idle);
}

#[tokio::test]
async fn a_thousand_idle_sockets_from_one_address_leave_others_served() {
    let server = TestServer::start_with(|config| {
        config.connections.max_connections_per_ip = 100;
        config.connections.uncapped_addresses = Vec::new();
    })
    .await;
    flood_and_check(server.addr, 1000, 100).await;
}

#[tokio::test]
async fn an_idle_socket_flood_against_a_low_fd_limit_leaves_others_served() {
    // The binary under `ulimit -n 256`: the connection cap must shrink to fit, or accept()
    // would fail for everyone once the flood has taken the descriptors.
    hearth::raise_nofile_limit(); // this test process opens the 1,000 sockets
    let bin = hearth_conformance_tests::binary::hearth_bin();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -n 256 && exec \"$0\"", bin.to_str().unwrap()])
        .env("HEARTH_STORAGE__PATH", dir.path().join("db"))
        .env("HEARTH_CONNECTIONS__MAX_CONNECTIONS_PER_IP", "64")
        .env("HEARTH_CONNECTIONS__UNCAPPED_ADDRESSES", "[]");
    let process = HearthProcess::spawn_command(cmd);
    let addr: SocketAddr = process.base_url.trim_start_matches("http://").parse().unwrap();
    flood_and_check(addr, 1000, 64).await;
    let status = process.terminate();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn sigterm_answers_long_polls_and_websockets_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("HEARTH_STORAGE__PATH", dir.path().join("db").to_str().unwrap().to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let process = HearthProcess::spawn(&[], &env);
    let alice = Client::register(&process.base_url, "poller", "pw").await;
    let since = alice.since_now().await;

    // A long-poll of a minute, and an open WebSocket.
    let poll = {
        let alice = alice.clone();
        tokio::spawn(async move { alice.get(&format!("{V3}/sync?since={since}&timeout=60000")).await })
    };
    let ticket = alice.post("/_matrix/client/unstable/io.hearth/ws_ticket", json!({})).await;
    let ticket = ticket.assert_ok()["ticket"].as_str().unwrap().to_owned();
    let ws_url = format!("{}/ws?ticket={ticket}", process.base_url.replace("http://", "ws://"));
    let (mut socket, _) = connect_async(ws_url).await.expect("upgrade");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let status = tokio::task::spawn_blocking(move || process.terminate()).await.unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    let polled = tokio::time::timeout(HANG, poll).await.expect("long-poll answered").unwrap();
    assert_eq!(polled.status.as_u16(), 200, "{:?}", polled.body);
    let mut close_code = None;
    while let Some(Ok(message)) = tokio::time::timeout(HANG, socket.next()).await.expect("socket ended") {
        if let Message::Close(frame) = message {
            close_code = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(close_code, Some(1001));
}

#[tokio::test]
async fn sigterm_under_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let env = [("HEARTH_STORAGE__PATH", db.to_str().unwrap())];
    let process = HearthProcess::spawn(&[], &env);
    let alice = Client::register(&process.base_url, "loader", "pw").await;
    let room = alice.create_room(json!({})).await;

    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut senders = Vec::new();
    for worker in 0..4 {
        let (alice, room, acked) = (alice.clone(), room.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            let mut server_errors = 0;
            for i in 0..400 {
                let path = format!("{V3}/rooms/{room}/send/m.room.message/w{worker}-{i}");
                let body = json!({"msgtype": "m.text", "body": format!("{worker}-{i}")});
                // Refused or closed by the shutdown: not acknowledged, fine.
                let Some((status, id)) = alice.try_put_event(&path, &body).await else { break };
                if let Some(id) = id {
                    acked.lock().unwrap().push(id);
                } else if status >= 500 {
                    server_errors += 1;
                }
            }
            server_errors
        }));
    }
    // Let load build up, then stop the server in the middle of it.
    while acked.lock().unwrap().len() < 100 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = tokio::task::spawn_blocking(move || process.terminate()).await.unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status:?}");
    for sender in senders {
        assert_eq!(sender.await.unwrap(), 0, "a send answered 5xx during shutdown");
    }

    let process = HearthProcess::spawn(&[], &env);
    let alice = Client { base_url: process.base_url.clone(), ..alice };
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 100);
    for event_id in &acked {
        alice.get(&format!("{V3}/rooms/{room}/event/{event_id}")).await.assert_ok();
    }
}
