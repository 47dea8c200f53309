//! `/sync`, and the legacy calls Element makes when it restores a session.

use std::time::Duration;

use hearth_core::{
    Error, Homeserver,
    metrics::Open,
    sync::{SyncRequest, compute},
};
use ruma::api::{
    IncomingRequest, Metadata,
    auth_scheme::AccessToken,
    client::{filter::FilterDefinition, sync::sync_events},
    error::{DeserializationError, Error as MatrixError},
};
use serde_json::Value;

use crate::{
    extract::Ruma,
    response::{ApiResult, Json},
};

/// ruma's /sync request, answered with a response Hearth assembles as JSON in core.
pub struct SyncEvents(pub sync_events::v3::Request);

type RumaSync = sync_events::v3::Request;

impl Metadata for SyncEvents {
    const METHOD: axum::http::Method = <RumaSync as Metadata>::METHOD;
    const RATE_LIMITED: bool = <RumaSync as Metadata>::RATE_LIMITED;
    type Authentication = AccessToken;
    type PathBuilder = <RumaSync as Metadata>::PathBuilder;
    const PATH_BUILDER: Self::PathBuilder = <RumaSync as Metadata>::PATH_BUILDER;
}

impl IncomingRequest for SyncEvents {
    type EndpointError = MatrixError;
    type OutgoingResponse = Json<Value>;

    fn try_from_http_request_inner(
        request: axum::http::Request<&[u8]>,
        path_args: &[&str],
    ) -> Result<Self, DeserializationError> {
        RumaSync::try_from_http_request_inner(request, path_args).map(Self)
    }
}

/// The longest a long-poll may wait; clients re-poll after it.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// Resolves the filter a request names (an ID from `/filter`) or carries inline.
pub(crate) fn resolve_filter(
    hs: &Homeserver,
    user: &ruma::UserId,
    filter: Option<&sync_events::v3::Filter>,
) -> Result<FilterDefinition, Error> {
    match filter {
        None => Ok(FilterDefinition::default()),
        Some(sync_events::v3::Filter::FilterDefinition(def)) => Ok(def.clone()),
        Some(sync_events::v3::Filter::FilterId(id)) => {
            let stored = hs
                .account_data
                .filter(user, id)?
                .ok_or_else(|| Error::invalid_param(format!("Unknown filter {id}")))?;
            serde_json::from_value(stored).map_err(Error::internal)
        }
        Some(_) => Err(Error::invalid_param("Unsupported filter")),
    }
}

/// `GET /_matrix/client/v3/sync`
pub async fn sync_events(hs: Homeserver, req: Ruma<SyncEvents>) -> ApiResult<Json<Value>> {
    let session = req.session()?.clone();
    let body = req.body.0;
    let since = match body.since.as_deref() {
        Some(t) => Some(
            compute::parse_token(t).ok_or_else(|| Error::invalid_param(format!("Unknown sync token {t}")))?,
        ),
        None => None,
    };
    let request = SyncRequest {
        since,
        timeout: body.timeout.unwrap_or_default().min(MAX_TIMEOUT),
        full_state: body.full_state,
        use_state_after: body.use_state_after,
        filter: resolve_filter(&hs, &session.user_id, body.filter.as_ref())?,
        set_presence: Some(hearth_core::presence::PresenceState::parse(body.set_presence.as_str())?),
    };
    let _open = (!request.timeout.is_zero()).then(|| Open::enter(&hs.activity.sync_long_polls));
    Ok(Json(hs.sync(&session.user_id, &session.txn_device(), &request).await?))
}
