//! An off-the-shelf client library, matrix-nio (Python), against the real binary: register with
//! the dummy flow, log in, whoami, display name, list and delete devices, log out; and, with
//! its real crypto (vodozemac), two users exchanging end-to-end encrypted messages; and media:
//! uploads, authenticated downloads, thumbnails and an encrypted attachment; and server-side
//! search of what nio sent.

// The helper below is test code too.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use hearth_conformance_tests::binary::HearthProcess;

#[test]
fn matrix_nio_client_flows() {
    run_script("nio_check.py", "6 passed, 0 failed");
}

#[test]
fn matrix_nio_uploads_downloads_and_thumbnails_media() {
    run_script("nio_media_check.py", "4 passed, 0 failed");
}

#[test]
fn matrix_nio_searches_messages() {
    run_script("nio_search_check.py", "4 passed, 0 failed");
}

#[test]
fn matrix_nio_end_to_end_encryption() {
    run_script("nio_e2ee_check.py", "12 passed, 0 failed");
}

fn run_script(name: &str, expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let process = HearthProcess::spawn(&[], &[("HEARTH_STORAGE__PATH", db.to_str().unwrap())]);
    let script = format!("{}/clients/{name}", env!("CARGO_MANIFEST_DIR"));
    let python = std::env::var("HEARTH_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let out = Command::new(&python)
        .args([script.as_str(), "--homeserver", &process.base_url])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} failed (install matrix-nio with `pip install -r conformance-tests/clients/requirements.txt \
         -r conformance-tests/clients/requirements-e2ee.txt`):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(expected), "{stdout}");
}
