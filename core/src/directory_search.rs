//! The user directory and TURN credentials: small lookups clients make at start-up.

use ruma::events::room::member::MembershipState;
use std::collections::BTreeSet;

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use ruma::{OwnedUserId, UserId};
use sha1::Sha1;

use crate::{Homeserver, Result, util::now_ms};

/// A user directory match.
#[derive(Debug, Clone)]
pub struct UserMatch {
    pub user_id: OwnedUserId,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

/// TURN credentials for one user.
#[derive(Debug, Clone)]
pub struct TurnCredentials {
    pub username: String,
    pub password: String,
    pub uris: Vec<String>,
    pub ttl_secs: u64,
}

impl Homeserver {
    /// Users who share a room with `searcher` or sit in a published room, whose ID or display
    /// name contains `term` (case-insensitively). Returns the matches and whether more exist.
    pub fn search_users(
        &self,
        searcher: &UserId,
        term: &str,
        limit: usize,
    ) -> Result<(Vec<UserMatch>, bool)> {
        let term = term.to_lowercase();
        let mut candidates = BTreeSet::new();
        for room in self.rooms.joined_rooms(searcher)? {
            candidates.extend(self.rooms.members_with(&room, &MembershipState::Join)?);
        }
        for room in self.rooms.public_rooms(None, &ruma::directory::RoomNetwork::Matrix)? {
            candidates.extend(self.rooms.members_with(&room.room_id, &MembershipState::Join)?);
        }
        let mut matches = Vec::new();
        for user_id in candidates {
            // A bridge's users are its own, found through its third-party lookups (as Synapse).
            if self.appservices.all().iter().any(|s| s.exclusive_user(&user_id)) {
                continue;
            }
            let profile = if self.users.is_local(&user_id) {
                self.users.profile(&user_id)?.unwrap_or_default()
            } else {
                Default::default()
            };
            let field = |k: &str| profile.get(k).and_then(|v| v.as_str()).map(ToOwned::to_owned);
            let displayname = field("displayname");
            let hit = user_id.as_str().to_lowercase().contains(&term)
                || displayname.as_deref().is_some_and(|d| d.to_lowercase().contains(&term));
            if hit {
                matches.push(UserMatch { user_id, displayname, avatar_url: field("avatar_url") });
            }
        }
        let limited = matches.len() > limit;
        matches.truncate(limit);
        Ok((matches, limited))
    }

    /// TURN credentials as configured: per-user ones from the TURN REST API's shared secret, or
    /// the fixed ones; `None` when no TURN server is configured.
    pub fn turn_credentials(&self, user: &UserId) -> Option<TurnCredentials> {
        let voip = &self.config.voip;
        if voip.turn_uris.is_empty() {
            return None;
        }
        let ttl_secs = voip.turn_user_lifetime_secs;
        let (username, password) = match (&voip.turn_shared_secret, &voip.turn_username, &voip.turn_password)
        {
            (Some(secret), _, _) => {
                // The TURN REST API convention: "<expiry>:<user>", signed with HMAC-SHA1.
                let expiry = now_ms() / 1000 + ttl_secs;
                let username = format!("{expiry}:{user}");
                let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).ok()?;
                mac.update(username.as_bytes());
                (username, STANDARD.encode(mac.finalize().into_bytes()))
            }
            (None, Some(u), Some(p)) => (u.clone(), p.clone()),
            _ => return None,
        };
        Some(TurnCredentials { username, password, uris: voip.turn_uris.clone(), ttl_secs })
    }
}
