//! The catalog: every table (column family) Hearth stores, with the types of its keys and values.
//! The engine opens exactly these; nothing else in the workspace names a column family.

use ruma::{
    OwnedDeviceId, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedServerName, OwnedUserId,
    events::room::member::MembershipState,
};

use crate::{
    codec::{KeyCodec, ValueCodec},
    records::{
        AccessTokenRecord, AccountDataRecord, AccountRecord, AliasRecord, AppserviceCursor,
        BackupVersionRecord, DelayedEventRecord, DeviceRecord, FallbackKeyRecord, FinalisedDelayedRecord,
        MediaRecord, MembershipRecord, NotificationRecord, OutboxItem, OutsideRoomRecord, PduRecord,
        PushActionRecord, PushQueueItem, PusherRecord, RateLimitOverride, ReceiptRecord, RefreshTokenRecord,
        RegistrationTokenRecord, RelationRecord, RemoteKeyRecord, ReportRecord, RoomDeletionRecord,
        RoomRecord, ServerKeyRecord, StateGroupRecord, StreamEntry, ThumbnailRecord, ToDeviceRecord,
    },
};

/// A typed column family.
pub trait Table: 'static {
    const CF: &'static str;
    type Key: KeyCodec;
    type Value: ValueCodec;
}

macro_rules! tables {
    ($( $(#[$doc:meta])* $name:ident $cf:literal : $key:ty => $value:ty; )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $name;
            impl Table for $name {
                const CF: &'static str = $cf;
                type Key = $key;
                type Value = $value;
            }
        )*
        /// Every column family in the catalog, in declaration order.
        pub const ALL_TABLES: &[&str] = &[$($cf),*];
    };
}

tables! {
    /// Named scalars: the schema version, id counters.
    Meta "meta": String => u64;
    /// The server's own signing keys by key id (`ed25519:...`).
    ServerSigningKeys "server_signing_keys": String => ServerKeyRecord;
    /// Local accounts.
    Accounts "accounts": OwnedUserId => AccountRecord;
    /// Devices of local accounts.
    Devices "devices": (OwnedUserId, OwnedDeviceId) => DeviceRecord;
    /// Access tokens, keyed by the SHA-256 of the token: the token itself is never stored.
    AccessTokens "access_tokens": Vec<u8> => AccessTokenRecord;
    /// Refresh tokens, keyed by the SHA-256 of the token, like access tokens.
    RefreshTokens "refresh_tokens": Vec<u8> => RefreshTokenRecord;
    /// Single sign-on links: which local user an identity provider's subject signs in as.
    SsoLinks "sso_links": (String, String) => OwnedUserId;
    /// The same links by user and provider (to the subject), for re-authentication.
    UserSsoLinks "user_sso_links": (OwnedUserId, String) => String;
    /// Profile fields (`displayname`, `avatar_url`, and extended fields) per user.
    ProfileFields "profile_fields": (OwnedUserId, String) => serde_json::Value;
    /// Global account data per user and event type.
    GlobalAccountData "global_account_data": (OwnedUserId, String) => AccountDataRecord;
    /// Per-room account data per user, room and event type.
    RoomAccountData "room_account_data": (OwnedUserId, OwnedRoomId, String) => AccountDataRecord;
    /// Sync filters per user and filter id.
    Filters "filters": (OwnedUserId, u64) => serde_json::Value;

    /// Every position of the global stream that carries something a client syncs, in order.
    /// Its last key is where the stream resumes after a restart.
    StreamLog "stream_log": u64 => StreamEntry;
    /// Every PDU this server has, with where it sits in its room.
    Pdus "pdus": OwnedEventId => PduRecord;
    /// Each room's timeline in stream order.
    RoomTimeline "room_timeline": (OwnedRoomId, u64) => OwnedEventId;
    /// History fetched from other servers (backfill), older than everything in `room_timeline`:
    /// keyed by how far back it lies, 1 being just before the room's earliest timeline event.
    RoomBackfill "room_backfill": (OwnedRoomId, u64) => OwnedEventId;
    /// Rooms this server takes part in: version, forward extremities, current state group.
    Rooms "rooms": OwnedRoomId => RoomRecord;
    /// Room state as snapshots and deltas; a PDU points at the group of the state after it.
    StateGroups "state_groups": u64 => StateGroupRecord;
    /// The entries of snapshot state groups, `(group, type, state_key)`, so that one entry of
    /// a big room's snapshot is one read, not a decode of the whole state.
    StateSnapshotEntries "state_snapshot_entries": (u64, String, String) => OwnedEventId;
    /// The current state of each room by `(type, state_key)`, kept in step with its state group.
    CurrentState "current_state": (OwnedRoomId, String, String) => OwnedEventId;
    /// Every member of each room (any server) with their current membership.
    RoomMembers "room_members": (OwnedRoomId, OwnedUserId) => MembershipState;
    /// Each local user's latest membership in each room.
    UserRooms "user_rooms": (OwnedUserId, OwnedRoomId) => MembershipRecord;
    /// Rooms this server is not in where a local user is invited or has knocked: their
    /// stripped state and the servers to reach them through.
    OutsideRooms "outside_rooms": (OwnedUserId, OwnedRoomId) => OutsideRoomRecord;
    /// Client transaction IDs of sent events, for idempotent retries: user, device, and the
    /// endpoint's path from the room ID on, transaction ID included (keys written before the
    /// scope held the bare ID; they can only miss, which costs at most a retry's dedup).
    TxnIds "txn_ids": (OwnedUserId, OwnedDeviceId, String) => OwnedEventId;
    /// Room aliases of this server.
    Aliases "aliases": OwnedRoomAliasId => AliasRecord;
    /// The aliases of each room.
    RoomAliases "room_aliases": (OwnedRoomId, OwnedRoomAliasId) => ();
    /// Rooms published in this server's room directory.
    PublicRooms "public_rooms": OwnedRoomId => ();
    /// Rooms an application service publishes in its own network's directory, by third-party
    /// instance ID (`<service>|<network>`): listed only to clients that ask for that network.
    NetworkRooms "network_rooms": (String, OwnedRoomId) => ();
    /// Read receipts by room, receipt type, user and thread (`""` for the main timeline).
    Receipts "receipts": (OwnedRoomId, String, OwnedUserId, String) => ReceiptRecord;
    /// Content reports for the server's admins, in arrival order.
    Reports "reports": u64 => ReportRecord;
    /// Each device's signed identity keys, as uploaded.
    DeviceKeys "device_keys": (OwnedUserId, OwnedDeviceId) => serde_json::Value;
    /// Unclaimed one-time keys by device, algorithm and key ID.
    OneTimeKeys "one_time_keys": (OwnedUserId, OwnedDeviceId, String, String) => serde_json::Value;
    /// The order one-time keys arrived in, so claims hand out the oldest first (spec v1.16,
    /// MSC4225): `upload number << 16 | position in the upload` → key ID. Keys stored before
    /// this table have no entry and are claimed, by key ID, once the ordered ones run out.
    OneTimeKeyOrder "one_time_key_order": (OwnedUserId, OwnedDeviceId, String, u64) => String;
    /// The fallback key of each device and algorithm.
    FallbackKeys "fallback_keys": (OwnedUserId, OwnedDeviceId, String) => FallbackKeyRecord;
    /// Cross-signing keys by user and usage (`master`, `self_signing`, `user_signing`).
    CrossSigningKeys "cross_signing_keys": (OwnedUserId, String) => serde_json::Value;
    /// To-device messages waiting for their device, by stream position.
    ToDeviceInbox "to_device_inbox": (OwnedUserId, OwnedDeviceId, u64) => ToDeviceRecord;
    /// Transaction IDs of sent to-device messages, for idempotent retries.
    ToDeviceTxns "to_device_txns": (OwnedUserId, OwnedDeviceId, String) => ();
    /// The last device-list stream ID announced to other servers for each local user: the
    /// `prev_id` of the next `m.device_list_update`.
    DeviceListStreamIds "device_list_stream_ids": OwnedUserId => u64;
    /// Message IDs of to-device messages received from other servers, by sender, so a
    /// retried EDU is delivered once.
    RemoteToDeviceIds "remote_to_device_ids": (OwnedUserId, String) => ();
    /// Key backup versions per user.
    BackupVersions "backup_versions": (OwnedUserId, u64) => BackupVersionRecord;
    /// Backed-up room keys by user, version, room and session.
    BackupKeys "backup_keys": (OwnedUserId, u64, OwnedRoomId, String) => serde_json::Value;

    /// Verified signing keys of other servers by server name and key ID.
    RemoteServerKeys "remote_server_keys": (String, String) => RemoteKeyRecord;
    /// The last verified key response of each server, exactly as it signed it, for answering
    /// notary queries (`/_matrix/key/v2/query`).
    RemoteKeyResponses "remote_key_responses": String => String;
    /// What each destination server has yet to receive, in order: a durable queue that
    /// survives restarts and outages of the peer.
    FederationOutbox "federation_outbox": (String, u64) => OutboxItem;
    /// Results of transactions received, by origin and transaction ID, so a retried
    /// transaction is answered the same without being processed twice.
    InboundTxns "inbound_txns": (String, String) => serde_json::Value;
    /// Media by origin server and media ID: this server's uploads (and reservations of
    /// asynchronous uploads) and cached copies of remote media. The bytes live in files named by
    /// their SHA-256, outside the database.
    Media "media": (OwnedServerName, String) => MediaRecord;
    /// Asynchronous uploads each user has reserved and not yet sent, with their expiry (ms).
    MediaReservations "media_reservations": (OwnedUserId, String) => u64;
    /// Thumbnails by the SHA-256 of their source content, width, height and method (`crop`,
    /// `scale`), so identical uploads share them.
    MediaThumbnails "media_thumbnails": (String, u32, u32, String) => ThumbnailRecord;
    /// Unread notifications: each event whose push rules notified a local user, by user, room
    /// and the event's stream position, until a read receipt (or the user's own message) covers
    /// it. The unread counts of /sync are these rows.
    PushActions "push_actions": (OwnedUserId, OwnedRoomId, u64) => PushActionRecord;
    /// Every notification of a local user by stream position, read or not, for
    /// `GET /notifications`.
    Notifications "notifications": (OwnedUserId, u64) => NotificationRecord;
    /// Pushers by user, app ID and pushkey.
    Pushers "pushers": (OwnedUserId, String, String) => PusherRecord;
    /// The users with a pusher of an app ID and pushkey, so that a new pusher without `append`
    /// can replace other users' pushers of the same device.
    PusherKeys "pusher_keys": (String, String, OwnedUserId) => ();
    /// Notifications waiting for a pusher, by user, app ID, pushkey and stream position: each
    /// pusher's own queue, deleted once delivered or with the pusher.
    PushQueue "push_queue": (OwnedUserId, String, String, u64) => PushQueueItem;
    /// Events that relate to an event (`m.relates_to` with a `rel_type`), by the related-to
    /// event and the relating event's stream position.
    Relations "relations": (OwnedEventId, u64) => RelationRecord;
    /// Each thread's latest activity (the stream position of its newest reply), by room and root.
    ThreadRoots "thread_roots": (OwnedRoomId, OwnedEventId) => u64;
    /// Threads by room and latest activity, newest last: what `/threads` pages through.
    ThreadActivity "thread_activity": (OwnedRoomId, u64) => OwnedEventId;
    /// Events scheduled to be sent later (MSC4140), by delay ID.
    DelayedEvents "delayed_events": String => DelayedEventRecord;
    /// The same by when they are due (ms since the epoch): what the timer sends next.
    DelayedDue "delayed_due": (u64, String) => ();
    /// The same by sender, for listings and the per-user cap.
    DelayedByUser "delayed_by_user": (OwnedUserId, String) => ();
    /// Transactions of delayed events by sender, device and room/transaction ID, so that a
    /// retried request gets the same delay ID.
    DelayedTxns "delayed_txns": (OwnedUserId, OwnedDeviceId, String) => String;
    /// Delayed events sent or cancelled, by sender and when, kept a week for their listing.
    DelayedFinalised "delayed_finalised": (OwnedUserId, u64, String) => FinalisedDelayedRecord;
    /// Each application service's place in the stream: what it acknowledged and the
    /// transaction in flight, by the service's ID.
    AppserviceCursors "appservice_cursors": String => AppserviceCursor;
    /// Per-user rate limits an admin set in place of the configured ones.
    RateLimitOverrides "rate_limit_overrides": OwnedUserId => RateLimitOverride;
    /// Registration tokens admins issued, by token.
    RegistrationTokens "registration_tokens": String => RegistrationTokenRecord;
    /// Rooms admins blocked, with the admin who did: local users may not join or be invited.
    BlockedRooms "blocked_rooms": OwnedRoomId => OwnedUserId;
    /// Room deletions admins asked for, by delete ID.
    RoomDeletions "room_deletions": String => RoomDeletionRecord;
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::ALL_TABLES;

    #[test]
    fn column_family_names_are_unique() {
        let set: HashSet<_> = ALL_TABLES.iter().collect();
        assert_eq!(set.len(), ALL_TABLES.len());
    }
}
