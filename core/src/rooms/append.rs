//! The local write path: build, authorize and persist one event.

use ruma::events::room::member::MembershipState;
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use hearth_storage::{
    Batch,
    records::{MembershipRecord, OutboxItem, PduRecord, RoomRecord},
    schema::{CurrentState, FederationOutbox, Pdus, RoomMembers, Rooms as RoomsTable, TxnIds, UserRooms},
};
use ruma::{
    CanonicalJsonObject, EventId, OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId,
    RoomId, UserId, canonical_json::redact, events::TimelineEventType,
};

use super::{Rooms, state};
use crate::{
    Error, ErrorCode, Result,
    events::{
        NewEvent, Pdu, auth,
        pdu::{Placement, build_and_sign, parse_object, to_json_string},
    },
    sync::stream::Ticket,
    users::blocking,
};

/// Who sent an event from which device and transaction, for idempotency and echo.
pub type Txn = (OwnedDeviceId, String);

/// Where a client transaction is remembered. The spec scopes a transaction ID to the device and
/// the endpoint it was sent to, path parameters included (as Synapse keys it on the path), so
/// the same ID in another room, for another event type or redacting another event is another
/// request.
type TxnKey = (OwnedUserId, OwnedDeviceId, String);

fn txn_key(sender: &UserId, room_id: &RoomId, new: &NewEvent, txn: &Txn) -> TxnKey {
    let endpoint = match &new.redacts {
        Some(redacts) => TxnEndpoint::Redact(redacts),
        None => TxnEndpoint::Send(&new.kind),
    };
    endpoint_txn_key(sender, room_id, endpoint, txn)
}

fn endpoint_txn_key(
    sender: &UserId,
    room_id: &RoomId,
    endpoint: TxnEndpoint<'_>,
    (device, txn_id): &Txn,
) -> TxnKey {
    let endpoint = match endpoint {
        TxnEndpoint::Redact(redacts) => format!("{room_id}/redact/{redacts}/{txn_id}"),
        TxnEndpoint::Send(kind) => format!("{room_id}/send/{kind}/{txn_id}"),
    };
    (sender.to_owned(), device.clone(), endpoint)
}

/// The endpoint a client transaction was sent to.
#[derive(Debug, Clone, Copy)]
pub enum TxnEndpoint<'a> {
    Send(&'a TimelineEventType),
    Redact(&'a EventId),
}

pub(super) struct Appended {
    pub event_id: OwnedEventId,
    pub ticket: Ticket,
    pub wake: Arc<[OwnedUserId]>,
    /// Servers whose outbox received the event in the same batch.
    pub destinations: BTreeSet<OwnedServerName>,
}

impl Rooms {
    /// The event a client transaction already produced: a retry is answered with it (and is
    /// not counted against the sender's limits a second time).
    pub fn txn_event(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        endpoint: TxnEndpoint<'_>,
        txn: &Txn,
    ) -> Result<Option<OwnedEventId>> {
        Ok(self.db().get::<TxnIds>(&endpoint_txn_key(sender, room_id, endpoint, txn))?)
    }

    /// Sends an event into a room as a local user, serialized with the room's other writes.
    pub async fn append(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        new: NewEvent,
        txn: Option<Txn>,
    ) -> Result<OwnedEventId> {
        let _guard = self.lock(room_id).await?;
        let txn = txn.map(|txn| (txn_key(sender, room_id, &new, &txn), txn));
        if let Some((key, _)) = &txn
            && let Some(existing) = self.db().get::<TxnIds>(key)?
        {
            return Ok(existing);
        }
        let this = self.clone();
        let (room_id, sender) = (room_id.to_owned(), sender.to_owned());
        let appended = blocking(move || this.append_blocking(&room_id, &sender, &new, txn)).await?;
        Ok(self.publish(appended))
    }

    /// Wakes the readers and the federation sender of a stored event.
    fn publish(&self, appended: Appended) -> OwnedEventId {
        self.inner.streams.finish(appended.ticket, appended.wake);
        self.inner.federation.poke(appended.destinations.iter().map(AsRef::as_ref));
        appended.event_id
    }

    fn append_blocking(
        &self,
        room_id: &OwnedRoomId,
        sender: &OwnedUserId,
        new: &NewEvent,
        txn: Option<(TxnKey, Txn)>,
    ) -> Result<Appended> {
        if self.duplicate_annotation(sender, new)? {
            return Err(Error::new(ErrorCode::DuplicateAnnotation, "Can't send same reaction twice"));
        }
        let (event_id, object) = self.prepare_blocking(room_id, sender, new)?;
        self.commit_blocking(room_id, event_id, to_json_string(&object)?, txn)
    }

    /// Sends an event that another server must sign before it exists (an invite of its user):
    /// built and authorized like any local event, handed to `countersign`, and stored as it
    /// comes back. The room stays locked across the round trip, so the event's place in the
    /// graph is still current when it is stored.
    pub async fn append_countersigned<F, Fut>(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        new: NewEvent,
        countersign: F,
    ) -> Result<OwnedEventId>
    where
        F: FnOnce(OwnedEventId, CanonicalJsonObject) -> Fut,
        Fut: std::future::Future<Output = Result<String>>,
    {
        let _guard = self.lock(room_id).await?;
        let (this, room, user) = (self.clone(), room_id.to_owned(), sender.to_owned());
        let (event_id, object) = blocking(move || this.prepare_blocking(&room, &user, &new)).await?;
        let json = countersign(event_id.clone(), object).await?;
        let (this, room) = (self.clone(), room_id.to_owned());
        let appended = blocking(move || this.commit_blocking(&room, event_id, json, None)).await?;
        Ok(self.publish(appended))
    }

    /// Builds and signs a local event on the room's current extremities and state, refusing it
    /// when the auth rules would.
    pub(super) fn prepare_blocking(
        &self,
        room_id: &OwnedRoomId,
        sender: &OwnedUserId,
        new: &NewEvent,
    ) -> Result<(OwnedEventId, CanonicalJsonObject)> {
        let db = self.db();
        let room = db.get::<RoomsTable>(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let (_, rules) = self.version(&room)?;
        if new.kind == TimelineEventType::RoomCreate {
            // The create event is the room's root: it is written once, when the room is made.
            return Err(Error::bad_json("A room's create event cannot be sent again"));
        }
        if new.kind == TimelineEventType::RoomPowerLevels {
            super::power::check_power_levels_content(&self.privileged_creators(room_id)?, &new.content)?;
        }
        let content =
            serde_json::value::to_raw_value(&new.content).map_err(|e| Error::bad_json(e.to_string()))?;
        let auth_types = auth::auth_types(&new.kind, sender, new.state_key.as_deref(), &content, &rules)
            .map_err(|e| Error::bad_json(format!("Invalid event content: {e}")))?;
        let mut auth_events = Vec::new();
        for (kind, key) in &auth_types {
            if let Some(id) = db.get::<CurrentState>(&(room_id.clone(), kind.to_string(), key.clone()))? {
                auth_events.push(id);
            }
        }
        auth_events.sort();
        auth_events.dedup();

        let placement = Placement {
            room_id: Some(room_id),
            prev_events: &room.forward_extremities,
            auth_events: &auth_events,
            depth: room.max_depth + 1,
        };
        let (event_id, object) =
            build_and_sign(new, sender, &placement, &rules, &self.inner.server_name, &self.inner.key)?;
        let pdu = Pdu::from_json(event_id.clone(), &to_json_string(&object)?)?;
        self.check_against_current(room_id, &pdu, &rules)?;
        Ok((event_id, object))
    }

    fn check_against_current(
        &self,
        room_id: &OwnedRoomId,
        pdu: &Pdu,
        rules: &ruma::room_version_rules::RoomVersionRules,
    ) -> Result<()> {
        let reads = super::Reads::default();
        let current = |kind: &str, key: &str| {
            let id = reads.keep(
                self.db()
                    .get::<CurrentState>(&(room_id.clone(), kind.to_owned(), key.to_owned()))
                    .map_err(Into::into),
            )?;
            reads.keep(self.pdu(&id))
        };
        let checked = auth::check(
            rules,
            pdu,
            |id| reads.keep(self.pdu(id)),
            |kind, key| current(&kind.to_string(), key),
        );
        reads.finish(checked)?.map_err(|reason| Error::forbidden(format!("Event not allowed: {reason}")))
    }

    /// Stores a prepared event (as signed by us, and by whoever else had to) in one batch with
    /// its state, timeline position, memberships and outbox entries.
    fn commit_blocking(
        &self,
        room_id: &OwnedRoomId,
        event_id: OwnedEventId,
        json: String,
        txn: Option<(TxnKey, Txn)>,
    ) -> Result<Appended> {
        let db = self.db();
        let mut room = db.get::<RoomsTable>(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let (_, rules) = self.version(&room)?;
        let pdu = Pdu::from_json(event_id.clone(), &json)?;
        let mut batch = Batch::new();
        let mut replaces_state = None;
        if let Some(key) = &pdu.state_key {
            let kind = pdu.kind.to_string();
            replaces_state = db.get::<CurrentState>(&(room_id.clone(), kind.clone(), key.clone()))?;
            let group = self.new_state_group_id()?;
            let change = [(kind.clone(), key.clone(), event_id.clone())];
            state::write_group(db, &mut batch, group, Some(room.current_state_group), &change)?;
            batch.put::<CurrentState>(&(room_id.clone(), kind, key.clone()), &event_id)?;
            room.current_state_group = group;
        }
        let ticket = self.inner.streams.allocate()?;
        let pos = ticket.pos;
        let members = self.members(room_id)?;
        let landing = super::notify::Landing { pdu: &pdu, json: &json, pos };
        self.record_push_actions(&mut batch, room_id, landing, &members, &rules)?;
        let (txn_key, txn) = txn.unzip();
        let record = PduRecord {
            txn,
            replaces_state,
            ..super::timeline_record(room_id, json, pos, room.current_state_group)
        };
        super::put_timeline_event(db, &mut batch, &pdu, &record)?;
        if let Some(key) = txn_key {
            batch.put::<TxnIds>(&key, &event_id)?;
        }

        // Read before this event's membership change lands: a server whose last member leaves
        // still receives the leave.
        let destinations = self.queue_for_servers(&mut batch, &members.servers, &pdu)?;
        let mut target = None;
        if pdu.kind == TimelineEventType::RoomMember {
            target = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok());
            let membership = pdu.membership().unwrap_or(MembershipState::Leave);
            if let Some(target) = &target {
                self.record_membership(&mut batch, &mut room, room_id, target, &membership, &event_id, pos)?;
            }
        }
        let wake = self.local_wake(members.local.clone(), target);
        if pdu.kind == TimelineEventType::RoomRedaction
            && let Some(target) = &pdu.redacts
        {
            self.redact_stored(&mut batch, room_id, target, &event_id, &rules)?;
        }

        room.forward_extremities = vec![event_id.clone()];
        room.max_depth += 1;
        batch.put::<RoomsTable>(room_id, &room)?;
        self.commit(batch)?;
        Ok(Appended { event_id, ticket, wake, destinations })
    }

    /// Other servers with a member joined to the room.
    pub fn other_servers(&self, room_id: &RoomId) -> Result<BTreeSet<OwnedServerName>> {
        Ok(self.members(room_id)?.servers.clone())
    }

    /// Queues a local event for every other server in the room, in the event's own batch, so an
    /// acknowledged event is never lost to a crash before it was queued.
    fn queue_for_servers(
        &self,
        batch: &mut Batch,
        joined_servers: &BTreeSet<OwnedServerName>,
        pdu: &Pdu,
    ) -> Result<BTreeSet<OwnedServerName>> {
        let federation = &self.inner.federation;
        if !federation.enabled() {
            return Ok(BTreeSet::new());
        }
        let own = &self.inner.server_name;
        let mut servers = joined_servers.clone();
        // A remote user kicked or banned is told too. An invite has reached the invitee's
        // server already, through the invite request that server signed it in.
        if pdu.kind == TimelineEventType::RoomMember
            && let Some(target) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok())
            && target.server_name() != own
            && crate::server_name::is_valid_server_name(target.server_name().as_str())
            && pdu.membership() != Some(MembershipState::Invite)
        {
            servers.insert(target.server_name().to_owned());
        }
        for server in &servers {
            let item = OutboxItem::Pdu { event_id: pdu.event_id.clone() };
            batch.put::<FederationOutbox>(&(server.to_string(), federation.next_seq()?), &item)?;
        }
        Ok(servers)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_membership(
        &self,
        batch: &mut Batch,
        room: &mut RoomRecord,
        room_id: &OwnedRoomId,
        target: &OwnedUserId,
        membership: &MembershipState,
        event_id: &OwnedEventId,
        pos: u64,
    ) -> Result<()> {
        let before = self.membership(room_id, target)?;
        if target.server_name() == self.inner.server_name {
            let was_joined = before == Some(MembershipState::Join);
            let is_joined = *membership == MembershipState::Join;
            if was_joined != is_joined {
                room.joined_count =
                    if is_joined { room.joined_count + 1 } else { room.joined_count.saturating_sub(1) };
            }
            let record = MembershipRecord {
                membership: membership.clone(),
                event_id: event_id.clone(),
                stream_pos: pos,
                forgotten: false,
            };
            batch.put::<UserRooms>(&(target.clone(), room_id.clone()), &record)?;
            if !is_joined && *membership != MembershipState::Invite {
                // Nothing is unread in a room one has left.
                crate::push::forget_room(self.db(), batch, target, room_id)?;
            }
        }
        batch.put::<RoomMembers>(&(room_id.clone(), target.clone()), membership)?;
        Ok(())
    }

    /// Replaces a stored event by its redacted form; the redaction event says why.
    pub(super) fn redact_stored(
        &self,
        batch: &mut Batch,
        room_id: &OwnedRoomId,
        target: &OwnedEventId,
        redaction: &OwnedEventId,
        rules: &ruma::room_version_rules::RoomVersionRules,
    ) -> Result<()> {
        let Some(mut record) = self.pdu_record(target)? else { return Ok(()) };
        if &record.room_id != room_id || record.redacted_by.is_some() {
            return Ok(());
        }
        super::relations::unindex(batch, &record);
        let object = parse_for_redaction(target, &record.json)?;
        let redacted = redact(object, &rules.redaction, None).map_err(Error::internal)?;
        record.json = to_json_string(&redacted)?;
        record.redacted_by = Some(redaction.clone());
        batch.put::<Pdus>(target, &record)?;
        Ok(())
    }
}

/// The stored event as an object to redact. One stored before the nesting limit existed may be
/// too deep to parse whole: then each top-level field is parsed alone and those that cannot be
/// are left out (content becomes empty), which is what redaction removes anyway, so the event
/// can still be redacted.
fn parse_for_redaction(event_id: &EventId, json: &str) -> Result<ruma::CanonicalJsonObject> {
    if let Ok(object) = parse_object(json) {
        return Ok(object);
    }
    tracing::warn!(%event_id, "redacting a stored event too deep to parse whole");
    let fields: BTreeMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_str(json).map_err(Error::internal)?;
    let mut object = ruma::CanonicalJsonObject::new();
    for (key, value) in fields {
        match serde_json::from_str::<ruma::CanonicalJsonValue>(value.get()) {
            Ok(value) => {
                object.insert(key, value);
            }
            Err(_) if key == "content" => {
                object.insert(key, ruma::CanonicalJsonValue::Object(Default::default()));
            }
            Err(_) => {}
        }
    }
    Ok(object)
}
