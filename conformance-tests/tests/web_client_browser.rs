//! The web client (web/) in real headless Chromium against the real binary, which serves it at
//! `/`: two people register, chat live both ways, react, share images and a file (picked,
//! pasted, dropped, downloaded), lose the WebSocket and get what was sent meanwhile once and in
//! order, change a profile, scroll back through history, turn a room's notifications off; a
//! third person without WebSockets long-polls, changes the password, signs out and back in;
//! every screen is checked with axe-core and at 360 px, in English and Vietnamese,
//! with no browser console error. The steps are in `web/e2e/chat.mjs`; screenshots of each
//! screen go to `<target>/web-screenshots`.

// The helper below is test code too.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use hearth_conformance_tests::binary::{HearthProcess, hearth_bin};

#[test]
fn two_people_chat_live_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    // The default limits, as `cargo run` has them, but for messages: the test sends a long
    // history faster than people type.
    let process = HearthProcess::spawn(
        &[],
        &[
            ("HEARTH_STORAGE__PATH", db.to_str().unwrap()),
            ("HEARTH_RATE_LIMITS__ENABLED", "true"),
            ("HEARTH_RATE_LIMITS__MESSAGE__BURST_COUNT", "1000"),
        ],
    );
    let web = concat!(env!("CARGO_MANIFEST_DIR"), "/../web");
    // target/<profile>/hearth -> target/web-screenshots, kept after the run as CI's artifacts.
    let screenshots = hearth_bin().parent().and_then(|p| p.parent()).unwrap().join("web-screenshots");
    let out = Command::new("node")
        .current_dir(web)
        .args(["e2e/chat.mjs", "--homeserver", &process.base_url, "--screenshots"])
        .arg(&screenshots)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "web/e2e/chat.mjs failed (run `npm ci` in web/ and install chromium first):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
