//! Typing notifications, read receipts and content reports: room data outside the event graph.

use ruma::events::room::member::MembershipState;
use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use hearth_storage::{
    Batch,
    records::{OutboxItem, ReceiptRecord, ReportRecord, StreamEntry},
    schema::{FederationOutbox, Receipts, Reports},
};
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, UserId,
    api::federation::transactions::edu::{Edu, ReceiptContent, ReceiptData, ReceiptMap, TypingContent},
    events::receipt::{Receipt, ReceiptThread},
};

use super::Rooms;
use crate::{Error, Result, push::ReadScope, users::blocking, util::now_ms};

/// What a report is about.
#[derive(Debug, Clone, Copy)]
pub enum ReportSubject<'a> {
    Event(&'a RoomId, &'a EventId),
    Room(&'a RoomId),
    User(&'a UserId),
}

/// More writes for the batch of a stream entry, given its position.
type Extra = Box<dyn FnOnce(&mut Batch, u64) -> Result<()> + Send>;

/// Who is typing in which room, and until when. Lost on restart, as typing should be. Each
/// process sharing a store keeps a copy, kept current over the bus ([`crate::cluster`]).
#[derive(Debug, Default)]
pub struct Typing {
    rooms: Mutex<HashMap<OwnedRoomId, HashMap<OwnedUserId, Instant>>>,
}

/// An EDU about a local user, as outbox entries for the room's other servers.
#[derive(Default)]
struct QueuedEdu {
    entries: Vec<((String, u64), OutboxItem)>,
    servers: Vec<OwnedServerName>,
}

impl QueuedEdu {
    fn write(&self, batch: &mut Batch) -> Result<()> {
        for (key, item) in &self.entries {
            batch.put::<FederationOutbox>(key, item)?;
        }
        Ok(())
    }
}

/// The longest a client may claim to be typing for.
const MAX_TYPING: Duration = Duration::from_secs(120);

impl Typing {
    /// The users typing in a room now.
    pub fn typing(&self, room_id: &RoomId) -> Vec<OwnedUserId> {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(users) = rooms.get_mut(room_id) else { return Vec::new() };
        let now = Instant::now();
        users.retain(|_, until| *until > now);
        let mut out: Vec<_> = users.keys().cloned().collect();
        out.sort();
        out
    }

    /// Returns whether anything changed.
    fn set(&self, room_id: &RoomId, user: &UserId, timeout: Option<Duration>) -> bool {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        let users = rooms.entry(room_id.to_owned()).or_default();
        match timeout {
            Some(t) => users.insert(user.to_owned(), Instant::now() + t.min(MAX_TYPING)).is_none(),
            None => users.remove(user).is_some(),
        }
    }
}

impl Rooms {
    fn require_joined(&self, room_id: &RoomId, user: &UserId) -> Result<()> {
        if self.membership(room_id, user)? != Some(MembershipState::Join) {
            return Err(Error::forbidden("You are not joined to this room"));
        }
        Ok(())
    }

    /// Queues an EDU about a local user for the room's other servers. Changes to other
    /// servers' users came from federation and are not sent on.
    fn queue_edu(
        &self,
        room_id: &RoomId,
        user: &UserId,
        edu: impl FnOnce() -> Result<Edu>,
    ) -> Result<QueuedEdu> {
        let federation = &self.inner.federation;
        let own = &self.inner.server_name;
        if !federation.enabled() || user.server_name() != own {
            return Ok(QueuedEdu::default());
        }
        let servers: Vec<OwnedServerName> = self.other_servers(room_id)?.into_iter().collect();
        let edu = serde_json::to_value(edu()?).map_err(Error::internal)?;
        let entries = servers
            .iter()
            .map(|s| Ok(((s.to_string(), federation.next_seq()?), OutboxItem::Edu { edu: edu.clone() })))
            .collect::<Result<_>>()?;
        Ok(QueuedEdu { entries, servers })
    }

    /// Starts (with a timeout) or stops a user's typing notification and wakes the room; a
    /// local user's is also queued for the room's other servers, in the same write.
    pub async fn set_typing(&self, room_id: &RoomId, user: &UserId, timeout: Option<Duration>) -> Result<()> {
        self.require_joined(room_id, user)?;
        // On a shared store a stop always goes out: the start may have been made elsewhere
        // and missed here.
        let changed = self.inner.typing.set(room_id, user, timeout);
        if changed || timeout.is_some() || self.inner.streams.is_shared() {
            // Before the stream entry, so that a reader it wakes in another process finds it.
            self.inner.streams.broadcast(crate::cluster::Body::Typing {
                room_id: room_id.to_owned(),
                user_id: user.to_owned(),
                timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            });
            let entry = StreamEntry::Typing { room_id: room_id.to_owned() };
            let queued = self.queue_edu(room_id, user, || {
                Ok(Edu::Typing(TypingContent::new(room_id.to_owned(), user.to_owned(), timeout.is_some())))
            })?;
            let servers = queued.servers.clone();
            let extra: Extra = Box::new(move |batch: &mut Batch, _| queued.write(batch));
            self.write_stream_entry(room_id, entry, Some(extra), None).await?;
            self.inner.federation.poke(servers.iter().map(AsRef::as_ref));
        }
        Ok(())
    }

    pub fn typing_users(&self, room_id: &RoomId) -> Vec<OwnedUserId> {
        self.inner.typing.typing(room_id)
    }

    /// A typing change another process made (and announced in the stream itself).
    pub(crate) fn apply_typing(&self, room_id: &RoomId, user: &UserId, timeout: Option<Duration>) {
        self.inner.typing.set(room_id, user, timeout);
    }

    /// Records a receipt (`m.read`, `m.read.private`) up to an event. A local user's public
    /// receipt is also queued for the room's other servers, in the same write.
    pub async fn set_receipt(
        &self,
        room_id: &RoomId,
        user: &UserId,
        receipt_type: &str,
        event_id: &EventId,
        thread: &str,
    ) -> Result<()> {
        self.require_joined(room_id, user)?;
        let record = self.pdu_record(event_id)?.ok_or_else(|| Error::not_found("Event not found"))?;
        if record.room_id != room_id {
            return Err(Error::not_found("Event not found"));
        }
        let key = (room_id.to_owned(), receipt_type.to_owned(), user.to_owned(), thread.to_owned());
        let entry = StreamEntry::Receipt { room_id: room_id.to_owned(), user_id: user.to_owned() };
        let queued = if receipt_type == "m.read" {
            self.queue_edu(room_id, user, || {
                let mut data = Receipt::new(MilliSecondsSinceUnixEpoch::now());
                data.thread = ReceiptThread::try_from((!thread.is_empty()).then_some(thread))
                    .map_err(|e| Error::invalid_param(format!("Invalid thread ID: {e}")))?;
                let read = [(user.to_owned(), ReceiptData::new(data, vec![event_id.to_owned()]))].into();
                Ok(Edu::Receipt(ReceiptContent::new([(room_id.to_owned(), ReceiptMap::new(read))].into())))
            })?
        } else {
            QueuedEdu::default()
        };
        let servers = queued.servers.clone();
        let event_id = event_id.to_owned();
        // Private receipts wake only their owner.
        let only = (receipt_type == "m.read.private").then(|| vec![user.to_owned()]);
        // A read receipt reads the notifications up to its event, in its thread.
        let read = match (receipt_type, record.stream_pos, ReadScope::of_receipt_thread(thread)) {
            ("m.read" | "m.read.private", Some(up_to), Some(scope)) => Some((up_to, scope)),
            _ => None,
        };
        let (db, reader, room) = (self.db().clone(), user.to_owned(), room_id.to_owned());
        let extra: Extra = Box::new(move |batch: &mut Batch, pos| {
            batch.put::<Receipts>(&key, &ReceiptRecord { event_id, ts: now_ms(), stream_pos: pos })?;
            if let Some((up_to, scope)) = read {
                crate::push::mark_read(&db, batch, &reader, &room, up_to, &scope)?;
            }
            queued.write(batch)
        });
        self.write_stream_entry(room_id, entry, Some(extra), only).await?;
        self.inner.federation.poke(servers.iter().map(AsRef::as_ref));
        Ok(())
    }

    /// The receipts of a room: `(type, user, thread, record)`.
    pub fn receipts(&self, room_id: &RoomId) -> Result<Vec<(String, OwnedUserId, String, ReceiptRecord)>> {
        self.db()
            .scan_prefix::<Receipts, _>(&room_id.to_owned())?
            .map(|e| {
                e.map(|((_, kind, user, thread), record)| (kind, user, thread, record)).map_err(Into::into)
            })
            .collect()
    }

    /// Stores a report (of an event, a room, or a user) for the server's admins.
    pub async fn report(
        &self,
        reporter: &UserId,
        subject: ReportSubject<'_>,
        reason: Option<String>,
        score: Option<i64>,
    ) -> Result<()> {
        let db = self.db().clone();
        let (room_id, event_id, user_id) = match subject {
            ReportSubject::Event(room, event) => (Some(room.to_owned()), Some(event.to_owned()), None),
            ReportSubject::Room(room) => (Some(room.to_owned()), None, None),
            ReportSubject::User(user) => (None, None, Some(user.to_owned())),
        };
        let record = ReportRecord {
            reporter: reporter.to_owned(),
            room_id,
            event_id,
            user_id,
            reason,
            ts: now_ms(),
            score,
        };
        blocking(move || {
            let id = db.next_id("report")?;
            db.put::<Reports>(&id, &record)?;
            Ok(())
        })
        .await?;
        tracing::info!(%reporter, "report received");
        Ok(())
    }

    /// Writes a stream entry (and whatever else `extra` adds to the batch) at a new position and
    /// wakes `wake`, or else the room's joined members.
    async fn write_stream_entry(
        &self,
        room_id: &RoomId,
        entry: StreamEntry,
        extra: Option<Extra>,
        wake: Option<Vec<OwnedUserId>>,
    ) -> Result<()> {
        let wake: std::sync::Arc<[OwnedUserId]> = match wake {
            Some(users) => users.into(),
            None => self.members(room_id)?.local.clone(),
        };
        self.inner
            .streams
            .write(self.db(), wake, move |batch, pos| {
                if let Some(extra) = extra {
                    extra(batch, pos)?;
                }
                Ok(entry)
            })
            .await?;
        Ok(())
    }
}
