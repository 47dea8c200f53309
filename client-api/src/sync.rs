//! `/sync`, and the legacy calls Element makes when it restores a session.

use std::time::Duration;

use std::collections::BTreeMap;

use hearth_core::{
    Error, Homeserver,
    metrics::Open,
    sync::{
        SyncRequest,
        sliding::{ListFilters, ListRequest, RoomConfig, SlidingRequest},
    },
};
use ruma::api::{
    IncomingRequest, Metadata,
    auth_scheme::AccessToken,
    client::{
        filter::FilterDefinition,
        sync::sync_events::{self, v5},
    },
    error::{DeserializationError, Error as MatrixError},
};
use serde::Deserialize;
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
            hearth_core::rooms::view::parse_sync_token(t)
                .ok_or_else(|| Error::invalid_param(format!("Unknown sync token {t}")))?,
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

/// ruma's sliding sync request, with each list's filters read in full: ruma's type leaves out
/// `spaces` and `tags`, and cannot tell an absent `room_types` from an empty one.
pub struct SlidingSync {
    pub request: v5::Request,
    pub filters: BTreeMap<String, ListFilters>,
}

impl Metadata for SlidingSync {
    const METHOD: axum::http::Method = <v5::Request as Metadata>::METHOD;
    const RATE_LIMITED: bool = <v5::Request as Metadata>::RATE_LIMITED;
    type Authentication = AccessToken;
    type PathBuilder = <v5::Request as Metadata>::PathBuilder;
    const PATH_BUILDER: Self::PathBuilder = <v5::Request as Metadata>::PATH_BUILDER;
}

#[derive(Deserialize)]
struct FiltersOnly {
    #[serde(default)]
    lists: BTreeMap<String, ListFiltersOnly>,
}

#[derive(Deserialize)]
struct ListFiltersOnly {
    #[serde(default)]
    filters: Option<ListFilters>,
}

impl IncomingRequest for SlidingSync {
    type EndpointError = MatrixError;
    type OutgoingResponse = v5::Response;

    fn try_from_http_request_inner(
        request: axum::http::Request<&[u8]>,
        path_args: &[&str],
    ) -> Result<Self, DeserializationError> {
        let body: &[u8] = request.body();
        let filters = if body.is_empty() {
            BTreeMap::new()
        } else {
            let only: FiltersOnly = serde_json::from_slice(body)?;
            only.lists.into_iter().filter_map(|(name, list)| list.filters.map(|f| (name, f))).collect()
        };
        let request = v5::Request::try_from_http_request_inner(request, path_args)?;
        Ok(Self { request, filters })
    }
}

fn room_config(
    required_state: &[(ruma::events::StateEventType, String)],
    timeline_limit: ruma::UInt,
) -> RoomConfig {
    RoomConfig {
        required_state: required_state.iter().map(|(kind, key)| (kind.to_string(), key.clone())).collect(),
        timeline_limit: usize::try_from(u64::from(timeline_limit)).unwrap_or(usize::MAX),
    }
}

/// `POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync`
pub async fn sliding_sync(hs: Homeserver, req: Ruma<SlidingSync>) -> ApiResult<v5::Response> {
    let session = req.session()?.clone();
    let SlidingSync { request: body, mut filters } = req.body;
    let lists = body
        .lists
        .iter()
        .map(|(name, list)| {
            let request = ListRequest {
                ranges: list.ranges.iter().map(|(a, b)| (u64::from(*a), u64::from(*b))).collect(),
                room: room_config(&list.room_details.required_state, list.room_details.timeline_limit),
                filters: filters.remove(name).unwrap_or_default(),
            };
            (name.clone(), request)
        })
        .collect();
    let subscriptions = body
        .room_subscriptions
        .iter()
        .map(|(room, sub)| (room.clone(), room_config(&sub.required_state, sub.timeline_limit)))
        .collect();
    let request = SlidingRequest {
        pos: body.pos,
        conn_id: body.conn_id.unwrap_or_default(),
        timeout: body.timeout.unwrap_or_default(),
        set_presence: Some(hearth_core::presence::PresenceState::parse(body.set_presence.as_str())?),
        lists,
        subscriptions,
        extensions: body.extensions,
    };
    let _open = (!request.timeout.is_zero()).then(|| Open::enter(&hs.activity.sync_long_polls));
    Ok(hs.sliding_sync(&session.user_id, &session.txn_device(), request).await?)
}
