//! Server discovery: supported versions, `.well-known`, capabilities.

use std::collections::BTreeMap;

use hearth_core::Homeserver;
use ruma::api::client::discovery::{
    discover_homeserver::{self, HomeserverInfo},
    get_capabilities::{
        self,
        v3::{
            Capabilities, ChangePasswordCapability, RoomVersionStability, RoomVersionsCapability,
            ThirdPartyIdChangesCapability,
        },
    },
    get_supported_versions,
};

use crate::{
    extract::Ruma,
    response::{ApiResult, Json, JsonAnswered},
};

/// The spec versions whose Client-Server API Hearth targets. Which areas are complete is in the
/// README's feature table; `unstable_features` lists only what is implemented.
const SPEC_VERSIONS: &[&str] = &[
    "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12",
    "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18", "v1.19",
];

/// `GET /_matrix/client/versions`
pub async fn get_supported_versions(
    hs: Homeserver,
    _req: Ruma<get_supported_versions::Request>,
) -> ApiResult<get_supported_versions::Response> {
    let mut response =
        get_supported_versions::Response::new(SPEC_VERSIONS.iter().map(|v| (*v).to_owned()).collect());
    let calls = &hs.config.calls;
    response.unstable_features = BTreeMap::from([
        // Cross-signing has been stable since v1.1, but Element only runs its automatic set-up
        // of a new account's cross-signing keys when the server still names the unstable flag
        // (as Synapse does); without it a user's devices all stay unverified.
        ("org.matrix.e2e_cross_signing".to_owned(), true),
        // Delayed events: clients (matrix-js-sdk's MatrixRTC) check this before scheduling.
        ("org.matrix.msc4140".to_owned(), calls.max_delay_ms > 0),
        // Simplified sliding sync, which Element X and matrix-rust-sdk look for.
        ("org.matrix.simplified_msc3575".to_owned(), true),
        // MatrixRTC transport discovery, when there is a transport to discover.
        ("org.matrix.msc4143".to_owned(), !calls.rtc_transports.is_empty()),
    ]);
    Ok(response)
}

/// `GET /.well-known/matrix/client`, with the configured call transports as
/// `org.matrix.msc4143.rtc_foci` for clients that look for them there.
pub async fn discover_homeserver(
    hs: Homeserver,
    _req: Ruma<discover_homeserver::Request>,
) -> ApiResult<discover_homeserver::Response> {
    let mut response =
        discover_homeserver::Response::new(HomeserverInfo::new(hs.config.public_baseurl.clone()));
    response.rtc_foci = hs.config.calls.rtc_transports.clone();
    Ok(response)
}

/// `GET /_matrix/client/v3/capabilities`
pub async fn get_capabilities(
    hs: Homeserver,
    _req: Ruma<JsonAnswered<get_capabilities::v3::Request>>,
) -> ApiResult<Json<serde_json::Value>> {
    let mut capabilities = Capabilities::new();
    capabilities.change_password = ChangePasswordCapability::new(true);
    capabilities.thirdparty_id_changes = ThirdPartyIdChangesCapability::new(false);
    // Every profile field may be set by its owner (spec v1.16), within the profile's 64 KiB.
    capabilities.profile_fields =
        Some(ruma::api::client::discovery::get_capabilities::v3::ProfileFieldsCapability::new(true));
    // The room versions the rooms layer creates and joins.
    let available = hearth_core::rooms::CREATABLE_VERSIONS
        .iter()
        .map(|v| (v.clone(), RoomVersionStability::Stable))
        .collect();
    capabilities.room_versions = RoomVersionsCapability::new(hs.rooms.default_version().clone(), available);
    // Delayed events' limits, under the name Synapse uses.
    let calls = &hs.config.calls;
    if calls.max_delay_ms > 0 {
        let delayed = serde_json::json!({"max_delay_ms": calls.max_delay_ms, "max_scheduled": calls.max_delayed_per_user});
        capabilities
            .set("org.matrix.msc4140.delayed_events", delayed)
            .map_err(hearth_core::Error::internal)?;
    }
    // ruma leaves out capabilities at their default value; clients (and the spec's examples)
    // expect the ones the server supports spelled out, as Synapse does.
    let mut value = serde_json::to_value(&capabilities).map_err(hearth_core::Error::internal)?;
    if let Some(fields) = value.as_object_mut() {
        for (name, default) in [
            ("m.change_password", serde_json::to_value(&capabilities.change_password)),
            ("m.3pid_changes", serde_json::to_value(&capabilities.thirdparty_id_changes)),
        ] {
            if !fields.contains_key(name) {
                fields.insert(name.to_owned(), default.map_err(hearth_core::Error::internal)?);
            }
        }
    }
    Ok(Json(serde_json::json!({ "capabilities": value })))
}
