//! Server-side search: `POST /search`.

use hearth_core::{Error, Homeserver};
use ruma::api::client::search::search_events;
use serde_json::{Value, json};

use crate::{
    extract::Ruma,
    response::{ApiResult, Json, JsonAnswered},
};

/// Whether the body's room-events criteria carry an `event_context` object: ruma fills in its
/// defaults when it is absent, and an absent one means "no context", not "five events".
fn asks_for_context(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Body {
        search_categories: Categories,
    }
    #[derive(serde::Deserialize)]
    struct Categories {
        room_events: Option<Criteria>,
    }
    #[derive(serde::Deserialize)]
    struct Criteria {
        event_context: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Body>(body)
        .ok()
        .and_then(|b| b.search_categories.room_events)
        .is_some_and(|c| c.event_context.is_some())
}

/// `POST /_matrix/client/v3/search`. The room events' `results`, `count` and `highlights` are
/// always there, empty or zero when nothing matched (as Synapse answers; ruma leaves them out).
pub async fn search_events(
    hs: Homeserver,
    req: Ruma<JsonAnswered<search_events::v3::Request>>,
) -> ApiResult<Json<Value>> {
    let session = req.session()?.clone();
    let with_context = asks_for_context(&req.raw_body);
    let body = req.body.0;
    let mut categories = serde_json::Map::new();
    if let Some(criteria) = body.search_categories.room_events {
        let found = hs
            .search_room_events(
                &session.user_id,
                &session.txn_device(),
                criteria,
                with_context,
                body.next_batch,
            )
            .await?;
        let mut found = serde_json::to_value(found).map_err(Error::internal)?;
        if let Some(fields) = found.as_object_mut() {
            fields.entry("results").or_insert_with(|| json!([]));
            fields.entry("highlights").or_insert_with(|| json!([]));
            fields.entry("count").or_insert_with(|| json!(0));
        }
        categories.insert("room_events".to_owned(), found);
    }
    Ok(Json(json!({ "search_categories": categories })))
}

#[cfg(test)]
mod tests {
    use super::asks_for_context;

    #[test]
    fn an_absent_event_context_is_told_from_a_default_one() {
        assert!(!asks_for_context(br#"{"search_categories":{"room_events":{"search_term":"x"}}}"#));
        assert!(asks_for_context(
            br#"{"search_categories":{"room_events":{"search_term":"x","event_context":{}}}}"#
        ));
        assert!(!asks_for_context(b"{}"));
    }
}
