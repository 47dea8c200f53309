//! Hearth federating with the reference server: a real Synapse (from PyPI, on loopback, with
//! SQLite) and an in-process Hearth join each other's rooms and exchange messages both ways, over
//! TLS with certificate checks off (both certificates are self-signed), in rooms of the default
//! version and of versions 9 and 1, each created on either side. Driven by
//! `clients/synapse_federation_check.py` through both servers' client APIs.

// The helpers below are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{
    TestServer,
    synapse::{Synapse, free_port},
};

#[tokio::test]
async fn hearth_and_synapse_join_each_others_rooms_and_talk() {
    let (client_port, fed_port) = (free_port("127.0.0.1"), free_port("127.0.0.2"));
    let synapse_name = format!("127.0.0.2:{fed_port}");
    let synapse = Synapse::start(
        client_port,
        &[("SERVER_NAME", &synapse_name), ("FEDERATION_PORT", &fed_port.to_string())],
    );
    let synapse_url = synapse.url.clone();

    let hearth = TestServer::start_federating_by_address(|_| {}).await;
    let hearth_name = hearth.config.server_name.to_string();
    let check = format!("{}/clients/synapse_federation_check.py", env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("HEARTH_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let out = tokio::process::Command::new(&python)
        .args([check.as_str(), &hearth.base_url, &hearth_name, &synapse_url, &synapse_name])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("all federation checks passed"), "{stdout}");
    drop(synapse);
}
