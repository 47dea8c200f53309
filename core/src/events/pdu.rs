//! PDUs: building, hashing and signing local events; parsing stored ones.

use ruma::events::room::member::MembershipState;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, ServerName, UserId,
    canonical_json::to_canonical_value,
    events::TimelineEventType,
    room_version_rules::{EventIdFormatVersion, EventsReferenceFormatVersion, RoomVersionRules},
    signatures::{JsonError, hash_and_sign_event, reference_hash},
};
use serde::Deserialize;
use serde_json::value::RawValue as RawJsonValue;

use crate::{
    Error, Result,
    keys::signing_key::SigningKey,
    util::{now_ms, random_string},
};

/// A PDU parsed from its stored JSON: the fields auth rules and state resolution read.
#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    /// As in the JSON: absent for the create event of room version 12 and later.
    pub room_id: Option<OwnedRoomId>,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawJsonValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    pub depth: u64,
}

#[derive(Deserialize)]
struct Fields {
    #[serde(rename = "type")]
    kind: TimelineEventType,
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    content: Box<RawJsonValue>,
    state_key: Option<String>,
    #[serde(default)]
    prev_events: Vec<EventRef>,
    #[serde(default)]
    auth_events: Vec<EventRef>,
    redacts: Option<OwnedEventId>,
    #[serde(default)]
    depth: u64,
}

/// A reference to another event: its ID, or in room versions 1 and 2 `[id, hashes]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum EventRef {
    Id(OwnedEventId),
    Pair(OwnedEventId, serde::de::IgnoredAny),
}

impl EventRef {
    fn id(self) -> OwnedEventId {
        match self {
            Self::Id(id) | Self::Pair(id, _) => id,
        }
    }
}

#[derive(Deserialize)]
struct RedactsInContent {
    redacts: Option<OwnedEventId>,
}

impl Pdu {
    pub fn from_json(event_id: OwnedEventId, json: &str) -> Result<Self> {
        let f: Fields = serde_json::from_str(json)
            .map_err(|e| Error::internal(format!("stored PDU {event_id} does not parse: {e}")))?;
        // Since room version 11 `redacts` lives in the content.
        let redacts = f.redacts.or_else(|| {
            (f.kind == TimelineEventType::RoomRedaction)
                .then(|| serde_json::from_str::<RedactsInContent>(f.content.get()).ok())
                .flatten()
                .and_then(|c| c.redacts)
        });
        Ok(Self {
            event_id,
            room_id: f.room_id,
            sender: f.sender,
            origin_server_ts: f.origin_server_ts,
            kind: f.kind,
            content: f.content,
            state_key: f.state_key,
            prev_events: f.prev_events.into_iter().map(EventRef::id).collect(),
            auth_events: f.auth_events.into_iter().map(EventRef::id).collect(),
            redacts,
            depth: f.depth,
        })
    }

    pub fn content_json(&self) -> serde_json::Value {
        serde_json::from_str(self.content.get()).unwrap_or(serde_json::Value::Null)
    }

    /// The content as one of ruma's typed contents; `None`, logged, when it does not read as
    /// one (the auth rules accept contents ruma reads more strictly).
    pub fn content_as<T: serde::de::DeserializeOwned>(&self) -> Option<T> {
        match serde_json::from_str(self.content.get()) {
            Ok(content) => Some(content),
            Err(error) => {
                tracing::warn!(event_id = %self.event_id, kind = %self.kind, %error, "unreadable content");
                None
            }
        }
    }

    /// A string field of the content, e.g. `membership`.
    pub fn content_str(&self, field: &str) -> Option<String> {
        self.content_json().get(field)?.as_str().map(ToOwned::to_owned)
    }

    /// The `membership` of an `m.room.member` event's content (of any event's, unchecked).
    pub fn membership(&self) -> Option<MembershipState> {
        self.content_str("membership").map(|m| m.as_str().into())
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.room_id.as_deref()
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawJsonValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        // Rejected events are never stored as part of a room here.
        false
    }
}

/// What a local user asks to send; the rest of the PDU comes from the room.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: TimelineEventType,
    pub content: serde_json::Value,
    pub state_key: Option<String>,
    pub redacts: Option<OwnedEventId>,
    /// The timestamp to give it instead of now: an application service bridging an event
    /// from another network keeps its time (`?ts=`).
    pub origin_server_ts: Option<u64>,
}

impl NewEvent {
    pub fn state(kind: TimelineEventType, state_key: impl Into<String>, content: serde_json::Value) -> Self {
        Self { kind, content, state_key: Some(state_key.into()), redacts: None, origin_server_ts: None }
    }

    pub fn message(kind: TimelineEventType, content: serde_json::Value) -> Self {
        Self { kind, content, state_key: None, redacts: None, origin_server_ts: None }
    }

    pub fn at(mut self, ts: Option<u64>) -> Self {
        self.origin_server_ts = ts;
        self
    }
}

/// The parts of a PDU that come from the room's graph.
#[derive(Debug, Clone)]
pub struct Placement<'a> {
    /// `None` only for a create event whose room ID derives from its event ID (v12+).
    pub room_id: Option<&'a RoomId>,
    pub prev_events: &'a [OwnedEventId],
    pub auth_events: &'a [OwnedEventId],
    pub depth: u64,
}

/// Builds a complete PDU: content hash, signature of this server, and its event ID (the
/// reference hash). Content with values canonical JSON forbids (floats, huge integers) is refused.
pub fn build_and_sign(
    new: &NewEvent,
    sender: &UserId,
    placement: &Placement<'_>,
    rules: &RoomVersionRules,
    server_name: &ServerName,
    key: &SigningKey,
) -> Result<(OwnedEventId, CanonicalJsonObject)> {
    let content = to_canonical_value(&new.content)
        .map_err(|e| Error::bad_json(format!("Event content is not canonical JSON: {e}")))?;
    if !matches!(content, CanonicalJsonValue::Object(_)) {
        return Err(Error::bad_json("Event content must be a JSON object"));
    }
    let ids = |ids: &[OwnedEventId]| {
        to_canonical_value(references(ids, rules))
            .map_err(|e| Error::internal(format!("event references: {e}")))
    };
    let mut object = CanonicalJsonObject::new();
    object.insert("type".into(), CanonicalJsonValue::String(new.kind.to_string()));
    object.insert("content".into(), content);
    object.insert("sender".into(), CanonicalJsonValue::String(sender.to_string()));
    let ts = i64::try_from(new.origin_server_ts.unwrap_or_else(now_ms)).unwrap_or(i64::MAX);
    object.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(ruma::Int::new_saturating(ts)));
    object.insert("prev_events".into(), ids(placement.prev_events)?);
    object.insert("auth_events".into(), ids(placement.auth_events)?);
    if let Some(event_id) = new_event_id(rules, server_name)? {
        object.insert("event_id".into(), CanonicalJsonValue::String(event_id.to_string()));
    }
    let depth = i64::try_from(placement.depth).unwrap_or(i64::MAX);
    object.insert("depth".into(), CanonicalJsonValue::Integer(ruma::Int::new_saturating(depth)));
    if let Some(room_id) = placement.room_id {
        object.insert("room_id".into(), CanonicalJsonValue::String(room_id.to_string()));
    }
    if let Some(state_key) = &new.state_key {
        object.insert("state_key".into(), CanonicalJsonValue::String(state_key.clone()));
    }
    if let Some(redacts) = &new.redacts {
        let value = CanonicalJsonValue::String(redacts.to_string());
        if rules.redaction.content_field_redacts
            && let Some(CanonicalJsonValue::Object(content)) = object.get_mut("content")
        {
            content.insert("redacts".into(), value.clone());
        }
        // Older clients and servers read the top-level field; it is harmless in newer versions.
        object.insert("redacts".into(), value);
    }
    hash_and_sign_event(server_name.as_str(), &key.pair, &mut object, &rules.redaction).map_err(
        |e| match e {
            JsonError::PduTooLarge => too_large(),
            e => Error::bad_json(format!("Cannot sign the event: {e}")),
        },
    )?;
    // The spec's limit is on the whole signed event in canonical JSON, which the hashes (over
    // parts of it) do not see.
    if to_json_string(&object)?.len() > MAX_PDU_BYTES {
        return Err(too_large());
    }
    let event_id =
        event_id_of(&object, rules).map_err(|e| Error::too_large(format!("Event too large: {e}")))?;
    Ok((event_id, object))
}

/// The largest event the spec allows, signed and in canonical JSON.
pub const MAX_PDU_BYTES: usize = 65_536;

fn too_large() -> Error {
    Error::too_large(format!("Event is larger than {MAX_PDU_BYTES} bytes"))
}

/// References to other events (`prev_events`, `auth_events`) as the room version writes them:
/// IDs, or in versions 1 and 2 `[id, hashes]` pairs (with empty hashes, as Synapse sends them:
/// the IDs identify the events, and nobody checks the hashes).
pub fn references(ids: &[OwnedEventId], rules: &RoomVersionRules) -> serde_json::Value {
    match rules.events_reference_format {
        EventsReferenceFormatVersion::V1 => {
            serde_json::Value::Array(ids.iter().map(|id| serde_json::json!([id, {}])).collect())
        }
        _ => serde_json::json!(ids),
    }
}

/// A fresh `$random:server` ID for an event this server creates, in the room versions (1 and 2)
/// whose event IDs the sending server chooses; `None` where the ID is the reference hash.
pub fn new_event_id(rules: &RoomVersionRules, server_name: &ServerName) -> Result<Option<OwnedEventId>> {
    match rules.event_id_format {
        EventIdFormatVersion::V1 => {
            EventId::parse(format!("${}:{server_name}", random_string(18))).map(Some).map_err(Error::internal)
        }
        _ => Ok(None),
    }
}

/// A PDU's event ID: the `event_id` it carries in room versions 1 and 2, its reference hash
/// since. `Err` (a bad request) when it has none or it cannot be hashed.
pub fn event_id_of(object: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<OwnedEventId> {
    match rules.event_id_format {
        EventIdFormatVersion::V1 => object
            .get("event_id")
            .and_then(CanonicalJsonValue::as_str)
            .and_then(|id| EventId::parse(id).ok())
            .filter(|id| id.server_name().is_some())
            .ok_or_else(|| Error::bad_json("The PDU has no valid event_id")),
        _ => {
            let hash =
                reference_hash(object, rules).map_err(|e| Error::bad_json(format!("PDU malformed: {e}")))?;
            EventId::parse(format!("${hash}")).map_err(Error::internal)
        }
    }
}

/// The canonical JSON text a PDU is stored as.
pub fn to_json_string(object: &CanonicalJsonObject) -> Result<String> {
    serde_json::to_string(object).map_err(Error::internal)
}

pub fn parse_object(json: &str) -> Result<CanonicalJsonObject> {
    serde_json::from_str(json).map_err(Error::internal)
}
