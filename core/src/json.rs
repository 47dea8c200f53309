//! The one nesting limit for JSON that enters the server, and the scanner that enforces it.
//!
//! Whatever is accepted is later wrapped in envelopes: the stored record, a PDU around content,
//! a federation transaction around PDUs and EDUs, a `/sync` response around events (the deepest:
//! `rooms.join.<id>.timeline.events[].unsigned.m.relations.m.thread.latest_event.content`, about
//! a dozen levels). serde_json, and so ruma, our storage codec, X-Matrix signing and most Rust
//! clients, refuse input nested deeper than 128. The spec sets no nesting limit for canonical
//! JSON and Synapse has no explicit one (its parser's recursion limit, in the hundreds or more,
//! is all there is), so we pick one with room for every envelope:
//! a client body may nest [`MAX_DEPTH`] levels, one PDU or EDU from another server one level
//! more (the event around the content). Anything within these limits stays below 128 on every
//! path that serves it.
//!
//! The scanner is iterative, so a hostile body nested a million levels deep costs one pass over
//! its bytes, never the stack.

use crate::{Error, Result};

/// Deepest nesting of a client request body (`{}` is 1, `{"a":{}}` 2).
pub const MAX_DEPTH: usize = 64;

/// Deepest nesting of one PDU or EDU received from, or sent to, another server: a client body at
/// the limit becomes event content one level down.
pub const MAX_FEDERATION_ITEM_DEPTH: usize = MAX_DEPTH + 1;

/// Levels the deepest envelope adds around a stored event when it is served (about a dozen, see
/// above), with some to spare.
const ENVELOPE_HEADROOM: usize = 16;

/// Deepest stored event that is still served. Everything accepted today is far below; events
/// stored before the limit existed may be deeper, and only those past this point, which could
/// not be read back inside a response, are skipped.
pub const MAX_SERVABLE_DEPTH: usize = 128 - ENVELOPE_HEADROOM;

/// Deepest nesting of a federation request body that carries one PDU (plus the request's own
/// object and an array or field around it, as `/invite` has).
pub const MAX_FEDERATION_BODY_DEPTH: usize = MAX_FEDERATION_ITEM_DEPTH + 2;

/// How deeply `json` nests arrays and objects. Only brackets outside strings count; the text
/// is not otherwise validated (the parser that follows does that).
pub fn depth(json: &[u8]) -> usize {
    let (mut current, mut deepest) = (0usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                current += 1;
                deepest = deepest.max(current);
            }
            b'}' | b']' => current = current.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Refuses `json` nested deeper than `limit` with 400 `M_BAD_JSON`.
pub fn check_depth(json: &[u8], limit: usize) -> Result<()> {
    if depth(json) > limit {
        return Err(Error::bad_json(format!("JSON nested deeper than {limit} levels")));
    }
    Ok(())
}

/// A JSON value as the ruma type that carries it raw (an event in a response, an EDU field).
pub fn raw<T>(value: &serde_json::Value) -> Result<ruma::serde::Raw<T>> {
    Ok(ruma::serde::Raw::from_json(serde_json::value::to_raw_value(value).map_err(Error::internal)?))
}

/// `levels` objects nested in one another, the innermost `{}`.
#[cfg(test)]
pub(crate) fn nested(levels: usize) -> String {
    let mut out = String::new();
    for _ in 1..levels {
        out.push_str("{\"a\":");
    }
    out.push_str("{}");
    for _ in 1..levels {
        out.push('}');
    }
    out
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    #[test]
    fn counts_brackets_outside_strings() {
        assert_eq!(depth(b"1"), 0);
        assert_eq!(depth(b"\"{[{[\""), 0);
        assert_eq!(depth(b"{}"), 1);
        assert_eq!(depth(b"[[],[[]]]"), 3);
        assert_eq!(depth(br#"{"a":"\"{{{","b":[{"c":"\\"}]}"#), 3);
        assert_eq!(depth(nested(MAX_DEPTH).as_bytes()), MAX_DEPTH);
    }

    #[test]
    fn limit_is_inclusive() {
        assert!(check_depth(nested(MAX_DEPTH).as_bytes(), MAX_DEPTH).is_ok());
        let error = check_depth(nested(MAX_DEPTH + 1).as_bytes(), MAX_DEPTH).unwrap_err();
        assert_eq!(error.code(), crate::ErrorCode::BadJson);
    }

    #[test]
    fn a_million_levels_cost_no_stack() {
        let deep = "[".repeat(1_000_000);
        assert_eq!(depth(deep.as_bytes()), 1_000_000);
    }

    #[test]
    fn anything_within_the_limit_parses_inside_every_envelope() {
        // The deepest envelope served: a /sync response around an event whose unsigned section
        // bundles another event, content as deep as is ever served.
        let content = nested(MAX_SERVABLE_DEPTH);
        let wrapped = format!(
            r#"{{"rooms":{{"join":{{"!r:x":{{"timeline":{{"events":[{{"unsigned":{{"m.relations":{{"m.thread":{{"latest_event":{{"content":{content}}}}}}}}}}}]}}}}}}}}}}"#
        );
        assert!(serde_json::from_str::<serde_json::Value>(&wrapped).is_ok());
        assert!(serde_json::from_str::<ruma::CanonicalJsonValue>(&wrapped).is_ok());
    }

    #[test]
    fn agrees_with_serde_json_on_random_values() {
        let mut rng = StdRng::seed_from_u64(16);
        for _ in 0..2_000 {
            let value = random_json(&mut rng, 10);
            let text = serde_json::to_string(&value).unwrap();
            assert_eq!(depth(text.as_bytes()), value_depth(&value), "{text}");
        }
    }

    fn value_depth(value: &serde_json::Value) -> usize {
        match value {
            serde_json::Value::Array(items) => 1 + items.iter().map(value_depth).max().unwrap_or(0),
            serde_json::Value::Object(map) => 1 + map.values().map(value_depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn random_json(rng: &mut StdRng, budget: usize) -> serde_json::Value {
        const CHARS: &[char] = &['a', '"', '\\', '{', '}', '[', ']', ':', ','];
        let text = |rng: &mut StdRng| -> String {
            (0..rng.gen_range(0..6)).map(|_| CHARS[rng.gen_range(0..CHARS.len())]).collect()
        };
        match if budget == 0 { 0 } else { rng.gen_range(0..4) } {
            0 => serde_json::Value::from(text(rng)),
            1 => serde_json::Value::from(rng.r#gen::<i64>()),
            2 => (0..rng.gen_range(0..4)).map(|_| random_json(rng, budget - 1)).collect(),
            _ => serde_json::Value::Object(
                (0..rng.gen_range(0..4)).map(|_| (text(rng), random_json(rng, budget - 1))).collect(),
            ),
        }
    }
}
