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
    signatures::{Verified, verify_event},
};
use serde_json::value::RawValue;

use crate::{
    Error, ErrorCode, Homeserver, Result,
    events::{
        Pdu,
        pdu::{event_id_of, to_json_string},
    },
    json,
    rooms::remote::Received,
};

impl Homeserver {
    /// Parses, identifies and verifies a PDU for a room of the given rules: the version's format
    /// (sizes, fields, references) first, so that nothing malformed is stored to fail a reader
    /// later. A PDU whose content hash does not match its signed hash is kept in its redacted
    /// form, as the spec requires.
    pub async fn verify_pdu(
        &self,
        raw: &RawValue,
        rules: &RoomVersionRules,
    ) -> Result<(OwnedEventId, String)> {
        self.verify_identified_pdu(raw, rules).await.map_err(|(_, error)| error)
    }

    /// [`Self::verify_pdu`], its error naming the event whenever the PDU was readable enough
    /// to have an ID, so that a transaction's answer can say why that event was refused.
    pub(crate) async fn verify_identified_pdu(
        &self,
        raw: &RawValue,
        rules: &RoomVersionRules,
    ) -> Result<(OwnedEventId, String), (Option<OwnedEventId>, Error)> {
        let (event_id, object) = identify_pdu(raw, rules).map_err(|e| (None, e))?;
        // Every PDU from elsewhere passes here (transactions, joins, backfill, fetched events):
        // the one place its nesting is held to what we can serve back inside any envelope.
        json::check_depth(raw.get().as_bytes(), json::MAX_FEDERATION_ITEM_DEPTH)
            .map_err(|e| (Some(event_id.clone()), e))?;
        // The version's format (sizes, fields, references) before anything is stored, so that
        // nothing malformed can fail a reader later.
        let malformed =
            |e: String| (Some(event_id.clone()), Error::bad_json(format!("PDU {event_id} malformed: {e}")));
        ruma::state_res::check_pdu_format(&object, &rules.event_format)
            .map_err(|e| malformed(e.to_string()))?;
        Pdu::from_json(event_id.clone(), raw.get()).map_err(|_| malformed("unreadable fields".to_owned()))?;
        let keys = self.key_map_for(&object).await.map_err(|e| (Some(event_id.clone()), e))?;
        let object = match verify_event(&keys, &object, rules) {
            Ok(Verified::All) => object,
            Ok(Verified::Signatures) => {
                tracing::warn!(%event_id, "content hash mismatch; keeping the redacted event");
                redact(object, &rules.redaction, None)
                    .map_err(|e| (Some(event_id.clone()), Error::internal(e)))?
            }
            Err(e) => {
                let error = Error::forbidden(format!("signature check failed for {event_id}: {e}"));
                return Err((Some(event_id), error));
            }
        };
        let json = to_json_string(&object).map_err(|e| (Some(event_id.clone()), e))?;
        Ok((event_id, json))
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
            let RoomOf { room_id, event_id: declared_id } =
                serde_json::from_str::<RoomOf>(raw.get()).unwrap_or_default();
            let outcome = match room_id {
                Some(room_id) => self.receive_one(origin, &room_id, &raw).await,
                None => Err((None, Error::bad_json("PDU without a room_id"))),
            };
            match outcome {
                Ok(event_id) => {
                    results.insert(event_id, Ok(()));
                }
                // Without a room version there is no reference hash; events of rooms v1 and v2
                // still name themselves.
                Err((event_id, error)) => match event_id
                    .or_else(|| declared_id.and_then(|v| v.as_str().and_then(|id| EventId::parse(id).ok())))
                {
                    Some(event_id) => {
                        tracing::info!(%origin, %event_id, %error, "rejected a remote PDU");
                        results.insert(event_id, Err(error.to_string()));
                    }
                    None => tracing::info!(%origin, %error, "dropped an unreadable PDU"),
                },
            }
        }
        for edu in edus {
            if let Err(error) =
                json::check_depth(edu.json().get().as_bytes(), json::MAX_FEDERATION_ITEM_DEPTH)
            {
                tracing::info!(%origin, %error, "dropped an EDU");
                continue;
            }
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
        let rules = self.room_rules(room_id).map_err(|e| (None, e))?;
        if !self.server_allowed(room_id, origin).map_err(|e| (None, e))? {
            let event_id = identify_pdu(raw, &rules).ok().map(|(id, _)| id);
            return Err((event_id, Error::forbidden(format!("{origin} is denied by the room's server ACL"))));
        }
        let (event_id, json) = self.verify_identified_pdu(raw, &rules).await?;
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

/// Parses a PDU and computes its event ID (the reference hash), before anything is checked.
pub(crate) fn identify_pdu(
    raw: &RawValue,
    rules: &RoomVersionRules,
) -> Result<(OwnedEventId, CanonicalJsonObject)> {
    let object: CanonicalJsonObject = serde_json::from_str(raw.get())
        .map_err(|e| Error::bad_json(format!("PDU is not canonical JSON: {e}")))?;
    let event_id = event_id_of(&object, rules)?;
    Ok((event_id, object))
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

#[derive(Default, serde::Deserialize)]
struct RoomOf {
    room_id: Option<OwnedRoomId>,
    /// Only PDUs of room versions 1 and 2 carry their ID; read loosely, so that a bad one
    /// cannot hide the room.
    event_id: Option<serde_json::Value>,
}
