//! Application service registration files: the YAML every bridge generates, read at start-up
//! and checked as a whole, so that a mistake stops the server with the file and field named
//! instead of surfacing later as a bridge that silently receives nothing.

use std::path::{Path, PathBuf};

use regex::Regex;
use ruma::{OwnedUserId, RoomAliasId, RoomId, ServerName, UserId};
use serde::Deserialize;

use crate::util;

/// A registration file as bridges write it. Fields Hearth does not use are ignored, as every
/// homeserver does: bridge generators add their own. (No `Debug`: it holds the tokens.)
#[derive(Deserialize)]
struct RegistrationFile {
    id: String,
    /// Required, but may be `null`: a service that only acts and never receives.
    url: Option<String>,
    as_token: String,
    hs_token: String,
    sender_localpart: String,
    #[serde(default)]
    namespaces: NamespacesFile,
    rate_limited: Option<bool>,
    #[serde(default)]
    protocols: Option<Vec<String>>,
    #[serde(default)]
    receive_ephemeral: bool,
    /// MSC2409's name for `receive_ephemeral`, still written by some bridges.
    #[serde(default, rename = "de.sorunome.msc2409.push_ephemeral")]
    push_ephemeral_msc2409: bool,
    #[serde(default)]
    push_ephemeral: bool,
    /// MSC3202: to-device messages, device list changes and key counts in transactions.
    #[serde(default, rename = "org.matrix.msc3202")]
    msc3202: bool,
    /// MSC4190: the service manages its users' devices itself (no login).
    #[serde(default, rename = "io.element.msc4190")]
    msc4190: bool,
}

#[derive(Default, Deserialize)]
struct NamespacesFile {
    #[serde(default)]
    users: Option<Vec<NamespaceFile>>,
    #[serde(default)]
    aliases: Option<Vec<NamespaceFile>>,
    #[serde(default)]
    rooms: Option<Vec<NamespaceFile>>,
}

#[derive(Deserialize)]
struct NamespaceFile {
    #[serde(default)]
    exclusive: bool,
    regex: String,
}

/// One namespace: a regular expression matched from the start of the ID, as Synapse matches
/// it (so `@irc_.*` covers `@irc_alice:example.org`).
#[derive(Debug, Clone)]
pub struct Namespace {
    pub exclusive: bool,
    regex: Regex,
    source: String,
}

impl Namespace {
    pub fn matches(&self, id: &str) -> bool {
        self.regex.is_match(id)
    }
}

/// A registered application service, checked.
#[derive(Clone)]
pub struct Registration {
    pub id: String,
    /// Where transactions and queries go; `None`: the service only acts.
    pub url: Option<url::Url>,
    /// SHA-256 of the token the service authenticates with.
    pub(super) as_token_hash: Vec<u8>,
    /// The token Hearth authenticates with towards the service.
    pub(super) hs_token: String,
    /// The service's own user (`sender_localpart`).
    pub sender: OwnedUserId,
    pub users: Vec<Namespace>,
    pub aliases: Vec<Namespace>,
    pub rooms: Vec<Namespace>,
    pub rate_limited: bool,
    pub protocols: Vec<String>,
    pub receive_ephemeral: bool,
    pub msc3202: bool,
    pub msc4190: bool,
    /// The file it came from, for messages.
    pub file: PathBuf,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens.
        f.debug_struct("Registration").field("id", &self.id).field("file", &self.file).finish_non_exhaustive()
    }
}

impl Registration {
    /// Whether the service may act as `user`: its own user, or one in its user namespaces.
    pub fn owns_user(&self, user: &UserId) -> bool {
        user == self.sender || self.users.iter().any(|ns| ns.matches(user.as_str()))
    }

    pub fn exclusive_user(&self, user: &UserId) -> bool {
        user == self.sender || self.users.iter().any(|ns| ns.exclusive && ns.matches(user.as_str()))
    }

    pub fn owns_alias(&self, alias: &RoomAliasId) -> bool {
        self.aliases.iter().any(|ns| ns.matches(alias.as_str()))
    }

    pub fn exclusive_alias(&self, alias: &RoomAliasId) -> bool {
        self.aliases.iter().any(|ns| ns.exclusive && ns.matches(alias.as_str()))
    }

    pub fn owns_room(&self, room: &RoomId) -> bool {
        self.rooms.iter().any(|ns| ns.matches(room.as_str()))
    }

    #[cfg(test)]
    fn token_matches(&self, token: &str) -> bool {
        util::sha256(token.as_bytes()) == self.as_token_hash
    }
}

/// Reads and checks every file; the error names the file and what is wrong in it.
pub fn load(files: &[PathBuf], server_name: &ServerName) -> Result<Vec<Registration>, String> {
    let mut out: Vec<Registration> = Vec::with_capacity(files.len());
    // Hashes of every token seen, with the file that has it.
    let mut tokens: Vec<(Vec<u8>, String)> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("application service registration {}: {e}", file.display()))?;
        let registration = parse(&text, file, server_name)
            .map_err(|e| format!("application service registration {}: {e}", file.display()))?;
        let fail =
            |message: String| format!("application service registration {}: {message}", file.display());
        for other in &out {
            if other.id == registration.id {
                return Err(fail(format!(
                    "id `{}` is also the id of {}",
                    registration.id,
                    other.file.display()
                )));
            }
            if other.sender == registration.sender {
                return Err(fail(format!(
                    "sender_localpart `{}` is also the sender of {}",
                    registration.sender.localpart(),
                    other.file.display()
                )));
            }
            overlap(&registration, other).map_err(fail)?;
        }
        let hs_hash = util::sha256(registration.hs_token.as_bytes());
        for token in [&hs_hash, &registration.as_token_hash] {
            if let Some((_, owner)) = tokens.iter().find(|(t, _)| t == token) {
                return Err(fail(format!("a token of this service is also a token of {owner}")));
            }
        }
        tokens.push((hs_hash, file.display().to_string()));
        tokens.push((registration.as_token_hash.clone(), file.display().to_string()));
        out.push(registration);
    }
    Ok(out)
}

/// Exclusive namespaces must not claim what another service claims: the same expression, or
/// the other service's own user.
fn overlap(a: &Registration, b: &Registration) -> Result<(), String> {
    for (kind, ours, theirs) in
        [("users", &a.users, &b.users), ("aliases", &a.aliases, &b.aliases), ("rooms", &a.rooms, &b.rooms)]
    {
        for ns in ours {
            if let Some(same) = theirs.iter().find(|t| t.source == ns.source && (t.exclusive || ns.exclusive))
            {
                return Err(format!(
                    "namespaces.{kind} `{}` is also claimed by {} and one of them is exclusive",
                    same.source,
                    b.file.display()
                ));
            }
        }
    }
    if a.exclusive_user(&b.sender) {
        return Err(format!(
            "an exclusive user namespace covers {}, the sender of {}",
            b.sender,
            b.file.display()
        ));
    }
    if b.exclusive_user(&a.sender) {
        return Err(format!(
            "the sender {} is in an exclusive user namespace of {}",
            a.sender,
            b.file.display()
        ));
    }
    Ok(())
}

pub(crate) fn parse(text: &str, file: &Path, server_name: &ServerName) -> Result<Registration, String> {
    let raw: RegistrationFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    if raw.id.is_empty() {
        return Err("id: must not be empty".to_owned());
    }
    if raw.as_token.is_empty() {
        return Err("as_token: must not be empty".to_owned());
    }
    if raw.hs_token.is_empty() {
        return Err("hs_token: must not be empty".to_owned());
    }
    if raw.as_token == raw.hs_token {
        return Err("as_token and hs_token must differ".to_owned());
    }
    let url = match raw.url.as_deref() {
        None | Some("") => None,
        Some(text) => {
            let url = url::Url::parse(text).map_err(|e| format!("url: `{text}` is not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("url: `{text}` is not an http or https URL"));
            }
            // Request paths are appended to it.
            if url.query().is_some() || url.fragment().is_some() {
                return Err(format!("url: `{text}` must not have a query or a fragment"));
            }
            Some(url)
        }
    };
    // Any localpart the spec's historical grammar allows, as bridges have long used them.
    let localpart_ok = !raw.sender_localpart.is_empty()
        && raw.sender_localpart.chars().all(|c| c.is_ascii_graphic() && c != ':');
    let sender = UserId::parse_with_server_name(raw.sender_localpart.as_str(), server_name)
        .ok()
        .filter(|_| localpart_ok)
        .ok_or_else(|| format!("sender_localpart: `{}` is not a valid localpart", raw.sender_localpart))?;
    let namespaces = |kind: &str, list: Option<Vec<NamespaceFile>>| -> Result<Vec<Namespace>, String> {
        list.unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, ns)| {
                let regex = Regex::new(&format!("^(?:{})", ns.regex)).map_err(|e| {
                    format!("namespaces.{kind}[{i}].regex: `{}` is not a regular expression: {e}", ns.regex)
                })?;
                Ok(Namespace { exclusive: ns.exclusive, regex, source: ns.regex })
            })
            .collect()
    };
    let users = namespaces("users", raw.namespaces.users)?;
    let aliases = namespaces("aliases", raw.namespaces.aliases)?;
    let rooms = namespaces("rooms", raw.namespaces.rooms)?;
    Ok(Registration {
        id: raw.id,
        url,
        as_token_hash: util::sha256(raw.as_token.as_bytes()),
        hs_token: raw.hs_token,
        sender,
        users,
        aliases,
        rooms,
        // The spec's default: limited unless the file says otherwise.
        rate_limited: raw.rate_limited.unwrap_or(true),
        protocols: raw.protocols.unwrap_or_default(),
        receive_ephemeral: raw.receive_ephemeral || raw.push_ephemeral || raw.push_ephemeral_msc2409,
        msc3202: raw.msc3202,
        msc4190: raw.msc4190,
        file: file.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use ruma::server_name;

    use super::*;

    const BRIDGE: &str = "id: irc
url: http://127.0.0.1:9000
as_token: as-secret
hs_token: hs-secret
sender_localpart: ircbot
rate_limited: false
protocols: [irc]
de.sorunome.msc2409.push_ephemeral: true
namespaces:
  users:
    - exclusive: true
      regex: '@irc_.*:example\\.org'
  aliases:
    - exclusive: true
      regex: '#irc_.*'
  rooms: []
";

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_bridge_file_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(&dir, "irc.yaml", BRIDGE);
        let regs = load(&[file], server_name!("example.org")).unwrap();
        let irc = &regs[0];
        assert_eq!(irc.sender, "@ircbot:example.org");
        assert!(irc.receive_ephemeral && !irc.rate_limited);
        assert!(irc.token_matches("as-secret") && !irc.token_matches("hs-secret"));
        assert!(irc.exclusive_user(ruma::user_id!("@irc_alice:example.org")));
        assert!(!irc.owns_user(ruma::user_id!("@alice:example.org")));
        // Matched from the start, not anywhere.
        assert!(!irc.owns_user(ruma::user_id!("@x_irc_alice:example.org")));
        assert!(irc.exclusive_alias(ruma::room_alias_id!("#irc_chan:example.org")));
        assert_eq!(irc.protocols, ["irc"]);
    }

    #[test]
    fn mistakes_name_the_file_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (BRIDGE.replace("hs_token: hs-secret\n", ""), "hs_token"),
            (BRIDGE.replace("'@irc_.*:example\\.org'", "'@irc_(:'"), "namespaces.users[0].regex"),
            (BRIDGE.replace("sender_localpart: ircbot", "sender_localpart: 'Bad Bot'"), "sender_localpart"),
            (BRIDGE.replace("http://127.0.0.1:9000", "ftp://x"), "url"),
            (BRIDGE.replace("as_token: as-secret", "as_token: hs-secret"), "must differ"),
        ];
        for (text, field) in cases {
            let file = write(&dir, "bad.yaml", &text);
            let error = load(&[file], server_name!("example.org")).unwrap_err();
            assert!(error.contains("bad.yaml") && error.contains(field), "{field}: {error}");
        }
    }

    #[test]
    fn two_services_may_not_share_tokens_or_exclusive_namespaces() {
        let dir = tempfile::tempdir().unwrap();
        let first = write(&dir, "a.yaml", BRIDGE);
        let other = |text: String| {
            let second = write(&dir, "b.yaml", &text);
            load(&[first.clone(), second], server_name!("example.org"))
        };
        let distinct = BRIDGE
            .replace("id: irc", "id: slack")
            .replace("as-secret", "as-2")
            .replace("hs-secret", "hs-2")
            .replace("ircbot", "slackbot")
            .replace("@irc_", "@slack_")
            .replace("#irc_", "#slack_");
        assert!(other(distinct.clone()).is_ok());
        assert!(other(distinct.replace("as-2", "as-secret")).unwrap_err().contains("token"));
        assert!(other(distinct.replace("id: slack", "id: irc")).unwrap_err().contains("id `irc`"));
        assert!(other(distinct.replace("@slack_", "@irc_")).unwrap_err().contains("namespaces.users"));
        assert!(
            other(distinct.replace("slackbot", "irc_bot")).unwrap_err().contains("exclusive user namespace")
        );
    }
}
