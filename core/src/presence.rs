//! Presence: online, unavailable (idle) or offline, with an optional status message. Kept in
//! memory (it is safe to lose; a restart shows everyone offline until they sync), derived at
//! read time from activity, and announced through the stream to users who share a room.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use hearth_storage::records::StreamEntry;
use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};

use crate::{Error, Homeserver, Result, util::now_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceState {
    Online,
    Unavailable,
    Offline,
}

impl PresenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Unavailable => "unavailable",
            Self::Offline => "offline",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "online" => Ok(Self::Online),
            "unavailable" => Ok(Self::Unavailable),
            "offline" => Ok(Self::Offline),
            other => Err(Error::invalid_param(format!("Unknown presence state {other}"))),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// What the user (or their client) last asked for.
    chosen: PresenceState,
    status_msg: Option<String>,
    last_active_ms: u64,
    /// Open syncs and connections; while any is open the user is not gone.
    connections: u32,
    last_seen_ms: u64,
    /// The state last announced, to detect time-driven transitions.
    announced: PresenceState,
}

/// A user's presence as others see it.
#[derive(Debug, Clone)]
pub struct PresenceView {
    pub state: PresenceState,
    pub status_msg: Option<String>,
    pub last_active_ago_ms: Option<u64>,
    pub currently_active: bool,
}

#[derive(Debug, Default)]
pub struct PresenceStore {
    entries: Mutex<HashMap<OwnedUserId, Entry>>,
}

impl Homeserver {
    fn effective(&self, entry: &Entry, now: u64) -> PresenceState {
        let cfg = &self.config.presence;
        let gone =
            entry.connections == 0 && now.saturating_sub(entry.last_seen_ms) > cfg.offline_grace_secs * 1000;
        match entry.chosen {
            PresenceState::Offline => PresenceState::Offline,
            _ if gone => PresenceState::Offline,
            PresenceState::Online
                if now.saturating_sub(entry.last_active_ms) > cfg.idle_timeout_secs * 1000 =>
            {
                PresenceState::Unavailable
            }
            chosen => chosen,
        }
    }

    pub fn presence(&self, user: &UserId) -> PresenceView {
        let now = now_ms();
        let entries = self.presence_store.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(user) {
            Some(entry) if self.config.presence.enabled => {
                let state = self.effective(entry, now);
                PresenceView {
                    state,
                    status_msg: entry.status_msg.clone(),
                    last_active_ago_ms: Some(now.saturating_sub(entry.last_active_ms)),
                    currently_active: state == PresenceState::Online
                        && now.saturating_sub(entry.last_active_ms) < 60_000,
                }
            }
            _ => PresenceView {
                state: PresenceState::Offline,
                status_msg: None,
                last_active_ago_ms: None,
                currently_active: false,
            },
        }
    }

    /// The `m.presence` event for a user.
    pub fn presence_event(&self, user: &UserId) -> Value {
        let view = self.presence(user);
        let mut content = json!({"presence": view.state.as_str(), "currently_active": view.currently_active});
        if let Some(ago) = view.last_active_ago_ms {
            content["last_active_ago"] = json!(ago);
        }
        if let Some(msg) = view.status_msg {
            content["status_msg"] = json!(msg);
        }
        json!({"type": "m.presence", "sender": user, "content": content})
    }

    /// Sets a user's presence explicitly (`PUT /presence`), or from `set_presence` on /sync
    /// (`explicit_status` false keeps the status message).
    pub async fn set_presence(
        &self,
        user: &UserId,
        state: PresenceState,
        status_msg: Option<Option<String>>,
    ) -> Result<()> {
        if !self.config.presence.enabled {
            return Ok(());
        }
        let now = now_ms();
        let changed = {
            let mut entries = self.presence_store.entries.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = entries.entry(user.to_owned()).or_insert_with(|| Entry {
                chosen: PresenceState::Offline,
                status_msg: None,
                last_active_ms: now,
                connections: 0,
                last_seen_ms: now,
                announced: PresenceState::Offline,
            });
            let old_msg = entry.status_msg.clone();
            entry.chosen = state;
            if let Some(msg) = status_msg {
                entry.status_msg = msg;
            }
            if state == PresenceState::Online {
                entry.last_active_ms = now;
            }
            entry.last_seen_ms = now;
            let effective = self.effective(entry, now);
            let changed = effective != entry.announced || entry.status_msg != old_msg;
            entry.announced = effective;
            changed
        };
        if changed {
            self.announce_presence(user).await?;
        }
        Ok(())
    }

    /// A sync or connection opened (`+1`) or closed (`-1`) for the user.
    pub fn presence_connection(&self, user: &UserId, opened: bool) {
        let mut entries = self.presence_store.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get_mut(user) {
            if opened {
                entry.connections += 1;
            } else {
                entry.connections = entry.connections.saturating_sub(1);
            }
            entry.last_seen_ms = now_ms();
        }
    }

    async fn announce_presence(&self, user: &UserId) -> Result<()> {
        let wake = self.users_sharing_rooms(user)?.into_iter().collect();
        let entry = StreamEntry::Presence { user_id: user.to_owned() };
        self.streams.write(&self.db, wake, move |_, _| Ok(entry)).await?;
        Ok(())
    }

    /// Announces the transitions that time alone causes (idle, gone). Run periodically.
    pub async fn sweep_presence(&self) -> Result<()> {
        let now = now_ms();
        let transitioned: Vec<OwnedUserId> = {
            let mut entries = self.presence_store.entries.lock().unwrap_or_else(PoisonError::into_inner);
            let mut out = Vec::new();
            for (user, entry) in entries.iter_mut() {
                let effective = self.effective(entry, now);
                if effective != entry.announced {
                    entry.announced = effective;
                    out.push(user.clone());
                }
            }
            out
        };
        for user in transitioned {
            self.announce_presence(&user).await?;
        }
        Ok(())
    }
}
