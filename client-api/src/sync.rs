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
        sync::sync_events::{self, DeviceLists, v3, v5},
    },
    error::{DeserializationError, Error as MatrixError},
};
use ruma::{OneTimeKeyAlgorithm, OwnedRoomId, UInt};
use serde::{Deserialize, Serialize};

use crate::{
    extract::Ruma,
    response::{ApiResult, Json},
};

/// ruma's /sync request, answered with ruma's response in the shape of [`SyncBody`].
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
    type OutgoingResponse = Json<SyncBody>;

    fn try_from_http_request_inner(
        request: axum::http::Request<&[u8]>,
        path_args: &[&str],
    ) -> Result<Self, DeserializationError> {
        RumaSync::try_from_http_request_inner(request, path_args).map(Self)
    }
}

/// ruma's /sync response as it goes on the wire, over HTTP and the WebSocket, with `limited`
/// on every timeline: ruma leaves it out when false, but Synapse always sends it and clients
/// (Complement's sync tests among them) take a timeline without it for a malformed one.
#[derive(Serialize)]
pub struct SyncBody {
    next_batch: String,
    #[serde(skip_serializing_if = "RoomsBody::is_empty")]
    rooms: RoomsBody,
    #[serde(skip_serializing_if = "v3::Presence::is_empty")]
    presence: v3::Presence,
    #[serde(skip_serializing_if = "v3::GlobalAccountData::is_empty")]
    account_data: v3::GlobalAccountData,
    #[serde(skip_serializing_if = "v3::ToDevice::is_empty")]
    to_device: v3::ToDevice,
    #[serde(skip_serializing_if = "DeviceLists::is_empty")]
    device_lists: DeviceLists,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    device_one_time_keys_count: BTreeMap<OneTimeKeyAlgorithm, UInt>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device_unused_fallback_key_types: Option<Vec<OneTimeKeyAlgorithm>>,
}

#[derive(Serialize)]
struct RoomsBody {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    join: BTreeMap<OwnedRoomId, WithTimeline<v3::JoinedRoom>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    invite: BTreeMap<OwnedRoomId, v3::InvitedRoom>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    knock: BTreeMap<OwnedRoomId, v3::KnockedRoom>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    leave: BTreeMap<OwnedRoomId, WithTimeline<v3::LeftRoom>>,
}

impl RoomsBody {
    fn is_empty(&self) -> bool {
        self.join.is_empty() && self.invite.is_empty() && self.knock.is_empty() && self.leave.is_empty()
    }
}

/// A room whose timeline was taken out of it (ruma then leaves it out) to be written here.
#[derive(Serialize)]
struct WithTimeline<R> {
    #[serde(flatten)]
    room: R,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeline: Option<TimelineBody>,
}

#[derive(Serialize)]
struct TimelineBody {
    limited: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_batch: Option<String>,
    events: Vec<ruma::serde::Raw<ruma::events::AnySyncTimelineEvent>>,
}

fn with_timeline<R>(mut room: R, timeline: impl FnOnce(&mut R) -> &mut v3::Timeline) -> WithTimeline<R> {
    let taken = std::mem::take(timeline(&mut room));
    let timeline = (!taken.is_empty()).then_some(TimelineBody {
        limited: taken.limited,
        prev_batch: taken.prev_batch,
        events: taken.events,
    });
    WithTimeline { room, timeline }
}

impl From<v3::Response> for SyncBody {
    fn from(response: v3::Response) -> Self {
        let rooms = response.rooms;
        Self {
            next_batch: response.next_batch,
            rooms: RoomsBody {
                join: rooms
                    .join
                    .into_iter()
                    .map(|(id, r)| (id, with_timeline(r, |r| &mut r.timeline)))
                    .collect(),
                invite: rooms.invite,
                knock: rooms.knock,
                leave: rooms
                    .leave
                    .into_iter()
                    .map(|(id, r)| (id, with_timeline(r, |r| &mut r.timeline)))
                    .collect(),
            },
            presence: response.presence,
            account_data: response.account_data,
            to_device: response.to_device,
            device_lists: response.device_lists,
            device_one_time_keys_count: response.device_one_time_keys_count,
            device_unused_fallback_key_types: response.device_unused_fallback_key_types,
        }
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
pub async fn sync_events(hs: Homeserver, req: Ruma<SyncEvents>) -> ApiResult<Json<SyncBody>> {
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
    Ok(Json(hs.sync(&session.user_id, &session.txn_device(), &request).await?.into()))
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

#[cfg(test)]
mod tests {
    use ruma::{owned_room_id, serde::Raw};
    use serde_json::{Value, json};

    use super::*;

    fn timeline(limited: bool) -> v3::Timeline {
        let mut timeline = v3::Timeline::new();
        timeline.limited = limited;
        timeline.prev_batch = Some("t1".to_owned());
        let event = json!({"type": "m.room.message", "content": {"body": "hi"}});
        timeline.events = vec![Raw::from_json(serde_json::value::to_raw_value(&event).unwrap())];
        timeline
    }

    #[test]
    fn every_timeline_says_whether_it_is_limited_and_empty_sections_are_left_out() {
        let mut response = v3::Response::new("s1".to_owned());
        let mut joined = v3::JoinedRoom::new();
        joined.timeline = timeline(false);
        response.rooms.join.insert(owned_room_id!("!a:localhost"), joined);
        let mut left = v3::LeftRoom::new();
        left.timeline = timeline(true);
        response.rooms.leave.insert(owned_room_id!("!b:localhost"), left);
        let wire = serde_json::to_string(&SyncBody::from(response)).unwrap();
        // Written once each, not once by ruma and again here.
        assert_eq!(wire.matches("\"limited\"").count(), 2, "{wire}");
        let body: Value = serde_json::from_str(&wire).unwrap();
        let joined = &body["rooms"]["join"]["!a:localhost"]["timeline"];
        assert_eq!(joined["limited"], json!(false), "{body}");
        assert_eq!(joined["prev_batch"], "t1");
        assert_eq!(joined["events"][0]["content"]["body"], "hi");
        assert_eq!(body["rooms"]["leave"]["!b:localhost"]["timeline"]["limited"], json!(true));
        for absent in ["presence", "account_data", "to_device", "device_lists"] {
            assert!(body.get(absent).is_none(), "{absent}: {body}");
        }
        assert!(body["rooms"].get("invite").is_none());

        let idle = serde_json::to_value(SyncBody::from(v3::Response::new("s2".to_owned()))).unwrap();
        assert_eq!(idle, json!({"next_batch": "s2"}));
    }
}
