//! Element's own SDK, matrix-js-sdk (Node), runs Element's start-up sequence against the real
//! binary: versions and auth discovery, register and log in, Rust crypto, first sync, profile,
//! TURN, devices, cross-signing bootstrap, an encrypted room, and a message decrypted by the
//! other user. Any request Element would not expect to fail fails the test.

// The helper below is test code too.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use hearth_conformance_tests::binary::HearthProcess;

/// Runs one of the Node checks in `clients/js` against a fresh binary; returns its output.
fn run_js(script: &str) -> String {
    run_js_with(script, "")
}

/// [`run_js`] against a binary started with `config` (TOML) as its config file.
fn run_js_with(script: &str, config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let config_file = dir.path().join("hearth.toml");
    std::fs::write(&config_file, config).unwrap();
    let process = HearthProcess::spawn(
        &[],
        &[("HEARTH_STORAGE__PATH", db.to_str().unwrap()), ("HEARTH_CONFIG", config_file.to_str().unwrap())],
    );
    let js = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/js");
    let out = Command::new("node")
        .current_dir(js)
        .args([script, "--homeserver", &process.base_url])
        .output()
        .unwrap_or_else(|e| panic!("cannot run node: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed (run `npm ci` in conformance-tests/clients/js first):\n{stdout}\n{stderr}"
    );
    stdout
}

#[test]
fn element_startup_with_matrix_js_sdk() {
    let stdout = run_js("element_startup.mjs");
    assert!(stdout.contains("17 passed, 0 failed"), "{stdout}");
}

/// The room and thread badges Element shows come from the server's counts: read through
/// matrix-js-sdk after messages, a mention, a read receipt and a thread reply.
#[test]
fn unread_counts_with_matrix_js_sdk() {
    let stdout = run_js("unread_counts.mjs");
    assert!(stdout.contains("6 passed, 0 failed"), "{stdout}");
}

/// A reaction, an edit and a thread reply made with matrix-js-sdk, as another user's client
/// shows them after its first sync: the edit applied, the reaction counted, the thread known.
#[test]
fn reactions_edits_and_threads_with_matrix_js_sdk() {
    let stdout = run_js("relations.mjs");
    assert!(stdout.contains("6 passed, 0 failed"), "{stdout}");
}

/// Search as Element runs it through matrix-js-sdk: newest first with context and profiles,
/// paged back to the last match, nothing for a non-member.
#[test]
fn search_with_matrix_js_sdk() {
    let stdout = run_js("search.mjs");
    assert!(stdout.contains("7 passed, 0 failed"), "{stdout}");
}

/// A call joined through matrix-js-sdk's MatrixRTC session: the LiveKit transport discovered
/// as Element Call does, the member kept in the call by restarting its delayed leave, and taken
/// out by the server once the client goes silent, as the other member's synced state shows.
#[test]
fn a_silent_call_member_is_removed_with_matrix_js_sdk() {
    let config = "[calls]\nrtc_transports = [{ type = \"livekit\", livekit_service_url = \"https://livekit-jwt.invalid\" }]\n";
    let stdout = run_js_with("matrixrtc.mjs", config);
    assert!(stdout.contains("8 passed, 0 failed"), "{stdout}");
}
