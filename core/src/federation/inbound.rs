//! What other servers send us: transactions of PDUs and EDUs, each PDU checked in the spec's
//! order (format and event ID; signatures and hashes, redacting on a hash mismatch; its auth
//! events; the state before it; soft-fail against the current state).

use std::{collections::BTreeMap, time::Duration};

use hearth_storage::schema::InboundTxns;
use ruma::{
    CanonicalJsonObject, EventId, OwnedEventId, OwnedRoomId, RoomId, ServerName, UserId,
    api::federation::transactions::edu::Edu,
    canonical_json::redact,
    room_version_rules::RoomVersionRules,
    serde::Raw,
    signatures::{Verified, reference_hash, verify_event},
};
use serde_json::value::RawValue;

use crate::{Error, ErrorCode, Homeserver, Result, events::pdu::to_json_string, rooms::remote::Received};

impl Homeserver {
    /// Parses, identifies and verifies a PDU for a room of the given rules. A PDU whose content
    /// hash does not match its signed hash is kept in its redacted form, as the spec requires.
    pub async fn verify_pdu(
        &self,
        raw: &RawValue,
        rules: &RoomVersionRules,
    ) -> Result<(OwnedEventId, String)> {
        let object: CanonicalJsonObject = serde_json::from_str(raw.get())
            .map_err(|e| Error::bad_json(format!("PDU is not canonical JSON: {e}")))?;
        let hash =
            reference_hash(&object, rules).map_err(|e| Error::bad_json(format!("PDU malformed: {e}")))?;
        let event_id = EventId::parse(format!("${hash}")).map_err(Error::internal)?;
        let keys = self.key_map_for(&object).await?;
        let object = match verify_event(&keys, &object, rules) {
            Ok(Verified::All) => object,
            Ok(Verified::Signatures) => {
                tracing::warn!(%event_id, "content hash mismatch; keeping the redacted event");
                redact(object, &rules.redaction, None).map_err(Error::internal)?
            }
            Err(e) => return Err(Error::forbidden(format!("signature check failed for {event_id}: {e}"))),
        };
        Ok((event_id, to_json_string(&object)?))
    }

    pub(super) fn room_rules(&self, room_id: &RoomId) -> Result<RoomVersionRules> {
        let room = self
            .rooms
            .room(room_id)?
            .ok_or_else(|| Error::not_found(format!("{room_id} is unknown here")))?;
        Ok(self.rooms.version(&room)?.1)
    }

    /// `PUT /send/{txnId}`: every PDU gets its own result; a transaction seen before gets the
    /// same answer without being processed again.
    pub async fn receive_transaction(
        &self,
        origin: &ServerName,
        txn_id: &str,
        pdus: Vec<Box<RawValue>>,
        edus: Vec<Raw<Edu>>,
    ) -> Result<BTreeMap<OwnedEventId, Result<(), String>>> {
        let key = (origin.to_string(), txn_id.to_owned());
        if let Some(done) = self.db.get::<InboundTxns>(&key)? {
            return serde_json::from_value::<BTreeMap<OwnedEventId, Option<String>>>(done)
                .map(|m| m.into_iter().map(|(id, e)| (id, e.map_or(Ok(()), Err))).collect())
                .map_err(Error::internal);
        }
        if pdus.len() > 50 || edus.len() > 100 {
            return Err(Error::bad_request("too many PDUs or EDUs in one transaction"));
        }
        let mut results = BTreeMap::new();
        for raw in pdus {
            let room_id = serde_json::from_str::<RoomOf>(raw.get()).ok().and_then(|r| r.room_id);
            let Some(room_id) = room_id else { continue };
            match self.receive_one(origin, &room_id, &raw).await {
                Ok(event_id) => {
                    results.insert(event_id, Ok(()));
                }
                Err((Some(event_id), error)) => {
                    tracing::info!(%origin, %event_id, %error, "rejected a remote PDU");
                    results.insert(event_id, Err(error.to_string()));
                }
                Err((None, error)) => tracing::info!(%origin, %error, "dropped an unreadable PDU"),
            }
        }
        for edu in edus {
            if let Err(error) = self.receive_edu(origin, &edu).await {
                tracing::debug!(%origin, %error, "ignored an EDU");
            }
        }
        let stored: BTreeMap<&OwnedEventId, Option<&String>> =
            results.iter().map(|(id, r)| (id, r.as_ref().err())).collect();
        self.db.put::<InboundTxns>(&key, &serde_json::to_value(stored).map_err(Error::internal)?)?;
        Ok(results)
    }

    async fn receive_one(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        raw: &RawValue,
    ) -> Result<OwnedEventId, (Option<OwnedEventId>, Error)> {
        if !self.rooms.exists(room_id).map_err(|e| (None, e))? {
            return self.receive_outside_member(room_id, raw).await;
        }
        if !self.server_allowed(room_id, origin).map_err(|e| (None, e))? {
            return Err((None, Error::forbidden(format!("{origin} is denied by the room's server ACL"))));
        }
        let rules = self.room_rules(room_id).map_err(|e| (None, e))?;
        let (event_id, json) = self.verify_pdu(raw, &rules).await.map_err(|e| (None, e))?;
        let pdu = crate::events::Pdu::from_json(event_id.clone(), &json)
            .map_err(|e| (Some(event_id.clone()), Error::bad_json(e.to_string())))?;
        if let Err(error) = self.fill_gaps(origin, room_id, &pdu, &rules).await {
            return Err((Some(event_id), error));
        }
        match self.rooms.receive_pdu(room_id, &event_id, json).await {
            Ok(Received::Accepted | Received::SoftFailed | Received::Duplicate) => Ok(event_id),
            Err(error) => Err((Some(event_id), error)),
        }
    }

    /// Fetches one event and, recursively within `budget`, its missing auth events, storing
    /// those that pass their auth checks as outliers.
    pub(super) async fn fetch_outlier(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        rules: &RoomVersionRules,
        budget: &mut usize,
    ) {
        let got = self.fetch_events(origin, vec![event_id.to_owned()], &[], rules, budget).await;
        if let Err(error) = self.store_checked_outliers(room_id, got, rules).await {
            tracing::warn!(%error, "could not store fetched auth events");
        }
    }

    async fn receive_edu(&self, origin: &ServerName, edu: &Raw<Edu>) -> Result<()> {
        let from_origin = |user: &UserId| -> Result<()> {
            if user.server_name() == origin {
                Ok(())
            } else {
                Err(Error::new(ErrorCode::Forbidden, "EDU about another server's user"))
            }
        };
        match lenient_edu(edu)? {
            Edu::Typing(typing) => {
                from_origin(&typing.user_id)?;
                self.require_acl(&typing.room_id, origin)?;
                let timeout = typing.typing.then_some(Duration::from_secs(30));
                self.rooms.set_typing(&typing.room_id, &typing.user_id, timeout).await
            }
            Edu::Receipt(receipts) => {
                for (room_id, map) in receipts.receipts {
                    if !self.server_allowed(&room_id, origin)? {
                        continue;
                    }
                    for (user_id, data) in map.read {
                        from_origin(&user_id)?;
                        if let Some(event_id) = data.event_ids.last() {
                            let thread = data.data.thread.as_str().unwrap_or_default();
                            self.rooms.set_receipt(&room_id, &user_id, "m.read", event_id, thread).await?;
                        }
                    }
                }
                Ok(())
            }
            Edu::Presence(content) => self.receive_presence(origin, content).await,
            Edu::DeviceListUpdate(content) => self.receive_keys_changed(origin, &content.user_id).await,
            Edu::SigningKeyUpdate(content) => self.receive_keys_changed(origin, &content.user_id).await,
            Edu::DirectToDevice(content) => self.receive_to_device(origin, content).await,
            _ => Ok(()),
        }
    }
}

/// Parses an EDU, filling in what other servers leave out that ruma's types require: Synapse
/// omits `last_active_ago` from presence updates of users it has no activity time for.
fn lenient_edu(edu: &Raw<Edu>) -> Result<Edu> {
    let mut value: serde_json::Value =
        serde_json::from_str(edu.json().get()).map_err(|e| Error::bad_json(e.to_string()))?;
    if value["edu_type"] == "m.presence"
        && let Some(pushes) = value["content"]["push"].as_array_mut()
    {
        for push in pushes.iter_mut().filter_map(serde_json::Value::as_object_mut) {
            push.entry("last_active_ago").or_insert(serde_json::json!(0));
        }
    }
    serde_json::from_value(value).map_err(|e| Error::bad_json(e.to_string()))
}

#[derive(serde::Deserialize)]
struct RoomOf {
    room_id: Option<OwnedRoomId>,
}
