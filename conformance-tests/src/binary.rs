//! The built `hearth` binary as a child process, for what only a real process shows: start-up
//! from a config file, signals, `kill -9`.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// Path of the `hearth` binary next to this test executable (`target/<profile>/hearth`), or
/// `HEARTH_BIN`. The test command builds it before running tests.
pub fn hearth_bin() -> PathBuf {
    if let Ok(path) = std::env::var("HEARTH_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>/hearth
    let profile_dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    let bin = profile_dir.join("hearth");
    assert!(
        bin.is_file(),
        "{} not found: build it first (`cargo build --workspace`), or set HEARTH_BIN",
        bin.display()
    );
    bin
}

pub struct HearthProcess {
    pub child: Child,
    pub base_url: String,
    pub output: mpsc::Receiver<String>,
}

impl HearthProcess {
    /// Starts the binary with `args` and extra environment, on port 0, and waits until it logs
    /// the address it serves on.
    pub fn spawn(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(hearth_bin());
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn_command(cmd)
    }

    /// Like [`Self::spawn`], with a command of the caller's (a wrapper that sets limits first,
    /// say) that ends up running the binary.
    pub fn spawn_command(mut cmd: Command) -> Self {
        let set: Vec<_> = cmd.get_envs().map(|(k, _)| k.to_owned()).collect();
        // Rate limits are off unless a test is about them: tests act faster than people.
        let defaults = [
            ("HEARTH_LISTEN__CLIENT", "127.0.0.1:0"),
            ("HEARTH_LOG__FORMAT", "json"),
            ("HEARTH_RATE_LIMITS__ENABLED", "false"),
        ];
        for (k, v) in defaults {
            if !set.iter().any(|s| s == k) {
                cmd.env(k, v);
            }
        }
        // A process given a data directory and no backend of its own follows the suite's.
        let data_dir: Option<PathBuf> = cmd
            .get_envs()
            .find(|(k, _)| *k == "HEARTH_STORAGE__PATH")
            .and_then(|(_, v)| v)
            .map(PathBuf::from);
        if let Some(dir) = data_dir.filter(|_| !set.iter().any(|s| s == "HEARTH_STORAGE__BACKEND")) {
            for (k, v) in crate::backend::process_env(&dir) {
                cmd.env(k, v);
            }
        }
        cmd.env_remove("RUST_LOG").stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn hearth");
        let (tx, rx) = mpsc::channel();
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    if let Some(addr) = listen_addr(&line) {
                        return Self { child, base_url: format!("http://{addr}"), output: rx };
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("hearth did not report its address; output:\n{}", seen.join("\n"));
                }
            }
        }
    }

    /// Sends SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("hearth did not exit within 10 s of SIGTERM");
    }
}

impl Drop for HearthProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in the start-up log line (JSON log format).
fn listen_addr(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if fields.get("message")?.as_str()? != "Hearth is serving the client API" {
        return None;
    }
    fields.get("listen")?.as_str().map(ToOwned::to_owned)
}

/// Runs the binary to completion with `args` and returns (exit code, stdout).
pub fn run_to_end(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(hearth_bin()).args(args).output().expect("run hearth");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
