//! An off-the-shelf client library, matrix-nio (Python), against the real binary: register with
//! the dummy flow, log in, whoami, display name, list and delete devices, log out.

use std::process::Command;

use hearth_conformance_tests::binary::HearthProcess;

#[test]
fn matrix_nio_client_flows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let process = HearthProcess::spawn(&[], &[("HEARTH_STORAGE__PATH", db.to_str().unwrap())]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/clients/nio_check.py");
    let python = std::env::var("HEARTH_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let out = Command::new(&python)
        .args([script, "--homeserver", &process.base_url])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "nio_check.py failed (install it with `pip install -r conformance-tests/clients/requirements.txt`):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("6 passed, 0 failed"), "{stdout}");
}
