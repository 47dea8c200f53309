//! The admin API as synapse-admin sees it, compared with the reference: the same scenario on a
//! real Synapse 1.163.2 and on Hearth (accounts, a room with a report and media, registration
//! tokens, rate-limit overrides, quarantine, room deletion, errors), and every response's status
//! and JSON shape must match. Driven by `clients/admin_shapes_check.py`.

// The helpers below are test code too.
#![allow(clippy::unwrap_used)]

use hearth_conformance_tests::{
    SHARED_SECRET, TestServer,
    synapse::{Synapse, free_port},
};

#[tokio::test]
async fn hearths_admin_api_answers_with_synapses_shapes() {
    let synapse = Synapse::start(free_port("127.0.0.1"), &[]);
    let hearth = TestServer::start().await;
    let check = format!("{}/clients/admin_shapes_check.py", env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("HEARTH_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let out = tokio::process::Command::new(&python)
        .args([check.as_str(), &hearth.base_url, SHARED_SECRET, &synapse.url, &synapse.shared_secret()])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(!stdout.contains("DIFF"), "{stdout}");
}
