//! What processes sharing a store tell each other over the [`StreamBus`], beyond what the
//! store holds: the news of stream positions, and the changes to the short-lived state that
//! every process keeps a copy of (typing, presence) because readers on the sync path look it
//! up without a round trip.
//!
//! A process publishes its messages in order, and writes a change to typing or presence to
//! its copy and to the bus before the stream entry that announces it; so any reader woken by
//! that entry's news finds the change in its own process's copy.
//!
//! [`StreamBus`]: crate::sync::stream::StreamBus

use std::time::Duration;

use ruma::{OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};

use crate::{
    Homeserver,
    presence::{PresenceState, RemotePresence, Shared},
    sync::stream::News,
};

/// One message on the bus.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// The sending process, so that it skips its own messages.
    pub node: String,
    pub body: Body,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Body {
    /// A position was written.
    News(News),
    /// A user started (`timeout_ms`) or stopped typing in a room.
    Typing { room_id: OwnedRoomId, user_id: OwnedUserId, timeout_ms: Option<u64> },
    /// A local user's presence record as the sender stored it, and the state it announced
    /// with it, if it did.
    Presence { user_id: OwnedUserId, record: Shared, announced: Option<PresenceState> },
    /// What another server said about one of its users.
    RemotePresence { user_id: OwnedUserId, presence: RemotePresence },
}

impl Homeserver {
    /// Takes a message another process published on the bus. One that does not parse (a
    /// process of another version) is logged and skipped.
    pub fn receive_from_bus(&self, message: &[u8]) {
        let envelope: Envelope = match serde_json::from_slice(message) {
            Ok(envelope) => envelope,
            Err(error) => {
                tracing::warn!(%error, "skipping a bus message that does not parse");
                return;
            }
        };
        if self.streams.is_own(&envelope.node) {
            return;
        }
        match envelope.body {
            Body::News(news) => self.streams.receive_news(news),
            Body::Typing { room_id, user_id, timeout_ms } => {
                self.rooms.apply_typing(&room_id, &user_id, timeout_ms.map(Duration::from_millis));
            }
            Body::Presence { user_id, record, announced } => self.apply_presence(&user_id, record, announced),
            Body::RemotePresence { user_id, presence } => self.remember_remote_presence(&user_id, presence),
        }
    }
}
