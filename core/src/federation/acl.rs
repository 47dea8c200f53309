//! Server ACLs (`m.room.server_acl`): which servers a room will hear from. A denied server's
//! PDUs and room EDUs are dropped, and it may not join, leave, knock, invite or read the room.

use ruma::{RoomId, ServerName, events::room::server_acl::RoomServerAclEventContent};
use serde_json::Value;

use crate::{Error, Homeserver, Result};

/// Whether the ACL `content` lets `server` take part. Read leniently, as the spec's defaults
/// say: `allow_ip_literals` true when absent, a missing `allow` allows nobody, entries that are
/// not strings match nothing. Globs (`*`, `?`) match the host without its port, ignoring case.
pub fn acl_allows(content: &Value, server: &ServerName) -> bool {
    let globs = |field: &str| -> Vec<String> {
        content[field].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
    };
    let ip_literals = content["allow_ip_literals"].as_bool().unwrap_or(true);
    RoomServerAclEventContent::new(ip_literals, globs("allow"), globs("deny")).is_allowed(server)
}

impl Homeserver {
    /// Whether the room's current ACL lets `server` take part (no ACL: everyone may).
    pub fn server_allowed(&self, room_id: &RoomId, server: &ServerName) -> Result<bool> {
        Ok(match self.rooms.current_state_event(room_id, "m.room.server_acl", "")? {
            Some(acl) => acl_allows(&acl.content_json(), server),
            None => true,
        })
    }

    /// Refuses a request from a server the room's ACL denies, with the spec's 403.
    pub fn require_acl(&self, room_id: &RoomId, server: &ServerName) -> Result<()> {
        if self.server_allowed(room_id, server)? {
            Ok(())
        } else {
            tracing::info!(%room_id, %server, "refused a server the room's ACL denies");
            Err(Error::forbidden(format!("{server} is denied by the server ACL of {room_id}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma::server_name;
    use serde_json::json;

    use super::acl_allows;

    #[test]
    fn deny_wins_over_allow_and_globs_match_whole_names() {
        let acl = json!({"allow": ["*"], "deny": ["evil.example", "*.bad.org", "hs-?.test"]});
        assert!(acl_allows(&acl, server_name!("good.example")));
        assert!(!acl_allows(&acl, server_name!("evil.example")));
        assert!(!acl_allows(&acl, server_name!("a.bad.org")));
        assert!(!acl_allows(&acl, server_name!("x.y.bad.org")));
        // `*.bad.org` needs something before the dot.
        assert!(acl_allows(&acl, server_name!("bad.org")));
        assert!(!acl_allows(&acl, server_name!("hs-b.test")));
        // `?` is exactly one character.
        assert!(acl_allows(&acl, server_name!("hs-bb.test")));
        // A glob matches the whole name, not a part of it.
        assert!(acl_allows(&acl, server_name!("evil.example.com")));
    }

    #[test]
    fn ports_are_ignored_and_case_does_not_matter() {
        let acl = json!({"allow": ["*.Example.com"], "deny": ["bad.example.com"]});
        assert!(acl_allows(&acl, server_name!("matrix.example.com:8448")));
        assert!(!acl_allows(&acl, server_name!("BAD.example.com:443")));
        assert!(!acl_allows(&acl, server_name!("example.org")));
    }

    #[test]
    fn a_missing_allow_list_allows_nobody() {
        assert!(!acl_allows(&json!({}), server_name!("example.com")));
        assert!(!acl_allows(&json!({"deny": []}), server_name!("example.com")));
        assert!(!acl_allows(&json!({"allow": "*"}), server_name!("example.com")), "not a list");
        assert!(acl_allows(&json!({"allow": [1, "*"]}), server_name!("example.com")), "non-strings skipped");
    }

    #[test]
    fn ip_literals_follow_allow_ip_literals() {
        let open = json!({"allow": ["*"]});
        assert!(acl_allows(&open, server_name!("127.0.0.1")));
        assert!(acl_allows(&open, server_name!("[::1]:8448")));
        let closed = json!({"allow": ["*"], "allow_ip_literals": false});
        assert!(!acl_allows(&closed, server_name!("127.0.0.1")));
        assert!(!acl_allows(&closed, server_name!("[::1]:8448")));
        assert!(!acl_allows(&closed, server_name!("10.0.0.1:80")));
        assert!(acl_allows(&closed, server_name!("example.com")));
    }
}
