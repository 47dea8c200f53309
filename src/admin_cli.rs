//! `hearth admin`: the admin API from a shell. By default it talks to a running server's admin
//! API with an admin's access token; with `--offline` it opens the database itself (the server
//! must be stopped), which is how the first admin of a server is made.

use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use hearth_core::{
    Homeserver,
    admin::{
        Page,
        rooms::{RoomDeletion, RoomFilter},
        users::{UserChanges, UserFilter},
    },
};
use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::{Value, json};

use crate::Config;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The server's client API, e.g. http://127.0.0.1:8008 (default: public_baseurl from the
    /// configuration).
    #[arg(long, env = "HEARTH_ADMIN_URL")]
    url: Option<String>,
    /// An admin's access token. Prefer HEARTH_ADMIN_TOKEN or --token-file: command lines are
    /// visible to other users of the machine.
    #[arg(long, env = "HEARTH_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding an admin's access token.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Open the database directly instead of calling a running server (stop the server first).
    #[arg(long)]
    offline: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an account (or, online, update one).
    CreateUser {
        /// A localpart (`alice`) or a user ID (`@alice:example.org`).
        user: String,
        /// Make the account a server admin.
        #[arg(long)]
        admin: bool,
        /// Read the password from FILE (`-` for standard input); without it the account has
        /// no password (single sign-on only).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        #[arg(long)]
        displayname: Option<String>,
    },
    /// Set a new password, signing out every device unless --keep-devices.
    ResetPassword {
        user: String,
        /// Read the password from FILE (`-` for standard input).
        #[arg(long, value_name = "FILE")]
        password_file: PathBuf,
        #[arg(long)]
        keep_devices: bool,
    },
    /// Deactivate an account for good; it leaves every room.
    Deactivate {
        user: String,
        /// Also erase the profile.
        #[arg(long)]
        erase: bool,
    },
    /// Make a user a server admin (or, with --revoke, no longer one).
    MakeAdmin {
        user: String,
        #[arg(long)]
        revoke: bool,
    },
    /// List accounts (deactivated ones too).
    ListUsers,
    /// List rooms.
    ListRooms,
    /// Registration tokens.
    #[command(subcommand)]
    RegistrationToken(TokenCommand),
    /// Rooms.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Media.
    #[command(subcommand)]
    Media(MediaCommand),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a token (random unless --token is given).
    Create {
        #[arg(long)]
        token: Option<String>,
        /// Registrations it allows; unlimited without.
        #[arg(long)]
        uses: Option<u64>,
        /// When it stops being valid, in ms since the epoch.
        #[arg(long)]
        expires_at: Option<u64>,
    },
    List,
    Delete {
        token: String,
    },
}

#[derive(Debug, Subcommand)]
enum RoomCommand {
    /// Make every local member leave, remove the room's aliases and, unless --no-purge, its data.
    Delete {
        room_id: OwnedRoomId,
        #[arg(long)]
        no_purge: bool,
        /// Also refuse future local joins.
        #[arg(long)]
        block: bool,
    },
}

#[derive(Debug, Subcommand)]
enum MediaCommand {
    /// Delete local media created before a time (not quarantined, protected or profile pictures).
    Purge {
        /// In ms since the epoch.
        #[arg(long)]
        before: u64,
        /// Only items larger than this many bytes.
        #[arg(long, default_value_t = 0)]
        size_gt: u64,
    },
}

/// Runs one admin command; the process exits 1 when it fails.
pub async fn run(config: &Config, args: AdminArgs) -> anyhow::Result<()> {
    if args.offline {
        let hs = crate::build(config).await.context(
            "opening the server's storage (stop the server first, or leave out --offline to use its API)",
        )?;
        let result = offline(&hs, config, args.command).await;
        hs.db.flush().context("flushing storage")?;
        return result;
    }
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(file)) => read_secret(file)?,
        (None, None) => {
            bail!("an admin's access token is needed: --token-file, HEARTH_ADMIN_TOKEN, or --offline")
        }
    };
    let url = args.url.clone().unwrap_or_else(|| config.public_baseurl());
    let api = Api { http: reqwest::Client::new(), base: url.trim_end_matches('/').to_owned(), token };
    online(&api, config, args.command).await
}

/// A secret from a file (`-`: standard input), without its trailing newline.
fn read_secret(file: &std::path::Path) -> anyhow::Result<String> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let secret = text.trim_end_matches(['\r', '\n']).to_owned();
    if secret.is_empty() {
        bail!("{} is empty", file.display());
    }
    Ok(secret)
}

fn user_id(config: &Config, user: &str) -> anyhow::Result<OwnedUserId> {
    let full =
        if user.starts_with('@') { user.to_owned() } else { format!("@{user}:{}", config.server_name) };
    OwnedUserId::try_from(full.as_str()).map_err(|e| anyhow!("{full} is not a valid user ID: {e}"))
}

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("calling {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let code = body["errcode"].as_str().unwrap_or("?");
            let message = body["error"].as_str().unwrap_or("");
            bail!("the server answered {status}: {code}: {message}");
        }
        Ok(body)
    }
}

fn print(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

fn encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect::<String>().replace('+', "%20")
}

async fn online(api: &Api, config: &Config, command: AdminCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let result = match command {
        AdminCommand::CreateUser { user, admin, password_file, displayname } => {
            let user = user_id(config, &user)?;
            // Only with --admin: updating an existing admin must not demote them.
            let mut body = if admin { json!({ "admin": true }) } else { json!({}) };
            if let Some(file) = password_file {
                body["password"] = json!(read_secret(&file)?);
            }
            if let Some(name) = displayname {
                body["displayname"] = json!(name);
            }
            api.call(Method::PUT, &format!("/_synapse/admin/v2/users/{}", encode(user.as_str())), Some(body))
                .await?
        }
        AdminCommand::ResetPassword { user, password_file, keep_devices } => {
            let user = user_id(config, &user)?;
            let body =
                json!({ "new_password": read_secret(&password_file)?, "logout_devices": !keep_devices });
            let path = format!("/_synapse/admin/v1/reset_password/{}", encode(user.as_str()));
            api.call(Method::POST, &path, Some(body)).await?
        }
        AdminCommand::Deactivate { user, erase } => {
            let user = user_id(config, &user)?;
            let path = format!("/_synapse/admin/v1/deactivate/{}", encode(user.as_str()));
            api.call(Method::POST, &path, Some(json!({ "erase": erase }))).await?
        }
        AdminCommand::MakeAdmin { user, revoke } => {
            let user = user_id(config, &user)?;
            let path = format!("/_synapse/admin/v1/users/{}/admin", encode(user.as_str()));
            api.call(Method::PUT, &path, Some(json!({ "admin": !revoke }))).await?
        }
        AdminCommand::ListUsers => {
            api.call(Method::GET, "/_synapse/admin/v2/users?deactivated=true&limit=100000", None).await?
        }
        AdminCommand::ListRooms => {
            api.call(Method::GET, "/_synapse/admin/v1/rooms?limit=100000", None).await?
        }
        AdminCommand::RegistrationToken(TokenCommand::Create { token, uses, expires_at }) => {
            let mut body = json!({ "uses_allowed": uses, "expiry_time": expires_at });
            if let Some(token) = token {
                body["token"] = json!(token);
            }
            api.call(Method::POST, "/_synapse/admin/v1/registration_tokens/new", Some(body)).await?
        }
        AdminCommand::RegistrationToken(TokenCommand::List) => {
            api.call(Method::GET, "/_synapse/admin/v1/registration_tokens", None).await?
        }
        AdminCommand::RegistrationToken(TokenCommand::Delete { token }) => {
            let path = format!("/_synapse/admin/v1/registration_tokens/{}", encode(&token));
            api.call(Method::DELETE, &path, None).await?
        }
        AdminCommand::Room(RoomCommand::Delete { room_id, no_purge, block }) => {
            let path = format!("/_synapse/admin/v1/rooms/{}", encode(room_id.as_str()));
            api.call(Method::DELETE, &path, Some(json!({ "purge": !no_purge, "block": block }))).await?
        }
        AdminCommand::Media(MediaCommand::Purge { before, size_gt }) => {
            let path = format!("/_synapse/admin/v1/media/delete?before_ts={before}&size_gt={size_gt}");
            api.call(Method::POST, &path, None).await?
        }
    };
    print(&result);
    Ok(())
}

/// The same commands against the database; what each prints says what was done.
async fn offline(hs: &Homeserver, config: &Config, command: AdminCommand) -> anyhow::Result<()> {
    let system = user_id(config, "hearth-admin-cli")?;
    match command {
        AdminCommand::CreateUser { user, admin, password_file, displayname } => {
            let user = user_id(config, &user)?;
            let password = password_file.map(|f| read_secret(&f)).transpose()?;
            let changes = UserChanges {
                password,
                admin: admin.then_some(true),
                displayname: displayname.map(Some),
                ..UserChanges::default()
            };
            let created = hs.admin_put_user(&user, changes, &system).await?;
            println!(
                "{} {user}{}",
                if created { "created" } else { "updated" },
                if admin { " (admin)" } else { "" }
            );
        }
        AdminCommand::ResetPassword { user, password_file, keep_devices } => {
            let user = user_id(config, &user)?;
            hs.users.set_password(&user, &read_secret(&password_file)?, !keep_devices, None).await?;
            println!("password of {user} reset");
        }
        AdminCommand::Deactivate { user, erase } => {
            let user = user_id(config, &user)?;
            if hs.users.account(&user)?.is_none() {
                bail!("{user} does not exist");
            }
            hs.deactivate_account(&user, erase).await?;
            println!("{user} deactivated{}", if erase { " and erased" } else { "" });
        }
        AdminCommand::MakeAdmin { user, revoke } => {
            let user = user_id(config, &user)?;
            hs.update_account(&user, move |a| a.is_admin = !revoke).await?;
            println!("{user} is {}an admin", if revoke { "no longer " } else { "" });
        }
        AdminCommand::ListUsers => {
            let filter = UserFilter { deactivated: None, locked: true, ..UserFilter::default() };
            let (users, _) = hs.admin_users(&filter, Page { from: 0, limit: usize::MAX })?;
            for user in users {
                let a = &user.account;
                let flags = [
                    (a.is_admin, "admin"),
                    (a.deactivated, "deactivated"),
                    (a.locked, "locked"),
                    (a.is_guest, "guest"),
                ];
                let flags: Vec<&str> = flags.iter().filter(|(on, _)| *on).map(|(_, name)| *name).collect();
                println!("{}\t{}", user.user_id, flags.join(","));
            }
        }
        AdminCommand::ListRooms => {
            let (rooms, _) = hs.admin_rooms(&RoomFilter::default(), Page { from: 0, limit: usize::MAX })?;
            for room in rooms {
                let s = &room.summary;
                println!(
                    "{}\t{}\t{} members\t{}",
                    s.room_id,
                    s.name.as_deref().unwrap_or("-"),
                    s.joined_members,
                    s.canonical_alias.as_deref().unwrap_or("-")
                );
            }
        }
        AdminCommand::RegistrationToken(TokenCommand::Create { token, uses, expires_at }) => {
            let (token, _) = hs.registration_tokens.create(token, None, uses, expires_at)?;
            println!("{token}");
        }
        AdminCommand::RegistrationToken(TokenCommand::List) => {
            for (token, r) in hs.registration_tokens.list(None)? {
                let uses = r.uses_allowed.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
                println!(
                    "{token}\tuses {}/{uses}\tpending {}\texpires {}",
                    r.completed,
                    r.pending,
                    r.expiry_time.map_or_else(|| "never".to_owned(), |t| t.to_string())
                );
            }
        }
        AdminCommand::RegistrationToken(TokenCommand::Delete { token }) => {
            hs.registration_tokens.delete(&token)?;
            println!("deleted {token}");
        }
        AdminCommand::Room(RoomCommand::Delete { room_id, no_purge, block }) => {
            let opts = RoomDeletion { purge: !no_purge, block, ..RoomDeletion::default() };
            let result = hs.admin_delete_room(&room_id, &opts, &system).await?;
            println!(
                "{room_id} deleted: {} members removed, {} could not be",
                result.kicked_users.len(),
                result.failed_to_kick_users.len()
            );
        }
        AdminCommand::Media(MediaCommand::Purge { before, size_gt }) => {
            let deleted = hs.media.delete_older(before, size_gt, true).await?;
            println!("{} media items deleted", deleted.len());
        }
    }
    Ok(())
}
