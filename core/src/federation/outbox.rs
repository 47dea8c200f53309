//! The durable outbox: what each destination has yet to receive, written in the same moment as
//! the event it carries is acknowledged, so a crash or a peer's outage loses nothing. The sender
//! (in the federation crate) drains it one transaction at a time per destination.

use std::collections::BTreeSet;

use hearth_storage::{
    Batch,
    records::OutboxItem,
    schema::{FederationOutbox, Pdus},
};
use ruma::{OwnedServerName, RoomId, ServerName, serde::Raw};
use serde_json::value::RawValue;

use crate::{Error, Homeserver, Result, users::blocking};

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
        destinations: BTreeSet<OwnedServerName>,
        items: Vec<OutboxItem>,
    ) -> Result<()> {
        if !self.federation.enabled() || destinations.is_empty() || items.is_empty() {
            return Ok(());
        }
        let this = self.clone();
        let dests = destinations.clone();
        blocking(move || {
            let mut batch = Batch::new();
            for dest in &dests {
                for item in &items {
                    let seq = this.federation.next_seq();
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

    /// The oldest items queued for `destination`, within one transaction's limits.
    pub fn outbox_batch(&self, destination: &ServerName) -> Result<OutboxBatch> {
        let mut batch = OutboxBatch::default();
        for entry in self.db.scan_prefix::<FederationOutbox, _>(&destination.to_string())? {
            let ((_, seq), item) = entry?;
            match item {
                OutboxItem::Pdu { event_id } => {
                    if batch.pdus.len() >= MAX_PDUS {
                        continue;
                    }
                    if let Some(record) = self.db.get::<Pdus>(&event_id)? {
                        batch.pdus.push(RawValue::from_string(record.json).map_err(Error::internal)?);
                    }
                }
                OutboxItem::Edu { edu } => {
                    if batch.edus.len() >= MAX_EDUS {
                        continue;
                    }
                    let raw = serde_json::value::to_raw_value(&edu).map_err(Error::internal)?;
                    batch.edus.push(Raw::from_json(raw));
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
