//! Presence: online, unavailable (idle) or offline, with an optional status message, derived at
//! read time from activity and announced through the stream to users who share a room.
//!
//! It is safe to lose, so it lives in the ephemeral store (Redis when configured, where it
//! outlives a restart and other processes can read it), with this process's map in front: reads
//! on the sync path are synchronous and must not wait on the network, and when Redis is away
//! the map alone keeps presence working in this process. Processes sharing a store keep their
//! maps current over the bus ([`crate::cluster`]); the changes that time alone causes (idle,
//! gone) are announced by one of them, the one that runs the delivery queues.

use crate::ephemeral::spaces::{self, Json};
use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use hearth_storage::records::StreamEntry;
use ruma::{OwnedUserId, UserId};
use serde_json::{Value, json};

use crate::{Error, Homeserver, Result, util::now_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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
    shared: Shared,
    /// Open syncs and connections in this process; while any is open the user is not gone.
    connections: u32,
    /// The state last announced, to detect time-driven transitions.
    announced: PresenceState,
    /// When `shared` was last written through, so a client syncing in a loop does not cost a
    /// Redis write per request.
    stored_ms: u64,
}

/// The part of an entry that is stored in the ephemeral store.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Shared {
    /// What the user (or their client) last asked for.
    chosen: PresenceState,
    status_msg: Option<String>,
    last_active_ms: u64,
    last_seen_ms: u64,
}

/// How stale the stored record may get while nothing but activity times change.
const STORE_EVERY_MS: u64 = 30_000;

/// Long after anyone would show as offline: the record only has to outlive restarts.
pub(crate) const SHARED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

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
    /// Users to wake for presence changes, woken together by [`Homeserver::flush_presence`]:
    /// a burst of changes (a thousand members coming online) costs each reader one wake-up per
    /// flush instead of one per change.
    pending_wake: Mutex<std::collections::BTreeSet<OwnedUserId>>,
    /// Users of other servers as their servers last described them. Their servers own the
    /// derivation (idle, gone), so nothing is derived here but the age of the activity.
    remote: Mutex<HashMap<OwnedUserId, RemoteEntry>>,
}

/// What another server last said about one of its users.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RemotePresence {
    pub state: PresenceState,
    pub status_msg: Option<String>,
    pub last_active_ago_ms: u64,
    pub currently_active: bool,
}

#[derive(Debug)]
struct RemoteEntry {
    presence: RemotePresence,
    received_ms: u64,
}

/// Remote users whose presence is kept; beyond it the longest-unheard-of is forgotten (and
/// shows as offline), so a chatty peer cannot grow this map without bound.
const MAX_REMOTE: usize = 10_000;

impl Homeserver {
    fn effective(&self, entry: &Entry, now: u64) -> PresenceState {
        let cfg = &self.config.presence;
        let shared = &entry.shared;
        let gone =
            entry.connections == 0 && now.saturating_sub(shared.last_seen_ms) > cfg.offline_grace_secs * 1000;
        match shared.chosen {
            PresenceState::Offline => PresenceState::Offline,
            _ if gone => PresenceState::Offline,
            PresenceState::Online
                if now.saturating_sub(shared.last_active_ms) > cfg.idle_timeout_secs * 1000 =>
            {
                PresenceState::Unavailable
            }
            chosen => chosen,
        }
    }

    pub fn presence(&self, user: &UserId) -> PresenceView {
        let now = now_ms();
        if user.server_name() != self.server_name() {
            return self.remote_presence(user, now);
        }
        let entries = self.presence_store.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(user) {
            Some(entry) if self.config.presence.enabled => {
                let state = self.effective(entry, now);
                let last_active_ago = now.saturating_sub(entry.shared.last_active_ms);
                PresenceView {
                    state,
                    status_msg: entry.shared.status_msg.clone(),
                    last_active_ago_ms: Some(last_active_ago),
                    currently_active: state == PresenceState::Online && last_active_ago < 60_000,
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

    fn remote_presence(&self, user: &UserId, now: u64) -> PresenceView {
        let remote = self.presence_store.remote.lock().unwrap_or_else(PoisonError::into_inner);
        match remote.get(user) {
            Some(entry) if self.config.presence.enabled => PresenceView {
                state: entry.presence.state,
                status_msg: entry.presence.status_msg.clone(),
                last_active_ago_ms: Some(
                    entry.presence.last_active_ago_ms.saturating_add(now.saturating_sub(entry.received_ms)),
                ),
                currently_active: entry.presence.currently_active,
            },
            _ => PresenceView {
                state: PresenceState::Offline,
                status_msg: None,
                last_active_ago_ms: None,
                currently_active: false,
            },
        }
    }

    /// Records what another server says about one of its users and wakes the local users who
    /// share a room with them.
    pub(crate) async fn set_remote_presence(&self, user: &UserId, presence: RemotePresence) -> Result<()> {
        if !self.config.presence.enabled {
            return Ok(());
        }
        let wake = self.local_users_sharing_rooms(user)?;
        if wake.is_empty() {
            // Nobody here can see it: not worth a slot in the bounded map.
            return Ok(());
        }
        self.streams.broadcast(crate::cluster::Body::RemotePresence {
            user_id: user.to_owned(),
            presence: presence.clone(),
        });
        self.remember_remote_presence(user, presence);
        self.record_presence_change(user, wake).await
    }

    /// Keeps what another server said about one of its users (received here, or by another
    /// process sharing the store).
    pub(crate) fn remember_remote_presence(&self, user: &UserId, presence: RemotePresence) {
        if !self.config.presence.enabled {
            return;
        }
        let mut remote = self.presence_store.remote.lock().unwrap_or_else(PoisonError::into_inner);
        if remote.len() >= MAX_REMOTE && !remote.contains_key(user) {
            let oldest = remote.iter().min_by_key(|(_, e)| e.received_ms).map(|(u, _)| u.clone());
            if let Some(oldest) = oldest {
                remote.remove(&oldest);
            }
        }
        remote.insert(user.to_owned(), RemoteEntry { presence, received_ms: now_ms() });
    }

    /// A local user's record as another process sharing the store stored it, with the state
    /// that process announced, if it did. What it did not announce (a user back after a gap,
    /// seen by a process that does not announce time-driven changes) is left for this one's
    /// sweep to find; the connections this process counts are its own.
    pub(crate) fn apply_presence(&self, user: &UserId, record: Shared, announced: Option<PresenceState>) {
        if !self.config.presence.enabled {
            return;
        }
        let now = now_ms();
        let mut entries = self.presence_store.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = !entries.contains_key(user);
        let entry = entries.entry(user.to_owned()).or_insert_with(|| Entry {
            shared: record.clone(),
            connections: 0,
            announced: PresenceState::Offline,
            stored_ms: now,
        });
        entry.shared = Shared {
            // Activity seen here may be newer than what the other process knew.
            last_active_ms: entry.shared.last_active_ms.max(record.last_active_ms),
            last_seen_ms: entry.shared.last_seen_ms.max(record.last_seen_ms),
            ..record
        };
        entry.stored_ms = now;
        match announced {
            Some(announced) => entry.announced = announced,
            // First heard of here: what it shows now was announced where it was set.
            None if fresh => entry.announced = self.effective(entry, now),
            None => {}
        }
    }

    /// Puts a presence change in the stream now and queues its readers' wake-up for the next
    /// flush. On a shared store the readers are woken with the entry's news instead, since
    /// many of them may be in other processes.
    async fn record_presence_change(&self, user: &UserId, wake: Vec<OwnedUserId>) -> Result<()> {
        let entry = StreamEntry::Presence { user_id: user.to_owned() };
        if self.streams.is_shared() {
            self.streams.write(&self.db, wake, move |_, _| Ok(entry)).await?;
            return Ok(());
        }
        self.streams.write(&self.db, Vec::new(), move |_, _| Ok(entry)).await?;
        self.presence_store.pending_wake.lock().unwrap_or_else(PoisonError::into_inner).extend(wake);
        Ok(())
    }

    /// Wakes the readers of the presence changes recorded since the last flush. Run by a timer
    /// (`PRESENCE_FLUSH_EVERY` in the binary); presence may reach clients that much later.
    pub fn flush_presence(&self) {
        let users = std::mem::take(
            &mut *self.presence_store.pending_wake.lock().unwrap_or_else(PoisonError::into_inner),
        );
        if !users.is_empty() {
            self.notifier.notify(users.iter().map(AsRef::as_ref), self.streams.published());
        }
    }

    /// Like [`Self::presence`], but first fetches from the ephemeral store what this process
    /// has not seen (after a restart, or set by another process).
    pub async fn load_presence(&self, user: &UserId) -> PresenceView {
        self.fetch_shared_presence(user).await;
        self.presence(user)
    }

    /// Brings a local user's stored record into this process's map if it is not there yet.
    async fn fetch_shared_presence(&self, user: &UserId) {
        let known =
            self.presence_store.entries.lock().unwrap_or_else(PoisonError::into_inner).contains_key(user);
        if !known && self.config.presence.enabled && user.server_name() == self.server_name() {
            // A failed read only means presence shows as offline; the store logs the outage.
            if let Ok(Some(Json(shared))) = self.ephemeral.get_in::<spaces::Presence>(user).await {
                let mut entries = self.presence_store.entries.lock().unwrap_or_else(PoisonError::into_inner);
                entries.entry(user.to_owned()).or_insert_with(|| Entry {
                    announced: shared.chosen,
                    stored_ms: shared.last_seen_ms,
                    shared,
                    connections: 0,
                });
            }
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
        self.fetch_shared_presence(user).await;
        let now = now_ms();
        let (changed, shared) = {
            let mut entries = self.presence_store.entries.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = entries.entry(user.to_owned()).or_insert_with(|| Entry {
                shared: Shared {
                    chosen: PresenceState::Offline,
                    status_msg: None,
                    last_active_ms: now,
                    last_seen_ms: now,
                },
                connections: 0,
                announced: PresenceState::Offline,
                stored_ms: 0,
            });
            let old = (entry.shared.chosen, entry.shared.status_msg.clone());
            entry.shared.chosen = state;
            if let Some(msg) = status_msg {
                entry.shared.status_msg = msg;
            }
            if state == PresenceState::Online {
                entry.shared.last_active_ms = now;
            }
            entry.shared.last_seen_ms = now;
            let effective = self.effective(entry, now);
            let changed = effective != entry.announced || entry.shared.status_msg != old.1;
            entry.announced = effective;
            let store = changed || old.0 != state || now.saturating_sub(entry.stored_ms) > STORE_EVERY_MS;
            if store {
                entry.stored_ms = now;
            }
            (changed, store.then(|| (entry.shared.clone(), changed.then_some(effective))))
        };
        if let Some((shared, announced)) = shared {
            self.store_presence(user, &shared, announced).await;
        }
        if changed {
            self.announce_presence(user).await?;
        }
        Ok(())
    }

    /// Writes through to the ephemeral store and to the other processes' copies, with the
    /// state this process is announcing, if it is. Failing to is not an error for the caller:
    /// the local entry already holds the change, and presence is safe to lose.
    async fn store_presence(&self, user: &UserId, shared: &Shared, announced: Option<PresenceState>) {
        self.streams.broadcast(crate::cluster::Body::Presence {
            user_id: user.to_owned(),
            record: shared.clone(),
            announced,
        });
        let _ = self.ephemeral.put_in::<spaces::Presence>(user, &Json(shared.clone())).await;
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
            entry.shared.last_seen_ms = now_ms();
        }
    }

    async fn announce_presence(&self, user: &UserId) -> Result<()> {
        let wake = self.users_sharing_rooms(user)?.into_iter().collect();
        self.record_presence_change(user, wake).await?;
        self.send_presence_edu(user).await
    }

    /// Announces the transitions that time alone causes (idle, gone), and refreshes the shared
    /// record of users connected here so that other readers do not think them gone. Run
    /// periodically. Of processes sharing a store only one `announce`s (each sees the same
    /// transitions in its copy); the others bring their copy up to date silently.
    pub async fn sweep_presence(&self, announce: bool) -> Result<()> {
        let now = now_ms();
        // Refreshed well within the grace period, so other readers never see a connected user gone.
        let refresh_ms = (self.config.presence.offline_grace_secs * 500).min(STORE_EVERY_MS);
        let (transitioned, connected) = {
            let mut entries = self.presence_store.entries.lock().unwrap_or_else(PoisonError::into_inner);
            let mut transitioned = Vec::new();
            let mut connected = Vec::new();
            for (user, entry) in entries.iter_mut() {
                let effective = self.effective(entry, now);
                if effective != entry.announced {
                    entry.announced = effective;
                    if announce {
                        transitioned.push(user.clone());
                    }
                }
                if entry.connections > 0 && now.saturating_sub(entry.stored_ms) > refresh_ms {
                    entry.shared.last_seen_ms = now;
                    entry.stored_ms = now;
                    connected.push((user.clone(), entry.shared.clone()));
                }
            }
            (transitioned, connected)
        };
        for (user, shared) in connected {
            self.store_presence(&user, &shared, None).await;
        }
        for user in transitioned {
            self.announce_presence(&user).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::{OwnedUserId, user_id};

    use super::{Entry, PresenceState, Shared};
    use crate::{
        Homeserver,
        config::HomeserverConfig,
        ephemeral::{EphemeralStore, LocalEphemeral},
        util::now_ms,
    };

    fn entry(chosen: PresenceState, active_ago_s: u64, seen_ago_s: u64, connections: u32) -> Entry {
        let now = now_ms();
        Entry {
            shared: Shared {
                chosen,
                status_msg: None,
                last_active_ms: now - active_ago_s * 1000,
                last_seen_ms: now - seen_ago_s * 1000,
            },
            connections,
            announced: chosen,
            stored_ms: 0,
        }
    }

    #[test]
    fn the_state_others_see_follows_activity_and_connections() {
        let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
        let (idle, grace) = (hs.config.presence.idle_timeout_secs, hs.config.presence.offline_grace_secs);
        let now = now_ms();
        let seen = |e: Entry| hs.effective(&e, now);
        assert_eq!(seen(entry(PresenceState::Online, 1, 1, 1)), PresenceState::Online);
        // Idle past the timeout: unavailable, still connected.
        assert_eq!(seen(entry(PresenceState::Online, idle + 5, 1, 1)), PresenceState::Unavailable);
        // No connection for longer than the grace: gone, whatever was chosen.
        assert_eq!(seen(entry(PresenceState::Online, grace + 5, grace + 5, 0)), PresenceState::Offline);
        assert_eq!(seen(entry(PresenceState::Unavailable, 1, grace + 5, 0)), PresenceState::Offline);
        // A connection keeps a user there however long ago they were last seen.
        assert_eq!(seen(entry(PresenceState::Unavailable, 1, grace + 5, 1)), PresenceState::Unavailable);
        // Chosen offline stays offline.
        assert_eq!(seen(entry(PresenceState::Offline, 0, 0, 1)), PresenceState::Offline);
    }

    #[tokio::test]
    async fn a_change_is_announced_once_and_the_status_message_kept_until_replaced() {
        let hs = Homeserver::for_tests(HomeserverConfig::for_tests());
        let alice: OwnedUserId = user_id!("@alice:localhost").to_owned();
        let before = hs.streams.published();
        hs.set_presence(&alice, PresenceState::Online, Some(Some("lunch".to_owned()))).await.unwrap();
        let after_first = hs.streams.published();
        assert!(after_first > before, "a change goes into the stream");
        hs.set_presence(&alice, PresenceState::Online, None).await.unwrap();
        assert_eq!(hs.streams.published(), after_first, "the same state again is no news");
        let view = hs.presence(&alice);
        assert_eq!((view.state, view.status_msg.as_deref()), (PresenceState::Online, Some("lunch")));
        assert!(view.currently_active);

        hs.set_presence(&alice, PresenceState::Online, Some(None)).await.unwrap();
        assert!(hs.streams.published() > after_first, "clearing the message is news");
        assert_eq!(hs.presence(&alice).status_msg, None);
        let event = hs.presence_event(&alice);
        assert_eq!(event["content"]["presence"], "online");
    }

    #[tokio::test]
    async fn presence_set_in_one_process_is_read_by_another_sharing_the_store() {
        let store: Arc<dyn EphemeralStore> = Arc::new(LocalEphemeral::new());
        let start = || {
            let db = hearth_storage::Db::in_memory();
            Homeserver::new(HomeserverConfig::for_tests(), db, store.clone()).unwrap()
        };
        let (one, two) = (start(), start());
        let alice = user_id!("@alice:localhost");
        one.set_presence(alice, PresenceState::Unavailable, Some(Some("away".to_owned()))).await.unwrap();
        assert_eq!(two.presence(alice).state, PresenceState::Offline, "not fetched yet");
        let view = two.load_presence(alice).await;
        assert_eq!((view.state, view.status_msg.as_deref()), (PresenceState::Unavailable, Some("away")));
    }
}
