//! The client format of an event: what the Client-Server API returns for a stored PDU.

use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId};
use serde_json::{Map, Value};

use crate::util::now_ms;

/// Fields of a PDU that only servers see.
const SERVER_ONLY: &[&str] =
    &["auth_events", "prev_events", "depth", "hashes", "signatures", "origin", "prev_state", "membership"];

/// Extra `unsigned` data computed when the event is served.
#[derive(Debug, Default, Clone)]
pub struct Unsigned {
    pub transaction_id: Option<String>,
    pub prev_content: Option<Value>,
    /// Who sent the state event this one replaced (as Synapse gives with `prev_content`).
    pub prev_sender: Option<String>,
    pub replaces_state: Option<OwnedEventId>,
    pub redacted_because: Option<Value>,
    /// The requesting user's membership at the event (MSC4115, spec v1.11).
    pub membership: Option<String>,
    /// Bundled aggregations (`m.relations`: thread summary, latest edit, references).
    pub relations: Option<Value>,
}

pub fn client_event(
    event_id: &OwnedEventId,
    room_id: &OwnedRoomId,
    pdu: &CanonicalJsonObject,
    extra: Unsigned,
) -> Value {
    let mut out = Map::new();
    for (key, value) in pdu {
        if !SERVER_ONLY.contains(&key.as_str()) && key != "unsigned" {
            out.insert(key.clone(), Value::from(value.clone()));
        }
    }
    out.insert("event_id".into(), Value::String(event_id.to_string()));
    out.insert("room_id".into(), Value::String(room_id.to_string()));
    let mut unsigned = Map::new();
    if let Some(CanonicalJsonValue::Integer(ts)) = pdu.get("origin_server_ts") {
        let ts = u64::try_from(i64::from(*ts)).unwrap_or(0);
        unsigned.insert("age".into(), Value::from(now_ms().saturating_sub(ts)));
    }
    if let Some(txn) = extra.transaction_id {
        unsigned.insert("transaction_id".into(), Value::String(txn));
    }
    if let Some(prev) = extra.prev_content {
        unsigned.insert("prev_content".into(), prev);
    }
    if let Some(sender) = extra.prev_sender {
        unsigned.insert("prev_sender".into(), Value::String(sender));
    }
    if let Some(replaces) = extra.replaces_state {
        unsigned.insert("replaces_state".into(), Value::String(replaces.to_string()));
    }
    if let Some(membership) = extra.membership {
        unsigned.insert("membership".into(), Value::String(membership));
    }
    if let Some(because) = extra.redacted_because {
        unsigned.insert("redacted_because".into(), because);
    }
    if let Some(relations) = extra.relations {
        unsigned.insert("m.relations".into(), relations);
    }
    out.insert("unsigned".into(), Value::Object(unsigned));
    Value::Object(out)
}
