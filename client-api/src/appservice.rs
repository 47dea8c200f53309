//! The client API's application service endpoints: the service's ping (MSC2659) and the
//! third-party lookups, which are answered by the services that declare the protocol.

use hearth_core::{Error, Homeserver};
use ruma::api::client::{
    appservice::request_ping,
    thirdparty::{
        get_location_for_protocol, get_location_for_room_alias, get_protocol, get_protocols,
        get_user_for_protocol, get_user_for_user_id,
    },
};
use serde_json::Value;

use crate::{
    extract::Ruma,
    response::{ApiResult, Json, JsonAnswered},
};

/// `POST /_matrix/client/v1/appservice/{appserviceId}/ping`
pub async fn request_ping(
    hs: Homeserver,
    req: Ruma<request_ping::v1::Request>,
) -> ApiResult<request_ping::v1::Response> {
    let session = req.session()?;
    let service = session
        .appservice
        .as_deref()
        .and_then(|id| hs.appservices.by_id(id))
        .filter(|service| service.id == req.body.appservice_id)
        .ok_or_else(|| Error::forbidden("Only the application service itself may ping it"))?;
    let txn = req.body.transaction_id.as_ref().map(|t| t.as_str());
    let duration = hs.ping_appservice(service, txn).await.map_err(Error::from)?;
    Ok(request_ping::v1::Response::new(duration))
}

/// `GET /_matrix/client/v3/thirdparty/protocols`
pub async fn get_protocols(
    hs: Homeserver,
    req: Ruma<JsonAnswered<get_protocols::v3::Request>>,
) -> ApiResult<Json<Value>> {
    req.session()?;
    Ok(Json(hs.thirdparty_protocols().await))
}

/// `GET /_matrix/client/v3/thirdparty/protocol/{protocol}`
pub async fn get_protocol(
    hs: Homeserver,
    req: Ruma<JsonAnswered<get_protocol::v3::Request>>,
) -> ApiResult<Json<Value>> {
    req.session()?;
    Ok(Json(hs.thirdparty_protocol(&req.body.0.protocol).await?))
}

/// `GET /_matrix/client/v3/thirdparty/location/{protocol}`
pub async fn get_location_for_protocol(
    hs: Homeserver,
    req: Ruma<JsonAnswered<get_location_for_protocol::v3::Request>>,
) -> ApiResult<Json<Value>> {
    let protocol = req.body.0.protocol.clone();
    lookup_by_fields(&hs, &req, "location", &protocol).await
}

/// `GET /_matrix/client/v3/thirdparty/user/{protocol}`
pub async fn get_user_for_protocol(
    hs: Homeserver,
    req: Ruma<JsonAnswered<get_user_for_protocol::v3::Request>>,
) -> ApiResult<Json<Value>> {
    let protocol = req.body.0.protocol.clone();
    lookup_by_fields(&hs, &req, "user", &protocol).await
}

/// A lookup by the protocol's fields, which come as the query string and are passed on.
async fn lookup_by_fields<T>(
    hs: &Homeserver,
    req: &Ruma<T>,
    kind: &str,
    protocol: &str,
) -> ApiResult<Json<Value>> {
    req.session()?;
    let fields = search_fields(req.query.as_deref().unwrap_or_default());
    Ok(Json(Value::Array(hs.thirdparty_lookup(kind, Some(protocol), &fields).await)))
}

/// `GET /_matrix/client/v3/thirdparty/location?alias=`
pub async fn get_location_for_room_alias(
    hs: Homeserver,
    req: Ruma<JsonAnswered<get_location_for_room_alias::v3::Request>>,
) -> ApiResult<Json<Value>> {
    req.session()?;
    let fields = [("alias".to_owned(), req.body.0.alias.to_string())];
    Ok(Json(Value::Array(hs.thirdparty_lookup("location", None, &fields).await)))
}

/// `GET /_matrix/client/v3/thirdparty/user?userid=`
pub async fn get_user_for_user_id(
    hs: Homeserver,
    req: Ruma<JsonAnswered<get_user_for_user_id::v3::Request>>,
) -> ApiResult<Json<Value>> {
    req.session()?;
    let fields = [("userid".to_owned(), req.body.0.userid.to_string())];
    Ok(Json(Value::Array(hs.thirdparty_lookup("user", None, &fields).await)))
}

/// `?ts=` on `/send` and `/state`: the timestamp an application service gives an event it
/// bridges. Only services may set it; anyone else's is ignored, as on Synapse.
pub(crate) fn ts_param<T>(req: &Ruma<T>) -> Result<Option<u64>, Error> {
    if req.session.as_ref().is_none_or(|s| s.appservice.is_none()) {
        return Ok(None);
    }
    // Timestamps are JSON integers in canonical JSON: at most 2^53 - 1.
    const MAX_TS: u64 = (1 << 53) - 1;
    req.query_param("ts")
        .map(|value| {
            value
                .parse::<u64>()
                .ok()
                .filter(|ts| *ts <= MAX_TS)
                .ok_or_else(|| Error::invalid_param("Query parameter ts must be a timestamp in milliseconds"))
        })
        .transpose()
}

/// The client's search fields, without its access token, for the services.
fn search_fields(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k != "access_token")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
