//! The durable outbox: what each destination has yet to receive, written in the same moment as
//! the event it carries is acknowledged, so a crash or a peer's outage loses nothing. The sender
//! (in the federation crate) drains it one transaction at a time per destination.

use std::collections::BTreeSet;

use hearth_storage::{
    Batch,
    records::OutboxItem,
    schema::{FederationOutbox, Pdus},
};
use ruma::{CanonicalJsonValue, OwnedServerName, RoomId, ServerName, serde::Raw};
use serde_json::value::RawValue;

use crate::{Error, Homeserver, Result, json, users::blocking};

/// Checks that an item can go in a transaction: nested within the limit, so the transaction
/// around it stays parseable, and canonical JSON (no floats, integers in range), since the
/// transaction is signed as canonical JSON.
fn sendable(text: String) -> Result<Box<RawValue>> {
    json::check_depth(text.as_bytes(), json::MAX_FEDERATION_ITEM_DEPTH)?;
    serde_json::from_str::<CanonicalJsonValue>(&text)
        .map_err(|e| Error::bad_json(format!("not canonical JSON: {e}")))?;
    RawValue::from_string(text).map_err(Error::internal)
}

/// Spec limits of one transaction.
pub const MAX_PDUS: usize = 50;
pub const MAX_EDUS: usize = 100;

/// One transaction's worth of a destination's outbox.
#[derive(Debug, Default)]
pub struct OutboxBatch {
    /// Outbox sequence numbers to delete once the peer has accepted the transaction.
    pub seqs: Vec<u64>,
    pub pdus: Vec<Box<RawValue>>,
    pub edus: Vec<Raw<ruma::api::federation::transactions::edu::Edu>>,
}

impl Homeserver {
    /// Other servers with members joined to the room: who must receive its new events.
    pub fn servers_in_room(&self, room_id: &RoomId) -> Result<BTreeSet<OwnedServerName>> {
        self.rooms.other_servers(room_id)
    }

    /// Queues items for destinations and wakes the sender. Nothing is queued while federation
    /// is off.
    pub async fn enqueue(
        &self,
        mut destinations: BTreeSet<OwnedServerName>,
        items: Vec<OutboxItem>,
    ) -> Result<()> {
        // As in `Rooms::other_servers`: a name no request could reach is never queued for.
        destinations.retain(|d| crate::server_name::is_valid_server_name(d.as_str()));
        if !self.federation.enabled() || destinations.is_empty() || items.is_empty() {
            return Ok(());
        }
        let this = self.clone();
        let dests = destinations.clone();
        blocking(move || {
            let mut batch = Batch::new();
            for dest in &dests {
                for item in &items {
                    let seq = this.federation.next_seq()?;
                    batch.put::<FederationOutbox>(&(dest.to_string(), seq), item)?;
                }
            }
            Ok(this.db.write(batch)?)
        })
        .await?;
        self.federation.poke(destinations.iter().map(AsRef::as_ref));
        Ok(())
    }

    /// Destinations with anything queued (at start-up, to resume sending).
    pub fn outbox_destinations(&self) -> Result<BTreeSet<OwnedServerName>> {
        let mut out = BTreeSet::new();
        for entry in self.db.scan_prefix_all::<FederationOutbox>()? {
            let ((dest, _), _) = entry?;
            if let Ok(dest) = ServerName::parse(&dest) {
                out.insert(dest);
            }
        }
        Ok(out)
    }

    /// The oldest items queued for `destination`, within one transaction's limits. An item that
    /// cannot be read, serialised or signed is logged and left out, its sequence number kept so
    /// that it is deleted with the rest: one bad item must never hold back the destination.
    pub fn outbox_batch(&self, destination: &ServerName) -> Result<OutboxBatch> {
        let mut batch = OutboxBatch::default();
        for entry in self.db.scan_prefix::<FederationOutbox, _>(&destination.to_string())?.lenient() {
            let ((_, seq), item) = entry?;
            match item {
                None => {}
                Some(OutboxItem::Pdu { event_id }) => {
                    if batch.pdus.len() >= MAX_PDUS {
                        continue;
                    }
                    if let Some(record) = self.db.get_lenient::<Pdus>(&event_id)? {
                        match sendable(record.json) {
                            Ok(raw) => batch.pdus.push(raw),
                            Err(error) => {
                                tracing::error!(%destination, %event_id, %error, "dropping a PDU that cannot be sent");
                            }
                        }
                    }
                }
                Some(OutboxItem::Edu { edu }) => {
                    if batch.edus.len() >= MAX_EDUS {
                        continue;
                    }
                    match serde_json::to_string(&edu).map_err(Error::internal).and_then(sendable) {
                        Ok(raw) => batch.edus.push(Raw::from_json(raw)),
                        Err(error) => {
                            tracing::error!(%destination, %error, "dropping an EDU that cannot be sent");
                        }
                    }
                }
            }
            batch.seqs.push(seq);
            if batch.pdus.len() >= MAX_PDUS && batch.edus.len() >= MAX_EDUS {
                break;
            }
        }
        Ok(batch)
    }

    /// Forgets what a destination has accepted.
    pub async fn outbox_done(&self, destination: &ServerName, seqs: Vec<u64>) -> Result<()> {
        let this = self.clone();
        let dest = destination.to_string();
        blocking(move || {
            let mut batch = Batch::new();
            for seq in seqs {
                batch.delete::<FederationOutbox>(&(dest.clone(), seq));
            }
            Ok(this.db.write(batch)?)
        })
        .await
    }
}
