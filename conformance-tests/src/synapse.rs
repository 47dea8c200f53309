//! A real Synapse (the reference homeserver, from PyPI, with SQLite) on loopback, started by
//! `clients/start_synapse.sh` and killed when dropped. `scripts/test` installs it into
//! `/opt/synapse-venv`.

use std::process::Command;

/// A daemonized Synapse.
pub struct Synapse {
    dir: tempfile::TempDir,
    /// Its client API, e.g. `http://127.0.0.1:18501`.
    pub url: String,
}

impl Synapse {
    /// Starts one whose client API listens on `port` of 127.0.0.1, with `env` for the start
    /// script (`SERVER_NAME`, `FEDERATION_PORT`, ...).
    pub fn start(port: u16, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = format!("{}/clients/start_synapse.sh", env!("CARGO_MANIFEST_DIR"));
        let mut command = Command::new("bash");
        command.arg(&script).arg(port.to_string()).arg(dir.path());
        for (k, v) in env {
            command.env(k, v);
        }
        let started = command.output().expect("run start_synapse.sh");
        let synapse = Self { url: String::from_utf8_lossy(&started.stdout).trim().to_owned(), dir };
        assert!(
            started.status.success(),
            "Synapse did not start (scripts/test installs it into $SYNAPSE_VENV, by default /opt/synapse-venv):\n{}",
            String::from_utf8_lossy(&started.stderr)
        );
        synapse
    }

    /// Its `registration_shared_secret`, from the configuration it generated.
    pub fn shared_secret(&self) -> String {
        let config =
            std::fs::read_to_string(self.dir.path().join("homeserver.yaml")).expect("homeserver.yaml");
        config
            .lines()
            .find_map(|l| l.strip_prefix("registration_shared_secret:"))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .expect("a registration_shared_secret")
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("homeserver.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

/// A port of `ip` nobody listens on right now.
pub fn free_port(ip: &str) -> u16 {
    let probe = std::net::TcpListener::bind(format!("{ip}:0")).expect("bind a probe port");
    probe.local_addr().expect("its address").port()
}
