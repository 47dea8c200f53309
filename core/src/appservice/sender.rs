//! Transactions: each application service with a URL is pushed what concerns it, in stream
//! order, by one task per service.
//!
//! The service's place is a cursor in the database: the positions it acknowledged, and the
//! transaction in flight with the events chosen for it. The transaction is written down before
//! it is sent and replaced only once the service accepts it, so a service that is down, or a
//! restart of Hearth, never loses an event and never gets one under two transaction IDs:
//! retries resend the same events under the same ID, which the service can recognise.
//! Ephemeral data (typing, receipts, presence, to-device) is read when a transaction is sent
//! and may differ between attempts, as the spec allows for data that is not persisted.

use std::{collections::BTreeSet, ops::Bound, sync::Arc, time::Duration};

use hearth_storage::{
    Batch, Direction,
    records::{AppserviceCursor, InFlightTxn, StreamEntry},
    schema::{AppserviceCursors, Devices, Pdus, Receipts, StreamLog, ToDeviceInbox},
};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::Registration;
use crate::{Homeserver, Result, rooms::servable, users::blocking};

/// At most this many events in one transaction (Synapse's batch size).
const MAX_EVENTS: usize = 100;
/// At most this many ephemeral events, and as many to-device messages, in one transaction.
const MAX_EPHEMERAL: usize = 100;
/// At most this many stream positions read to build one transaction.
const SCAN: usize = 2000;
/// A safety net only: a sender is woken by every publication of the stream.
const POLL: Duration = Duration::from_secs(5);
/// The first and the longest pause after a failed delivery.
const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// What [`Homeserver::plan_transaction`] found to do.
#[derive(Debug)]
pub(super) enum Planned {
    /// Deliver this transaction.
    Send(AppserviceCursor, InFlightTxn),
    /// A window with nothing for the service was acknowledged; more positions wait.
    Skipped,
    /// Nothing is waiting.
    CaughtUp,
}

/// What one transaction carries, as read from storage.
#[derive(Debug, Default)]
pub(super) struct Txn {
    pub(super) events: Vec<Value>,
    ephemeral: Vec<Value>,
    to_device: Vec<Value>,
    /// To-device rows to delete once the service has them: `(user, device, position)`.
    delivered: Vec<(OwnedUserId, ruma::OwnedDeviceId, u64)>,
    device_lists_changed: BTreeSet<OwnedUserId>,
    /// MSC3202: one-time key counts and unused fallback key types of the service's devices.
    key_counts: Map<String, Value>,
    fallback_keys: Map<String, Value>,
}

impl Homeserver {
    /// Pushes transactions to every service with a URL until `stop` completes.
    pub async fn run_appservice_senders(&self, stop: impl std::future::Future<Output = ()> + Send) {
        let senders: Vec<_> = self
            .appservices
            .all()
            .iter()
            .filter(|s| s.url.is_some())
            .map(|service| {
                let (hs, service) = (self.clone(), service.clone());
                async move { hs.run_appservice_sender(service).await }
            })
            .collect();
        if senders.is_empty() {
            return;
        }
        let mut tasks = tokio::task::JoinSet::new();
        for sender in senders {
            tasks.spawn(sender);
        }
        stop.await;
        // Dropping the set aborts the senders: a transaction cut short is resent on start-up.
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }

    async fn run_appservice_sender(&self, service: Arc<Registration>) {
        let mut backoff = BACKOFF_MIN;
        let mut published = self.streams.watch_published();
        loop {
            // Marked seen before looking, so a publication in between still wakes us.
            published.borrow_and_update();
            let pause = match self.appservice_step(&service).await {
                Ok(true) => {
                    backoff = BACKOFF_MIN;
                    continue;
                }
                Ok(false) => POLL,
                Err(error) => {
                    tracing::warn!(appservice = %service.id, %error, retry_in_s = backoff.as_secs(), "could not deliver a transaction to the application service");
                    let pause = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    // Only a ping cuts a failure's pause short.
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.appservices.retry_now(&service.id) => backoff = BACKOFF_MIN,
                    }
                    continue;
                }
            };
            tokio::select! {
                _ = published.changed() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Builds (or takes up again) the next transaction and delivers it. `Ok(true)`: more may be
    /// waiting.
    async fn appservice_step(&self, service: &Arc<Registration>) -> Result<bool> {
        let (hs, svc) = (self.clone(), service.clone());
        let published = self.streams.published();
        let (cursor, in_flight) = match blocking(move || hs.plan_transaction(&svc, published)).await? {
            Planned::Send(cursor, in_flight) => (cursor, in_flight),
            Planned::Skipped => return Ok(true),
            Planned::CaughtUp => return Ok(false),
        };
        let (hs, svc, flight) = (self.clone(), service.clone(), in_flight.clone());
        let txn = blocking(move || hs.read_transaction(&svc, cursor.acked, &flight)).await?;
        let body = transaction_body(service, &txn);
        self.send_to_appservice(
            service,
            http::Method::PUT,
            &format!("transactions/{}", in_flight.txn_id),
            &body,
        )
        .await?;
        let (db, id) = (self.db.clone(), service.id.clone());
        let delivered = txn.delivered;
        blocking(move || {
            let mut batch = Batch::new();
            let next = AppserviceCursor { acked: in_flight.to, in_flight: None, next_txn: cursor.next_txn };
            batch.put::<AppserviceCursors>(&id, &next)?;
            for key in &delivered {
                batch.delete::<ToDeviceInbox>(key);
            }
            Ok(db.write(batch)?)
        })
        .await?;
        tracing::debug!(appservice = %service.id, txn = in_flight.txn_id, events = txn.events.len(), "delivered a transaction");
        Ok(true)
    }

    /// The transaction to send: the one in flight, or a new one over the next positions, written
    /// down before it is sent. Positions with nothing for the service are acknowledged on the
    /// way.
    pub(super) fn plan_transaction(&self, service: &Registration, published: u64) -> Result<Planned> {
        let Some(mut cursor) = self.db.get::<AppserviceCursors>(&service.id)? else {
            // A new service starts from now: it is told what happens from its registration.
            let cursor = AppserviceCursor { acked: published, in_flight: None, next_txn: 1 };
            self.db.put::<AppserviceCursors>(&service.id, &cursor)?;
            return Ok(Planned::CaughtUp);
        };
        if let Some(in_flight) = cursor.in_flight.clone() {
            return Ok(Planned::Send(cursor, in_flight));
        }
        if cursor.acked >= published {
            return Ok(Planned::CaughtUp);
        }
        let mut events = Vec::new();
        let mut ephemeral = 0;
        let mut to = cursor.acked;
        // Whether the window stopped short of `published` (a limit was reached).
        let mut cut = false;
        let mut interest = RoomInterest::default();
        let rows = self.db.range::<StreamLog>(
            Bound::Excluded(&cursor.acked),
            Bound::Included(&published),
            Direction::Forward,
        )?;
        for (scanned, row) in rows.lenient().enumerate() {
            let (pos, entry) = row?;
            if scanned >= SCAN || events.len() >= MAX_EVENTS || ephemeral >= MAX_EPHEMERAL {
                cut = true;
                break;
            }
            to = pos;
            let Some(entry) = entry else { continue };
            match &entry {
                StreamEntry::RoomEvent { room_id, event_id } => {
                    // An event that cannot be read is logged by `get_lenient` and skipped.
                    let Some(record) = self.db.get_lenient::<Pdus>(event_id)? else { continue };
                    let Some(pdu) = servable(event_id, &record) else { continue };
                    let state_key_user = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok());
                    if service.owns_user(&pdu.sender)
                        || state_key_user.is_some_and(|u| service.owns_user(&u))
                        || interest.of(self, service, room_id)?
                    {
                        events.push(pos);
                    }
                }
                other => {
                    if self.ephemeral_interest(service, other, &mut interest)? {
                        ephemeral += 1;
                    }
                }
            }
        }
        if !cut {
            // Everything up to `published` was read, gaps (positions never written) included.
            to = published;
        }
        if events.is_empty() && ephemeral == 0 {
            cursor.acked = to;
            self.db.put::<AppserviceCursors>(&service.id, &cursor)?;
            return Ok(if cut { Planned::Skipped } else { Planned::CaughtUp });
        }
        let in_flight = InFlightTxn { txn_id: cursor.next_txn, to, events };
        cursor.next_txn += 1;
        cursor.in_flight = Some(in_flight.clone());
        self.db.put::<AppserviceCursors>(&service.id, &cursor)?;
        Ok(Planned::Send(cursor, in_flight))
    }

    /// Whether a non-room entry of the stream is for the service (only when it asked for
    /// ephemeral data, or for MSC3202's device data).
    fn ephemeral_interest(
        &self,
        service: &Registration,
        entry: &StreamEntry,
        interest: &mut RoomInterest,
    ) -> Result<bool> {
        Ok(match entry {
            StreamEntry::Typing { room_id } | StreamEntry::Receipt { room_id, .. } => {
                service.receive_ephemeral && interest.of(self, service, room_id)?
            }
            StreamEntry::Presence { user_id } => {
                service.receive_ephemeral && self.shares_interesting_room(service, user_id, interest)?
            }
            StreamEntry::ToDevice { user_id } => service.receive_ephemeral && service.owns_user(user_id),
            StreamEntry::DeviceKeys { user_id } => {
                service.msc3202 && self.shares_interesting_room(service, user_id, interest)?
            }
            StreamEntry::RoomEvent { .. } | StreamEntry::AccountData { .. } => false,
        })
    }

    fn shares_interesting_room(
        &self,
        service: &Registration,
        user: &UserId,
        interest: &mut RoomInterest,
    ) -> Result<bool> {
        if service.owns_user(user) {
            return Ok(true);
        }
        for room in self.rooms.joined_rooms(user)? {
            if interest.of(self, service, &room)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Reads what a planned transaction carries: its events as chosen, and the ephemeral data
    /// of its positions as it is now.
    pub(super) fn read_transaction(
        &self,
        service: &Registration,
        from: u64,
        in_flight: &InFlightTxn,
    ) -> Result<Txn> {
        let mut txn = Txn::default();
        for pos in &in_flight.events {
            let Some(StreamEntry::RoomEvent { event_id, .. }) = self.db.get_lenient::<StreamLog>(pos)? else {
                continue;
            };
            let Some(record) = self.db.get_lenient::<Pdus>(&event_id)? else { continue };
            match self.rooms.client_event(&event_id, &record, &service.sender, None) {
                Ok(event) => txn.events.push(event),
                Err(error) => {
                    // One unreadable event must not hold back the service's queue.
                    tracing::error!(appservice = %service.id, %event_id, %error, "skipping an event that cannot be served");
                }
            }
        }
        let mut interest = RoomInterest::default();
        let mut typing_done = BTreeSet::new();
        let rows = self.db.range::<StreamLog>(
            Bound::Excluded(&from),
            Bound::Included(&in_flight.to),
            Direction::Forward,
        )?;
        for row in rows.lenient() {
            let (pos, entry) = row?;
            let Some(entry) = entry else { continue };
            if matches!(entry, StreamEntry::RoomEvent { .. })
                || !self.ephemeral_interest(service, &entry, &mut interest)?
            {
                continue;
            }
            match entry {
                StreamEntry::Typing { room_id } => {
                    // The room's typing users now; once per transaction is enough.
                    if typing_done.insert(room_id.clone()) {
                        let users = self.rooms.typing_users(&room_id);
                        txn.ephemeral.push(
                            json!({"type": "m.typing", "room_id": room_id, "content": {"user_ids": users}}),
                        );
                    }
                }
                StreamEntry::Receipt { room_id, user_id } => {
                    if let Some(receipt) = self.receipt_event(service, &room_id, &user_id, pos)? {
                        txn.ephemeral.push(receipt);
                    }
                }
                StreamEntry::Presence { user_id } => txn.ephemeral.push(self.presence_event(&user_id)),
                StreamEntry::ToDevice { user_id } => self.to_device_for(&user_id, pos, &mut txn)?,
                StreamEntry::DeviceKeys { user_id } => {
                    txn.device_lists_changed.insert(user_id);
                }
                StreamEntry::RoomEvent { .. } | StreamEntry::AccountData { .. } => {}
            }
        }
        if service.msc3202 {
            (txn.key_counts, txn.fallback_keys) = self.device_key_counts(service, &txn)?;
        }
        Ok(txn)
    }

    /// A user's read receipt recorded at `pos`, as an `m.receipt` event. Private ones are the
    /// user's own business, and stay so unless the service owns the user.
    fn receipt_event(
        &self,
        service: &Registration,
        room_id: &RoomId,
        user: &UserId,
        pos: u64,
    ) -> Result<Option<Value>> {
        let kinds: &[&str] =
            if service.owns_user(user) { &["m.read", "m.read.private"] } else { &["m.read"] };
        for kind in kinds {
            let prefix = (room_id.to_owned(), (*kind).to_owned(), user.to_owned());
            for row in self.db.scan_prefix::<Receipts, _>(&prefix)?.lenient() {
                let ((_, kind, _, thread), record) = row?;
                let Some(record) = record.filter(|r| r.stream_pos == pos) else { continue };
                let mut data = json!({"ts": record.ts});
                if !thread.is_empty() {
                    data["thread_id"] = json!(thread);
                }
                let content = json!({ record.event_id.as_str(): { kind: { user.as_str(): data } } });
                return Ok(Some(json!({"type": "m.receipt", "room_id": room_id, "content": content})));
            }
        }
        Ok(None)
    }

    /// The to-device messages queued at `pos` for the devices the service manages itself
    /// (those with no access token: it created them, MSC4190), as MSC2409 sends them. A device
    /// someone signed in to reads its own messages through `/sync`, and they are never taken
    /// from it.
    fn to_device_for(&self, user: &UserId, pos: u64, txn: &mut Txn) -> Result<()> {
        for row in self.db.scan_prefix::<ToDeviceInbox, _>(&user.to_owned())?.lenient() {
            let ((_, device, at), record) = row?;
            if at != pos {
                continue;
            }
            let managed = self
                .db
                .get::<Devices>(&(user.to_owned(), device.clone()))?
                .is_some_and(|d| d.token_hash.is_none());
            if !managed {
                continue;
            }
            if let Some(record) = record {
                txn.to_device.push(json!({
                    "type": record.event_type,
                    "sender": record.sender,
                    "content": record.content,
                    "to_user_id": user,
                    "to_device_id": device,
                }));
            }
            txn.delivered.push((user.to_owned(), device, at));
        }
        Ok(())
    }

    /// MSC3202: the key counts of the service's users' devices that this transaction concerns.
    fn device_key_counts(
        &self,
        service: &Registration,
        txn: &Txn,
    ) -> Result<(Map<String, Value>, Map<String, Value>)> {
        let mut counts = Map::new();
        let mut fallback = Map::new();
        let users: BTreeSet<&UserId> = txn
            .delivered
            .iter()
            .map(|(u, _, _)| u.as_ref())
            .chain(txn.device_lists_changed.iter().map(AsRef::as_ref))
            .filter(|u| service.owns_user(u) && self.users.is_local(u))
            .collect();
        for user in users {
            let mut user_counts = Map::new();
            let mut user_fallback = Map::new();
            for device in self.users.devices(user)? {
                let c = self.one_time_key_counts(user, &device.device_id)?;
                user_counts.insert(device.device_id.to_string(), json!(c));
                let f = self.unused_fallback_key_types(user, &device.device_id)?;
                user_fallback.insert(device.device_id.to_string(), json!(f));
            }
            counts.insert(user.to_string(), Value::Object(user_counts));
            fallback.insert(user.to_string(), Value::Object(user_fallback));
        }
        Ok((counts, fallback))
    }
}

/// The JSON body of `PUT /transactions/{txnId}`. Ephemeral data goes under both the stable
/// key and MSC2409's, which bridges still read; to-device under MSC2409's (there is no stable
/// one yet).
fn transaction_body(service: &Registration, txn: &Txn) -> Value {
    let mut body = json!({"events": txn.events});
    if service.receive_ephemeral {
        body["ephemeral"] = json!(txn.ephemeral);
        body["de.sorunome.msc2409.ephemeral"] = json!(txn.ephemeral);
        body["de.sorunome.msc2409.to_device"] = json!(txn.to_device);
    }
    if service.msc3202 && !txn.device_lists_changed.is_empty() {
        body["org.matrix.msc3202.device_lists"] = json!({"changed": txn.device_lists_changed, "left": []});
    }
    if service.msc3202 && !txn.key_counts.is_empty() {
        body["org.matrix.msc3202.device_one_time_keys_count"] = Value::Object(txn.key_counts.clone());
        body["org.matrix.msc3202.device_one_time_key_counts"] = Value::Object(txn.key_counts.clone());
        body["org.matrix.msc3202.device_unused_fallback_key_types"] =
            Value::Object(txn.fallback_keys.clone());
    }
    body
}

/// Whether a service is interested in a room, remembered for the rooms one transaction sees:
/// its room ID or one of its local aliases in the service's namespaces, or one of its joined
/// local members the service's.
#[derive(Default)]
struct RoomInterest(std::collections::HashMap<OwnedRoomId, bool>);

impl RoomInterest {
    fn of(&mut self, hs: &Homeserver, service: &Registration, room: &RoomId) -> Result<bool> {
        if let Some(known) = self.0.get(room) {
            return Ok(*known);
        }
        let interested = service.owns_room(room)
            || hs.rooms.local_aliases(room)?.iter().any(|a| service.owns_alias(a))
            || hs.rooms.members(room)?.local.iter().any(|u| service.owns_user(u));
        self.0.insert(room.to_owned(), interested);
        Ok(interested)
    }
}
