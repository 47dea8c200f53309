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

use hearth_conformance_tests::{
    TestServer,
    binary::{HearthProcess, hearth_bin},
    idp::{StandIn, own_baseurl},
};
use serde_json::json;

const WEB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../web");

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
    // target/<profile>/hearth -> target/web-screenshots, kept after the run as CI's artifacts.
    let screenshots = hearth_bin().parent().and_then(|p| p.parent()).unwrap().join("web-screenshots");
    let out = Command::new("node")
        .current_dir(WEB)
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

/// The sign-in screen's provider button, through a stand-in GitHub and back: the app is signed
/// in as the account the provider's user maps to, with no page in between asking whether to
/// trust the application (the server's own client is on the SSO allowlist).
#[tokio::test(flavor = "multi_thread")]
async fn single_sign_on_from_the_sign_in_screen_in_chromium() {
    let github = StandIn::github("hearth-web").await;
    github.sign_in_as(
        json!({"id": 583231, "login": "octo", "name": "The Octocat", "email": "octo@github.example"}),
    );
    let server = TestServer::start_at(|config, addr| {
        own_baseurl(config, addr);
        config.sso.providers = vec![github.provider_config("github")];
    })
    .await;
    let base_url = server.base_url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .current_dir(WEB)
            .args([
                "e2e/sso.mjs",
                "--homeserver",
                &base_url,
                "--provider",
                "github",
                "--user-id",
                "@octo:localhost",
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run node: {e}"))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("sso passed"),
        "web/e2e/sso.mjs failed:\n{stdout}\n{stderr}"
    );
}
