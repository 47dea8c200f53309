//! The shapes stored as table values. They are JSON, so a field added later with
//! `#[serde(default)]` reads old records without a migration.

use ruma::{OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};

use crate::json_value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRecord {
    /// Argon2 PHC string; `None` for accounts that cannot log in with a password (guests, SSO).
    pub password_hash: Option<String>,
    pub created_ts: u64,
    #[serde(default)]
    pub is_guest: bool,
    #[serde(default)]
    pub is_admin: bool,
    #[serde(default)]
    pub deactivated: bool,
    /// Locked by an admin: the account's tokens stay, but every request is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub locked: bool,
    /// Shadow-banned by an admin: what the user sends to rooms is acknowledged and dropped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow_banned: bool,
    /// Deactivated with `erase`: the profile is gone for good.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub erased: bool,
    /// `bot`, `support` or none: what the account is, as admins classify it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub display_name: Option<String>,
    pub created_ts: u64,
    pub last_seen_ts: Option<u64>,
    pub last_seen_ip: Option<String>,
    /// Hash of the device's current access token, so that deleting the device revokes it.
    pub token_hash: Option<Vec<u8>>,
    /// Hash of the device's current refresh token, when its session is refreshable.
    #[serde(default)]
    pub refresh_token_hash: Option<Vec<u8>>,
    /// The `User-Agent` of the device's latest request, for admins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_user_agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenRecord {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub created_ts: u64,
    #[serde(default)]
    pub is_guest: bool,
    /// When a refreshable token stops working (ms since the epoch); `None` never expires.
    #[serde(default)]
    pub expires_ts: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshTokenRecord {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub created_ts: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountDataRecord {
    pub content: serde_json::Value,
    /// Stream position of the last change, for incremental sync.
    pub stream_pos: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerKeyRecord {
    /// PKCS#8 DER of the ed25519 key pair, base64 (standard, unpadded).
    pub pkcs8_b64: String,
    pub created_ts: u64,
    /// When set, the key is retired and published as an old verify key until then.
    #[serde(default)]
    pub expired_ts: Option<u64>,
}

/// What happened at a position of the global stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamEntry {
    RoomEvent {
        room_id: OwnedRoomId,
        event_id: OwnedEventId,
    },
    AccountData {
        user_id: OwnedUserId,
        room_id: Option<OwnedRoomId>,
        event_type: String,
    },
    Receipt {
        room_id: OwnedRoomId,
        user_id: OwnedUserId,
    },
    Typing {
        room_id: OwnedRoomId,
    },
    /// A user's device or cross-signing keys changed.
    DeviceKeys {
        user_id: OwnedUserId,
    },
    /// A to-device message (or several) arrived for a user.
    ToDevice {
        user_id: OwnedUserId,
    },
    /// A user's presence changed.
    Presence {
        user_id: OwnedUserId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackKeyRecord {
    pub key_id: String,
    pub key: serde_json::Value,
    pub used: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToDeviceRecord {
    pub sender: OwnedUserId,
    pub event_type: String,
    pub content: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupVersionRecord {
    pub algorithm: String,
    pub auth_data: serde_json::Value,
    /// Changes whenever the keys in the version change.
    pub etag: u64,
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRecord {
    pub event_id: OwnedEventId,
    pub ts: u64,
    pub stream_pos: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportRecord {
    pub reporter: OwnedUserId,
    /// The room reported, or the room of the event reported; `None` for a report of a user.
    #[serde(default)]
    pub room_id: Option<OwnedRoomId>,
    pub event_id: Option<OwnedEventId>,
    /// The user reported (`/users/{userId}/report`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<OwnedUserId>,
    pub reason: Option<String>,
    pub ts: u64,
    /// The reporter's rating of an event, -100 (most offensive) to 0, when they gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PduRecord {
    pub room_id: OwnedRoomId,
    /// The full PDU as canonical JSON, hashes and signatures included (redacted once redacted).
    pub json: String,
    /// Position in the stream and the room timeline; `None` for outliers.
    pub stream_pos: Option<u64>,
    /// State group of the room state after this event.
    pub state_group: u64,
    #[serde(default)]
    pub redacted_by: Option<OwnedEventId>,
    /// The device and transaction ID the sender used, echoed to that device only.
    #[serde(default)]
    pub txn: Option<(OwnedDeviceId, String)>,
    /// For a state event, the event it replaced in the room state.
    #[serde(default)]
    pub replaces_state: Option<OwnedEventId>,
    /// For history fetched from another server: its place in `room_backfill` (it has no
    /// stream position, so sync never sends it as new).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<u64>,
    /// Received while some of its prev events were not in the timeline here: history is
    /// missing just before it, so sync marks its timeline as `limited` from this event on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gap_before: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRecord {
    pub version: String,
    pub forward_extremities: Vec<OwnedEventId>,
    pub current_state_group: u64,
    pub max_depth: u64,
    /// Joined local members, kept in step with the membership events.
    #[serde(default)]
    pub joined_count: u64,
}

/// A state group is a delta on its parent, or a full snapshot when `parent` is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateGroupRecord {
    pub parent: Option<u64>,
    /// How many deltas lie between this group and its snapshot.
    pub chain_len: u32,
    /// `(type, state_key, event_id)`.
    pub entries: Vec<(String, String, OwnedEventId)>,
    /// A snapshot whose entries are rows of `state_snapshot_entries` (one lookup reads one row)
    /// rather than `entries` (snapshots written before that table existed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rows: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipRecord {
    /// Stored as its string, as before it was typed.
    pub membership: ruma::events::room::member::MembershipState,
    pub event_id: OwnedEventId,
    pub stream_pos: u64,
    #[serde(default)]
    pub forgotten: bool,
}

/// What a local user knows of a room this server is not in, from an invite or a knock: the
/// stripped state shown in their /sync, and the servers to ask when they join or leave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutsideRoomRecord {
    pub room_version: String,
    /// Stripped state events (`type`, `state_key`, `content`, `sender`).
    pub stripped_state: Vec<serde_json::Value>,
    pub servers: Vec<ruma::OwnedServerName>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub room_id: OwnedRoomId,
    pub creator: OwnedUserId,
}

/// A public signing key of another server, as verified from its key response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteKeyRecord {
    /// Unpadded standard base64, as published.
    pub key: String,
    /// Until when the server vouches for the key (`valid_until_ts`), or when it was retired
    /// (`expired_ts` of an old key): events signed after it are not accepted with it.
    pub valid_until_ts: u64,
}

/// Something waiting to be sent to one destination server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutboxItem {
    /// A PDU by ID; its JSON is read from `Pdus` when sent.
    Pdu { event_id: OwnedEventId },
    /// An EDU as sent (`edu_type`, `content`).
    Edu { edu: serde_json::Value },
}

/// A media item. `sha256` is `None` while an asynchronous upload is reserved but not yet sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    /// Hex SHA-256 of the content, which names its file.
    pub sha256: Option<String>,
    pub size: u64,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    /// The local user who uploaded (or reserved) it; `None` for remote media.
    pub uploader: Option<OwnedUserId>,
    pub created_ts: u64,
    /// For a reservation: when it lapses if nothing has been uploaded.
    #[serde(default)]
    pub expires_ts: Option<u64>,
    /// The admin who quarantined it: it is then served to nobody.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined_by: Option<OwnedUserId>,
    /// Protected by an admin from quarantine and from bulk deletion.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThumbnailRecord {
    pub sha256: String,
    pub size: u64,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
}

/// An unread notification of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushActionRecord {
    /// The thread root when the event is in a thread; `None` for the main timeline.
    pub thread: Option<OwnedEventId>,
    pub highlight: bool,
}

/// A notification as `GET /notifications` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRecord {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    /// The push rule actions that applied, as JSON.
    pub actions: serde_json::Value,
    pub highlight: bool,
    pub ts: u64,
}

/// A pusher as the client set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PusherRecord {
    /// The client's pusher fields (`kind`, `app_display_name`, `data`, ...), validated.
    pub pusher: serde_json::Value,
    /// The device whose access token set it: logging that device out deletes the pusher.
    pub device_id: Option<OwnedDeviceId>,
    pub created_ts: u64,
}

/// A notification queued for one pusher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushQueueItem {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    /// The push rule actions that applied, as JSON (they carry the tweaks sent to the gateway).
    pub actions: serde_json::Value,
    /// When it was queued (ms since the epoch), to give up on very old ones.
    pub ts: u64,
}

/// A registration token an admin issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationTokenRecord {
    /// Registrations it may complete; `None` for any number.
    pub uses_allowed: Option<u64>,
    /// Registrations under way with it (the token stage passed, the account not yet made).
    pub pending: u64,
    /// Registrations completed with it.
    pub completed: u64,
    /// When it stops being valid (ms since the epoch).
    pub expiry_time: Option<u64>,
}

/// A room an admin deleted (or is deleting), by delete ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomDeletionRecord {
    pub room_id: OwnedRoomId,
    /// `scheduled`, `active`, `complete` or `failed`.
    pub status: String,
    /// What the shutdown did, once it ran: Synapse's `shutdown_room` object.
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub ts: u64,
}

/// An admin's replacement for a user's per-action rate limits (Synapse's
/// `override_ratelimit`); zero for both means no limit at all.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimitOverride {
    pub per_second: f64,
    pub burst_count: u32,
}

/// An event that relates to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationRecord {
    pub event_id: OwnedEventId,
    pub sender: OwnedUserId,
    pub rel_type: String,
    pub event_type: String,
}

json_value!(
    RateLimitOverride,
    RegistrationTokenRecord,
    RoomDeletionRecord,
    AppserviceCursor,
    DelayedEventRecord,
    FinalisedDelayedRecord,
    RelationRecord,
    PushActionRecord,
    NotificationRecord,
    PusherRecord,
    PushQueueItem,
    RemoteKeyRecord,
    OutsideRoomRecord,
    OutboxItem,
    AccountRecord,
    DeviceRecord,
    AccessTokenRecord,
    RefreshTokenRecord,
    AccountDataRecord,
    ServerKeyRecord,
    StreamEntry,
    PduRecord,
    RoomRecord,
    StateGroupRecord,
    MembershipRecord,
    AliasRecord,
    ReceiptRecord,
    ReportRecord,
    FallbackKeyRecord,
    ToDeviceRecord,
    BackupVersionRecord,
    MediaRecord,
    ThumbnailRecord,
);

/// An event scheduled to be sent later (MSC4140), as its sender asked for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelayedEventRecord {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub room_id: OwnedRoomId,
    pub event_type: String,
    /// `Some` for a state event.
    pub state_key: Option<String>,
    pub content: serde_json::Value,
    pub delay_ms: u64,
    /// When the delay last started (scheduling or the latest restart), ms since the epoch.
    pub running_since: u64,
    /// The stream position published when it was scheduled: state set by someone else after it
    /// supersedes a delayed state event.
    pub scheduled_at_pos: u64,
}

impl DelayedEventRecord {
    /// When it is due, ms since the epoch.
    pub fn due(&self) -> u64 {
        self.running_since.saturating_add(self.delay_ms)
    }
}

/// What became of a delayed event, kept for a while for the sender's listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalisedDelayedRecord {
    pub delay_id: String,
    pub event: DelayedEventRecord,
    /// `send` or `cancel`.
    pub outcome: String,
    /// `delay` (its time came), `action` (someone asked) or `error` (sending failed).
    pub reason: String,
    /// The Matrix error that kept it from being sent.
    pub error: Option<serde_json::Value>,
    pub event_id: Option<OwnedEventId>,
    pub finalised_ts: u64,
}

/// Where an application service is in the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppserviceCursor {
    /// Every position up to here was delivered (or had nothing for the service).
    pub acked: u64,
    /// The transaction being delivered: its ID and the positions it covers, `(acked, to]`.
    /// Kept until the service accepts it, so a retry (after a restart too) resends the same
    /// events under the same ID and the service can drop what it already has.
    #[serde(default)]
    pub in_flight: Option<InFlightTxn>,
    /// The next transaction ID.
    #[serde(default)]
    pub next_txn: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlightTxn {
    pub txn_id: u64,
    pub to: u64,
    /// The positions of the room events it carries, chosen when it was first built, so that a
    /// resend carries the same events even if the rooms' members changed meanwhile.
    pub events: Vec<u64>,
}
