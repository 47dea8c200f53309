//! `hearth admin` against the real binary: the first admin made offline on a stopped server,
//! then users, rooms, registration tokens and media handled through a running server's admin
//! API, with clear messages and exit codes when something is wrong.

// Helpers in this file are test code too.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use hearth_conformance_tests::{Client, binary::HearthProcess, binary::hearth_bin};
use serde_json::{Value, json};

struct Setup {
    dir: tempfile::TempDir,
    config: String,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("hearth.toml");
        let toml = format!(
            "server_name = \"localhost\"\n[storage]\npath = \"{}\"\n[rate_limits]\nenabled = false\n",
            dir.path().join("db").display()
        );
        std::fs::write(&config, toml).unwrap();
        Self { config: config.to_str().unwrap().to_owned(), dir }
    }

    fn file(&self, name: &str, content: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// Runs `hearth --config ... admin <args>`: exit code, stdout, stderr.
    fn admin(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(hearth_bin())
            .args(["--config", &self.config, "admin"])
            .args(args)
            .env_remove("HEARTH_ADMIN_TOKEN")
            .env_remove("HEARTH_ADMIN_URL")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[test]
fn help_and_usage_errors() {
    let setup = Setup::new();
    let (code, out, _) = setup.admin(&["--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("create-user") && out.contains("registration-token") && out.contains("--offline"),
        "{out}"
    );
    let (code, out, _) = setup.admin(&["create-user", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--password-file"), "{out}");
    let (code, _, err) = setup.admin(&["launch-rockets"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = setup.admin(&["list-users"]);
    assert_eq!(code, 1);
    assert!(err.contains("access token"), "{err}");
}

#[tokio::test]
async fn the_first_admin_is_made_offline_and_the_rest_done_through_the_api() {
    let setup = Setup::new();
    let password = setup.file("root.pw", "s3cret\n");

    // Offline, on a stopped server: the first admin and a registration token.
    let (code, out, err) =
        setup.admin(&["--offline", "create-user", "root", "--admin", "--password-file", &password]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "created @root:localhost (admin)");
    let (code, token_out, err) = setup.admin(&["--offline", "registration-token", "create", "--uses", "2"]);
    assert_eq!(code, 0, "{err}");
    let offline_token = token_out.trim().to_owned();
    assert_eq!(offline_token.len(), 16);
    let (code, out, _) = setup.admin(&["--offline", "list-users"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "@root:localhost\tadmin");

    // Online, through the running server's admin API.
    let process = HearthProcess::spawn(&["--config", &setup.config], &[]);
    let (code, _, err) = setup.admin(&["--offline", "list-users"]);
    assert_eq!(code, 1, "the database is in use");
    assert!(err.contains("stop the server first"), "{err}");

    let root = Client::login(&process.base_url, "root", "s3cret").await;
    let token = setup.file("root.token", root.access_token.as_deref().unwrap());
    let online = |args: &[&str]| {
        let mut all = vec!["--url", process.base_url.as_str(), "--token-file", token.as_str()];
        all.extend_from_slice(args);
        let (code, out, err) = setup.admin(&all);
        assert_eq!(code, 0, "{args:?}: {err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    let bob_pw = setup.file("bob.pw", "bobpw");
    let created = online(&["create-user", "bob", "--password-file", &bob_pw, "--displayname", "Bob"]);
    assert_eq!(
        (created["name"].clone(), created["displayname"].clone()),
        (json!("@bob:localhost"), json!("Bob"))
    );
    let bob = Client::login(&process.base_url, "bob", "bobpw").await;
    let users = online(&["list-users"]);
    assert_eq!(users["total"], 2);
    let room = bob.create_room(json!({"name": "Doomed"})).await;
    let rooms = online(&["list-rooms"]);
    assert_eq!(rooms["rooms"][0]["room_id"], json!(room));
    let tokens = online(&["registration-token", "list"]);
    assert_eq!(tokens["registration_tokens"][0]["token"], json!(offline_token));
    assert_eq!(tokens["registration_tokens"][0]["uses_allowed"], 2);
    let made = online(&["registration-token", "create", "--token", "invite-only"]);
    assert_eq!(made["token"], "invite-only");
    online(&["registration-token", "delete", "invite-only"]);
    let deleted = online(&["room", "delete", &room]);
    assert_eq!(deleted["kicked_users"], json!(["@bob:localhost"]));
    let purged = online(&["media", "purge", "--before", &(hearth_core::util::now_ms() + 1000).to_string()]);
    assert_eq!(purged["total"], 0);
    online(&["make-admin", "bob"]);
    online(&["make-admin", "bob", "--revoke"]);
    let new_pw = setup.file("new.pw", "newpw");
    online(&["reset-password", "bob", "--password-file", &new_pw]);
    Client::login(&process.base_url, "bob", "newpw").await;

    // Errors: a non-admin's token, a server that refuses, an unknown user.
    let bob_token = setup.file(
        "bob.token",
        Client::login(&process.base_url, "bob", "newpw").await.access_token.as_deref().unwrap(),
    );
    let (code, _, err) = setup.admin(&["--url", &process.base_url, "--token-file", &bob_token, "list-users"]);
    assert_eq!(code, 1);
    assert!(err.contains("403") && err.contains("M_FORBIDDEN"), "{err}");
    let (code, _, err) =
        setup.admin(&["--url", &process.base_url, "--token-file", &token, "deactivate", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("M_NOT_FOUND"), "{err}");
    online(&["deactivate", "bob", "--erase"]);
    let status = process.terminate();
    assert!(status.success());

    // Offline again: the deactivation is there.
    let (code, out, _) = setup.admin(&["--offline", "list-users"]);
    assert_eq!(code, 0);
    assert!(out.contains("@bob:localhost\tdeactivated"), "{out}");
}
