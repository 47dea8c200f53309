//! Delayed events (MSC4140) and MatrixRTC transports (MSC4143): what calls in Element need.

use hearth_core::{Error, Homeserver, delayed::DelayAction};
use ruma::api::client::{
    delayed_events::{get_all_delayed_events, get_delayed_event, update_delayed_event},
    rtc::transports,
};
use serde_json::{Value, json};

use crate::{
    extract::Ruma,
    response::{ApiResult, Json, JsonAnswered},
};

/// The query parameter that turns a send or a state change into a delayed one.
const DELAY_PARAM: &str = "org.matrix.msc4140.delay";

/// The delay a `/send` or `/state` request asks for, in ms, if any.
pub(crate) fn delay_param<T>(req: &Ruma<T>) -> Result<Option<u64>, Error> {
    let Some(value) = req.query_param(DELAY_PARAM) else { return Ok(None) };
    let delay: i64 = value
        .parse()
        .map_err(|_| Error::invalid_param(format!("Query parameter {DELAY_PARAM} must be an integer")))?;
    u64::try_from(delay).map(Some).map_err(|_| {
        Error::invalid_param(format!("Query parameter {DELAY_PARAM} must be a positive integer"))
    })
}

fn action(action: &update_delayed_event::UpdateAction) -> Result<DelayAction, Error> {
    use update_delayed_event::UpdateAction;
    match action {
        UpdateAction::Restart => Ok(DelayAction::Restart),
        UpdateAction::Send => Ok(DelayAction::Send),
        UpdateAction::Cancel => Ok(DelayAction::Cancel),
        _ => Err(Error::invalid_param("'action' is not one of 'cancel', 'restart', 'send'")),
    }
}

/// `POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}/{action}`: the
/// delay ID is the capability, so no access token is needed (a call's media server may act).
pub async fn update_delayed_event(
    hs: Homeserver,
    req: Ruma<update_delayed_event::unstable_v2::Request>,
) -> ApiResult<update_delayed_event::unstable_v2::Response> {
    hs.update_delayed(&req.body.delay_id, action(&req.body.action)?).await?;
    Ok(update_delayed_event::unstable_v2::Response::new())
}

/// `POST /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}` with the action
/// in the body (the MSC's earlier form, which clients fall back to).
pub async fn update_delayed_event_by_body(
    hs: Homeserver,
    req: Ruma<JsonAnswered<update_delayed_event::unstable_v1::Request>>,
) -> ApiResult<Json<Value>> {
    hs.update_delayed(&req.body.0.delay_id, action(&req.body.0.action)?).await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/unstable/org.matrix.msc4140/delayed_events`: the caller's scheduled
/// events, under the name Synapse answers with (`delayed_events`) and the MSC's current one
/// (`scheduled`), and what became of the recent others (`finalised`); `status` and `delay_id`
/// narrow it down.
pub async fn get_all_delayed_events(
    hs: Homeserver,
    req: Ruma<JsonAnswered<get_all_delayed_events::unstable::Request>>,
) -> ApiResult<Json<Value>> {
    let session = req.session()?.clone();
    let status = req.query_param("status");
    let only = req.query_param("delay_id");
    let (scheduled, finalised) = hs.delayed_events_of(&session.user_id).await?;
    let wanted = |id: &str| only.as_deref().is_none_or(|o| o == id);
    let scheduled: Vec<Value> = scheduled
        .iter()
        .filter(|(id, _)| wanted(id))
        .map(|(id, event)| hearth_core::delayed::listed(id, event))
        .collect();
    let finalised: Vec<Value> = finalised
        .iter()
        .filter(|f| wanted(&f.delay_id))
        .map(hearth_core::delayed::listed_finalised)
        .collect();
    let mut body = serde_json::Map::new();
    if status.as_deref() != Some("finalised") {
        body.insert("delayed_events".to_owned(), Value::Array(scheduled.clone()));
        body.insert("scheduled".to_owned(), Value::Array(scheduled));
    }
    if status.as_deref() != Some("scheduled") {
        body.insert("finalised".to_owned(), Value::Array(finalised));
    }
    Ok(Json(Value::Object(body)))
}

/// `GET /_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delayId}`: one of the
/// caller's scheduled events.
pub async fn get_delayed_event(
    hs: Homeserver,
    req: Ruma<JsonAnswered<get_delayed_event::unstable::Request>>,
) -> ApiResult<Json<Value>> {
    let session = req.session()?;
    let id = &req.body.0.delay_id;
    let event = hs
        .delayed_event_of(&session.user_id, id)?
        .ok_or_else(|| Error::not_found("Delayed event not found"))?;
    Ok(Json(hearth_core::delayed::listed(id, &event)))
}

/// `GET /_matrix/client/unstable/org.matrix.msc4143/rtc/transports`: the media servers calls
/// should use, as configured.
pub async fn get_rtc_transports(
    hs: Homeserver,
    req: Ruma<transports::v1::Request>,
) -> ApiResult<transports::v1::Response> {
    req.session()?;
    Ok(transports::v1::Response::new(hs.config.calls.rtc_transports.clone()))
}
