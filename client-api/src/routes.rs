//! The route table. Paths and methods come from each endpoint's ruma metadata, never typed here.

use std::{collections::BTreeSet, future::Future};

use axum::{
    Extension, Router,
    extract::FromRequest,
    extract::State,
    response::{IntoResponse, Response},
    routing::{MethodFilter, MethodRouter, on},
};
use hearth_core::{ErrorCode, Homeserver};
use ruma::api::{IncomingRequest, Metadata, client as c, path_builder::PathBuilder};

use crate::{
    account, admin, appservice, backup, config, delayed, device, directory, discovery,
    extract::{AuthPolicy, BodyRequired, ClientApiConfig, EmptyLastParam, GuestAccess, Ruma, Upload},
    filter, keys, media, membership, message, misc, presence, profile, push, receipt, relations,
    response::{ApiError, ApiResult, JsonAnswered, RumaResponse},
    room, search, session, space, sso, state, sync, ws,
};

/// Registers a handler for every path a ruma endpoint has had (r0, v3, unstable).
trait RouterExt {
    fn ruma<T, H, F>(self, handler: H, guests: GuestAccess) -> Self
    where
        T: IncomingRequest + Send + 'static,
        T::Authentication: AuthPolicy,
        T::OutgoingResponse: Send,
        H: Fn(Homeserver, Ruma<T>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = ApiResult<T::OutgoingResponse>> + Send + 'static;

    /// Like `ruma`, for endpoints whose body may not be left out (see [`BodyRequired`]).
    fn ruma_with_body<T, H, F>(self, handler: H, guests: GuestAccess) -> Self
    where
        T: IncomingRequest + Send + 'static,
        T::Authentication: AuthPolicy,
        T::OutgoingResponse: Send,
        H: Fn(Homeserver, Ruma<T>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = ApiResult<T::OutgoingResponse>> + Send + 'static;

    /// For endpoints whose request or response does not fit a ruma body held in memory (media):
    /// the paths and method still come from `T`'s metadata, but the handler takes any extractor
    /// and builds its own response.
    fn ruma_raw<T, X, H, F>(self, handler: H, guests: GuestAccess) -> Self
    where
        T: Metadata,
        X: FromRequest<Homeserver, Rejection = ApiError> + Send + 'static,
        H: Fn(Homeserver, X) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = ApiResult<Response>> + Send + 'static;
}

/// Adds the routes of every path of `T`, each made by `make`.
fn add_paths<T: Metadata>(
    router: Router<Homeserver>,
    make: impl Fn() -> MethodRouter<Homeserver>,
    guests: GuestAccess,
) -> Router<Homeserver> {
    let paths: BTreeSet<&'static str> = T::PATH_BUILDER.all_paths().collect();
    let with_guests = || -> MethodRouter<Homeserver> { make().layer(Extension(guests)) };
    paths.into_iter().fold(router, |mut router, path| {
        router = router.route(path, with_guests());
        // State endpoints take an empty state key as a missing last segment.
        if let Some(prefix) = path.strip_suffix("/{state_key}") {
            let empty_last =
                || -> MethodRouter<Homeserver> { with_guests().layer(Extension(EmptyLastParam)) };
            router = router.route(prefix, empty_last()).route(&format!("{prefix}/"), empty_last());
        }
        router
    })
}

fn method_filter<T: Metadata>() -> MethodFilter {
    MethodFilter::try_from(T::METHOD).expect("ruma endpoints use standard methods")
}

/// The method route of a handler that takes and answers a ruma request.
fn ruma_route<T, H, F>(handler: &H) -> MethodRouter<Homeserver>
where
    T: IncomingRequest + Send + 'static,
    T::Authentication: AuthPolicy,
    T::OutgoingResponse: Send,
    H: Fn(Homeserver, Ruma<T>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = ApiResult<T::OutgoingResponse>> + Send + 'static,
{
    let handler = handler.clone();
    on(method_filter::<T>(), move |State(hs): State<Homeserver>, req: Ruma<T>| async move {
        handler(hs, req).await.map(RumaResponse)
    })
}

impl RouterExt for Router<Homeserver> {
    fn ruma<T, H, F>(self, handler: H, guests: GuestAccess) -> Self
    where
        T: IncomingRequest + Send + 'static,
        T::Authentication: AuthPolicy,
        T::OutgoingResponse: Send,
        H: Fn(Homeserver, Ruma<T>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = ApiResult<T::OutgoingResponse>> + Send + 'static,
    {
        add_paths::<T>(self, || ruma_route(&handler), guests)
    }

    fn ruma_with_body<T, H, F>(self, handler: H, guests: GuestAccess) -> Self
    where
        T: IncomingRequest + Send + 'static,
        T::Authentication: AuthPolicy,
        T::OutgoingResponse: Send,
        H: Fn(Homeserver, Ruma<T>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = ApiResult<T::OutgoingResponse>> + Send + 'static,
    {
        add_paths::<T>(self, || ruma_route(&handler).layer(Extension(BodyRequired)), guests)
    }

    fn ruma_raw<T, X, H, F>(self, handler: H, guests: GuestAccess) -> Self
    where
        T: Metadata,
        X: FromRequest<Homeserver, Rejection = ApiError> + Send + 'static,
        H: Fn(Homeserver, X) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = ApiResult<Response>> + Send + 'static,
    {
        let make = || {
            let handler = handler.clone();
            on(method_filter::<T>(), move |State(hs): State<Homeserver>, req: X| async move {
                handler(hs, req).await
            })
        };
        add_paths::<T>(self, make, guests)
    }
}

use c::authenticated_media as am;

const GUESTS: GuestAccess = GuestAccess(true);
const NO_GUESTS: GuestAccess = GuestAccess(false);

/// The whole Client-Server API, plus the discovery and admin endpoints clients call.
// The deprecated unauthenticated media endpoints are registered too (served behind a switch).
#[allow(deprecated)]
pub fn router(hs: Homeserver, config: ClientApiConfig) -> Router {
    Router::new()
        // Discovery
        .ruma::<c::discovery::get_supported_versions::Request, _, _>(
            discovery::get_supported_versions,
            GUESTS,
        )
        .ruma::<c::discovery::discover_homeserver::Request, _, _>(discovery::discover_homeserver, GUESTS)
        // Calls: delayed events (MSC4140) and transports (MSC4143)
        .ruma::<c::delayed_events::update_delayed_event::unstable_v2::Request, _, _>(
            delayed::update_delayed_event,
            GUESTS,
        )
        .ruma::<JsonAnswered<c::delayed_events::update_delayed_event::unstable_v1::Request>, _, _>(
            delayed::update_delayed_event_by_body,
            GUESTS,
        )
        .ruma::<JsonAnswered<c::delayed_events::get_all_delayed_events::unstable::Request>, _, _>(
            delayed::get_all_delayed_events,
            NO_GUESTS,
        )
        .ruma::<JsonAnswered<c::delayed_events::get_delayed_event::unstable::Request>, _, _>(
            delayed::get_delayed_event,
            NO_GUESTS,
        )
        .ruma::<c::rtc::transports::v1::Request, _, _>(delayed::get_rtc_transports, GUESTS)
        .ruma::<JsonAnswered<c::discovery::get_capabilities::v3::Request>, _, _>(
            discovery::get_capabilities,
            GUESTS,
        )
        // Registration and account management
        .ruma::<c::account::register::v3::Request, _, _>(account::register, GUESTS)
        .ruma::<c::account::get_username_availability::v3::Request, _, _>(
            account::get_username_availability,
            GUESTS,
        )
        .ruma::<c::account::check_registration_token_validity::v1::Request, _, _>(
            account::check_registration_token_validity,
            GUESTS,
        )
        .ruma::<c::account::whoami::v3::Request, _, _>(account::whoami, GUESTS)
        .ruma::<c::account::change_password::v3::Request, _, _>(account::change_password, NO_GUESTS)
        .ruma::<c::account::deactivate::v3::Request, _, _>(account::deactivate, NO_GUESTS)
        // Sessions
        .ruma::<c::session::get_login_types::v3::Request, _, _>(session::get_login_types, GUESTS)
        .ruma::<session::Login, _, _>(session::login, GUESTS)
        .ruma::<c::session::logout::v3::Request, _, _>(session::logout, GUESTS)
        .ruma::<c::session::logout_all::v3::Request, _, _>(session::logout_all, GUESTS)
        .ruma::<c::session::refresh_token::v3::Request, _, _>(session::refresh_token, GUESTS)
        // Single sign-on (the confirmation page and the callback are Hearth's own endpoints)
        .ruma::<c::session::sso_login::v3::Request, _, _>(sso::sso_login, GUESTS)
        .ruma::<c::session::sso_login_with_provider::v3::Request, _, _>(sso::sso_login_with_provider, GUESTS)
        .ruma::<sso::Confirm, _, _>(sso::confirm, GUESTS)
        .ruma::<sso::ProviderCallback, _, _>(sso::callback, GUESTS)
        .ruma::<c::uiaa::get_uiaa_fallback_page::v3::Request, _, _>(sso::get_uiaa_fallback_page, GUESTS)
        // Devices
        .ruma::<c::device::get_devices::v3::Request, _, _>(device::get_devices, GUESTS)
        .ruma::<c::device::get_device::v3::Request, _, _>(device::get_device, GUESTS)
        .ruma::<c::device::update_device::v3::Request, _, _>(device::update_device, GUESTS)
        .ruma::<c::device::delete_device::v3::Request, _, _>(device::delete_device, NO_GUESTS)
        .ruma::<c::device::delete_devices::v3::Request, _, _>(device::delete_devices, NO_GUESTS)
        // Profiles
        .ruma::<c::profile::get_profile::v3::Request, _, _>(profile::get_profile, GUESTS)
        .ruma::<c::profile::get_display_name::v3::Request, _, _>(profile::get_display_name, GUESTS)
        .ruma_with_body::<c::profile::set_display_name::v3::Request, _, _>(profile::set_display_name, GUESTS)
        .ruma::<c::profile::get_avatar_url::v3::Request, _, _>(profile::get_avatar_url, GUESTS)
        .ruma_with_body::<c::profile::set_avatar_url::v3::Request, _, _>(profile::set_avatar_url, GUESTS)
        .ruma::<c::profile::get_profile_field::v3::Request, _, _>(profile::get_profile_field, GUESTS)
        .ruma_with_body::<c::profile::set_profile_field::v3::Request, _, _>(
            profile::set_profile_field,
            GUESTS,
        )
        .ruma::<c::profile::delete_profile_field::v3::Request, _, _>(profile::delete_profile_field, GUESTS)
        // Account data and filters
        .ruma::<c::config::get_global_account_data::v3::Request, _, _>(
            config::get_global_account_data,
            GUESTS,
        )
        .ruma_with_body::<c::config::set_global_account_data::v3::Request, _, _>(
            config::set_global_account_data,
            GUESTS,
        )
        .ruma::<c::config::get_room_account_data::v3::Request, _, _>(config::get_room_account_data, GUESTS)
        .ruma_with_body::<c::config::set_room_account_data::v3::Request, _, _>(
            config::set_room_account_data,
            GUESTS,
        )
        .ruma::<c::account::request_openid_token::v3::Request, _, _>(account::request_openid_token, NO_GUESTS)
        .ruma::<c::account::get_3pids::v3::Request, _, _>(account::get_3pids, GUESTS)
        .ruma::<c::session::get_login_token::v1::Request, _, _>(session::get_login_token, NO_GUESTS)
        .ruma::<c::account::request_3pid_management_token_via_email::v3::Request, _, _>(
            account::request_3pid_management_token_via_email,
            NO_GUESTS,
        )
        .ruma::<c::account::request_3pid_management_token_via_msisdn::v3::Request, _, _>(
            account::request_3pid_management_token_via_msisdn,
            NO_GUESTS,
        )
        .ruma::<c::account::add_3pid::v3::Request, _, _>(account::add_3pid, NO_GUESTS)
        .ruma::<c::account::delete_3pid::v3::Request, _, _>(account::delete_3pid, NO_GUESTS)
        .ruma::<c::account::bind_3pid::v3::Request, _, _>(account::bind_3pid, NO_GUESTS)
        .ruma::<c::account::unbind_3pid::v3::Request, _, _>(account::unbind_3pid, NO_GUESTS)
        .ruma::<c::tag::get_tags::v3::Request, _, _>(config::get_tags, GUESTS)
        .ruma::<c::tag::create_tag::v3::Request, _, _>(config::create_tag, GUESTS)
        .ruma::<c::tag::delete_tag::v3::Request, _, _>(config::delete_tag, GUESTS)
        .ruma::<c::filter::create_filter::v3::Request, _, _>(filter::create_filter, GUESTS)
        .ruma::<c::filter::get_filter::v3::Request, _, _>(filter::get_filter, GUESTS)
        // Rooms
        .ruma::<c::room::create_room::v3::Request, _, _>(room::create_room, NO_GUESTS)
        .ruma::<c::room::get_room_event::v3::Request, _, _>(room::get_room_event, GUESTS)
        .ruma::<c::room::get_summary::v1::Request, _, _>(room::get_summary, GUESTS)
        .ruma::<c::space::get_hierarchy::v1::Request, _, _>(space::get_hierarchy, GUESTS)
        .ruma::<c::room::aliases::v3::Request, _, _>(room::aliases, GUESTS)
        .ruma::<c::alias::get_alias::v3::Request, _, _>(room::get_alias, GUESTS)
        .ruma::<c::alias::create_alias::v3::Request, _, _>(room::create_alias, NO_GUESTS)
        .ruma::<c::alias::delete_alias::v3::Request, _, _>(room::delete_alias, NO_GUESTS)
        // Membership
        .ruma::<membership::JoinWithContent<c::membership::join_room_by_id::v3::Request>, _, _>(
            membership::join_room_by_id,
            GUESTS,
        )
        .ruma::<membership::JoinWithContent<c::membership::join_room_by_id_or_alias::v3::Request>, _, _>(
            membership::join_room_by_id_or_alias,
            GUESTS,
        )
        .ruma::<c::membership::leave_room::v3::Request, _, _>(membership::leave_room, GUESTS)
        .ruma::<c::membership::forget_room::v3::Request, _, _>(membership::forget_room, GUESTS)
        .ruma::<c::membership::invite_user::v3::Request, _, _>(membership::invite_user, NO_GUESTS)
        .ruma::<c::membership::kick_user::v3::Request, _, _>(membership::kick_user, NO_GUESTS)
        .ruma::<c::membership::ban_user::v3::Request, _, _>(membership::ban_user, NO_GUESTS)
        .ruma::<c::membership::unban_user::v3::Request, _, _>(membership::unban_user, NO_GUESTS)
        .ruma::<c::membership::joined_rooms::v3::Request, _, _>(membership::joined_rooms, GUESTS)
        .ruma::<JsonAnswered<c::membership::joined_members::v3::Request>, _, _>(
            membership::joined_members,
            GUESTS,
        )
        .ruma::<c::membership::get_member_events::v3::Request, _, _>(membership::get_member_events, GUESTS)
        // Events and state
        .ruma_with_body::<JsonAnswered<c::message::send_message_event::v3::Request>, _, _>(
            message::send_message_event,
            GUESTS,
        )
        .ruma::<c::message::get_message_events::v3::Request, _, _>(message::get_message_events, GUESTS)
        .ruma::<c::redact::redact_event::v3::Request, _, _>(message::redact_event, NO_GUESTS)
        .ruma_with_body::<JsonAnswered<c::state::send_state_event::v3::Request>, _, _>(
            state::send_state_event,
            GUESTS,
        )
        .ruma::<c::state::get_state_event_for_key::v3::Request, _, _>(state::get_state_event_for_key, GUESTS)
        .ruma::<c::state::get_state_events::v3::Request, _, _>(state::get_state_events, GUESTS)
        .ruma::<c::knock::knock_room::v3::Request, _, _>(membership::knock_room, NO_GUESTS)
        .ruma::<c::context::get_context::v3::Request, _, _>(message::get_context, GUESTS)
        .ruma::<c::room::get_event_by_timestamp::v1::Request, _, _>(message::get_event_by_timestamp, GUESTS)
        .ruma::<c::room::upgrade_room::v3::Request, _, _>(room::upgrade_room, NO_GUESTS)
        .ruma::<c::room::report_content::v3::Request, _, _>(room::report_content, NO_GUESTS)
        .ruma::<c::room::report_room::v3::Request, _, _>(room::report_room, NO_GUESTS)
        .ruma::<c::reporting::report_user::v3::Request, _, _>(room::report_user, NO_GUESTS)
        .ruma::<c::membership::get_mutual_rooms::v1::Request, _, _>(membership::get_mutual_rooms, NO_GUESTS)
        .ruma::<c::membership::get_mutual_rooms::unstable::Request, _, _>(
            membership::get_mutual_rooms_unstable,
            NO_GUESTS,
        )
        .ruma::<c::relations::get_relating_events::v1::Request, _, _>(relations::get_relating_events, GUESTS)
        .ruma::<c::threads::get_threads::v1::Request, _, _>(relations::get_threads, GUESTS)
        .ruma::<c::relations::get_relating_events_with_rel_type::v1::Request, _, _>(
            relations::get_relating_events_with_rel_type,
            GUESTS,
        )
        .ruma::<c::relations::get_relating_events_with_rel_type_and_event_type::v1::Request, _, _>(
            relations::get_relating_events_with_rel_type_and_event_type,
            GUESTS,
        )
        .ruma::<c::typing::create_typing_event::v3::Request, _, _>(receipt::create_typing_event, GUESTS)
        .ruma::<c::receipt::create_receipt::v3::Request, _, _>(receipt::create_receipt, GUESTS)
        .ruma::<c::read_marker::set_read_marker::v3::Request, _, _>(receipt::set_read_marker, GUESTS)
        // Presence
        .ruma::<c::presence::get_presence::v3::Request, _, _>(presence::get_presence, GUESTS)
        .ruma::<c::presence::set_presence::v3::Request, _, _>(presence::set_presence, GUESTS)
        // Sync
        .ruma::<sync::SyncEvents, _, _>(sync::sync_events, GUESTS)
        .ruma::<sync::SlidingSync, _, _>(sync::sliding_sync, NO_GUESTS)
        .ruma::<c::peeking::get_current_state::v3::Request, _, _>(misc::get_current_state, GUESTS)
        .ruma::<misc::ListenToNewEvents, _, _>(misc::listen_to_new_events, GUESTS)
        // End-to-end encryption
        .ruma::<c::keys::upload_keys::v3::Request, _, _>(keys::upload_keys, GUESTS)
        .ruma::<c::keys::get_keys::v3::Request, _, _>(keys::get_keys, GUESTS)
        .ruma::<c::keys::claim_keys::v3::Request, _, _>(keys::claim_keys, GUESTS)
        .ruma::<c::keys::get_key_changes::v3::Request, _, _>(keys::get_key_changes, GUESTS)
        .ruma::<c::keys::upload_signing_keys::v3::Request, _, _>(keys::upload_signing_keys, NO_GUESTS)
        .ruma::<c::keys::upload_signatures::v3::Request, _, _>(keys::upload_signatures, NO_GUESTS)
        .ruma_with_body::<c::to_device::send_event_to_device::v3::Request, _, _>(
            keys::send_event_to_device,
            GUESTS,
        )
        // Key backup
        .ruma::<c::backup::create_backup_version::v3::Request, _, _>(backup::create_backup_version, NO_GUESTS)
        .ruma::<c::backup::get_latest_backup_info::v3::Request, _, _>(
            backup::get_latest_backup_info,
            NO_GUESTS,
        )
        .ruma::<c::backup::get_backup_info::v3::Request, _, _>(backup::get_backup_info, NO_GUESTS)
        .ruma::<c::backup::update_backup_version::v3::Request, _, _>(backup::update_backup_version, NO_GUESTS)
        .ruma::<c::backup::delete_backup_version::v3::Request, _, _>(backup::delete_backup_version, NO_GUESTS)
        .ruma::<c::backup::add_backup_keys::v3::Request, _, _>(backup::add_backup_keys, NO_GUESTS)
        .ruma::<c::backup::add_backup_keys_for_room::v3::Request, _, _>(
            backup::add_backup_keys_for_room,
            NO_GUESTS,
        )
        .ruma::<c::backup::add_backup_keys_for_session::v3::Request, _, _>(
            backup::add_backup_keys_for_session,
            NO_GUESTS,
        )
        .ruma::<c::backup::get_backup_keys::v3::Request, _, _>(backup::get_backup_keys, NO_GUESTS)
        .ruma::<c::backup::get_backup_keys_for_room::v3::Request, _, _>(
            backup::get_backup_keys_for_room,
            NO_GUESTS,
        )
        .ruma::<c::backup::get_backup_keys_for_session::v3::Request, _, _>(
            backup::get_backup_keys_for_session,
            NO_GUESTS,
        )
        .ruma::<c::backup::delete_backup_keys::v3::Request, _, _>(backup::delete_backup_keys, NO_GUESTS)
        .ruma::<c::backup::delete_backup_keys_for_room::v3::Request, _, _>(
            backup::delete_backup_keys_for_room,
            NO_GUESTS,
        )
        .ruma::<c::backup::delete_backup_keys_for_session::v3::Request, _, _>(
            backup::delete_backup_keys_for_session,
            NO_GUESTS,
        )
        // Push rules and pushers
        .ruma::<JsonAnswered<c::push::get_pushrules_all::v3::Request>, _, _>(push::get_pushrules_all, GUESTS)
        .ruma::<JsonAnswered<c::push::get_pushrules_global_scope::v3::Request>, _, _>(
            push::get_pushrules_global_scope,
            GUESTS,
        )
        .ruma::<c::push::get_pushrule::v3::Request, _, _>(push::get_pushrule, GUESTS)
        .ruma::<c::push::set_pushrule::v3::Request, _, _>(push::set_pushrule, NO_GUESTS)
        .ruma::<c::push::delete_pushrule::v3::Request, _, _>(push::delete_pushrule, NO_GUESTS)
        .ruma::<c::push::get_pushrule_enabled::v3::Request, _, _>(push::get_pushrule_enabled, GUESTS)
        .ruma::<c::push::set_pushrule_enabled::v3::Request, _, _>(push::set_pushrule_enabled, NO_GUESTS)
        .ruma::<c::push::get_pushrule_actions::v3::Request, _, _>(push::get_pushrule_actions, GUESTS)
        .ruma::<c::push::set_pushrule_actions::v3::Request, _, _>(push::set_pushrule_actions, NO_GUESTS)
        .ruma::<c::push::get_pushers::v3::Request, _, _>(push::get_pushers, GUESTS)
        .ruma::<c::push::set_pusher::v3::Request, _, _>(push::set_pusher, NO_GUESTS)
        .ruma::<c::push::get_notifications::v3::Request, _, _>(push::get_notifications, NO_GUESTS)
        .ruma::<push::Unsubscribe, _, _>(push::unsubscribe, GUESTS)
        // Start-up lookups
        .ruma::<JsonAnswered<c::thirdparty::get_protocols::v3::Request>, _, _>(
            appservice::get_protocols,
            GUESTS,
        )
        .ruma::<JsonAnswered<c::thirdparty::get_protocol::v3::Request>, _, _>(
            appservice::get_protocol,
            GUESTS,
        )
        .ruma::<JsonAnswered<c::thirdparty::get_location_for_protocol::v3::Request>, _, _>(
            appservice::get_location_for_protocol,
            GUESTS,
        )
        .ruma::<JsonAnswered<c::thirdparty::get_user_for_protocol::v3::Request>, _, _>(
            appservice::get_user_for_protocol,
            GUESTS,
        )
        .ruma::<JsonAnswered<c::thirdparty::get_location_for_room_alias::v3::Request>, _, _>(
            appservice::get_location_for_room_alias,
            GUESTS,
        )
        .ruma::<JsonAnswered<c::thirdparty::get_user_for_user_id::v3::Request>, _, _>(
            appservice::get_user_for_user_id,
            GUESTS,
        )
        .ruma::<c::appservice::request_ping::v1::Request, _, _>(appservice::request_ping, NO_GUESTS)
        .ruma::<c::voip::get_turn_server_info::v3::Request, _, _>(misc::get_turn_server_info, GUESTS)
        .ruma::<c::user_directory::search_users::v3::Request, _, _>(misc::search_users, GUESTS)
        .ruma_with_body::<JsonAnswered<c::search::search_events::v3::Request>, _, _>(
            search::search_events,
            NO_GUESTS,
        )
        // Room directory
        .ruma::<JsonAnswered<c::directory::get_public_rooms::v3::Request>, _, _>(
            directory::get_public_rooms,
            GUESTS,
        )
        .ruma::<JsonAnswered<c::directory::get_public_rooms_filtered::v3::Request>, _, _>(
            directory::get_public_rooms_filtered,
            GUESTS,
        )
        .ruma::<c::directory::get_room_visibility::v3::Request, _, _>(directory::get_room_visibility, GUESTS)
        .ruma::<c::appservice::set_room_visibility::v3::Request, _, _>(
            directory::set_room_visibility_for_network,
            NO_GUESTS,
        )
        .ruma::<c::directory::set_room_visibility::v3::Request, _, _>(
            directory::set_room_visibility,
            NO_GUESTS,
        )
        // Media
        .ruma_raw::<c::media::create_content::v3::Request, Upload<_>, _, _>(media::create_content, NO_GUESTS)
        .ruma::<c::media::create_mxc_uri::v1::Request, _, _>(media::create_mxc_uri, NO_GUESTS)
        .ruma_raw::<c::media::create_content_async::v3::Request, Upload<_>, _, _>(
            media::create_content_async,
            NO_GUESTS,
        )
        .ruma_raw::<am::get_content::v1::Request, Ruma<_>, _, _>(media::get_content, GUESTS)
        .ruma_raw::<am::get_content_as_filename::v1::Request, Ruma<_>, _, _>(
            media::get_content_as_filename,
            GUESTS,
        )
        .ruma_raw::<am::get_content_thumbnail::v1::Request, Ruma<_>, _, _>(
            media::get_content_thumbnail,
            GUESTS,
        )
        .ruma::<am::get_media_config::v1::Request, _, _>(media::get_media_config, GUESTS)
        .ruma::<c::media::get_media_config::v3::Request, _, _>(media::get_media_config_legacy, GUESTS)
        .ruma::<am::get_media_preview::v1::Request, _, _>(media::get_media_preview, GUESTS)
        .ruma::<c::media::get_media_preview::v3::Request, _, _>(media::get_media_preview_legacy, GUESTS)
        .ruma_raw::<c::media::get_content::v3::Request, Ruma<_>, _, _>(media::get_content_legacy, GUESTS)
        .ruma_raw::<c::media::get_content_as_filename::v3::Request, Ruma<_>, _, _>(
            media::get_content_as_filename_legacy,
            GUESTS,
        )
        .ruma_raw::<c::media::get_content_thumbnail::v3::Request, Ruma<_>, _, _>(
            media::get_content_thumbnail_legacy,
            GUESTS,
        )
        // Synapse-compatible shared-secret registration
        .ruma::<admin::GetNonce, _, _>(admin::get_registration_nonce, NO_GUESTS)
        .ruma::<admin::Register, _, _>(admin::shared_secret_register, NO_GUESTS)
        // Synapse's admin API (`/_synapse/admin`): an admin's token, checked by each handler
        .ruma::<admin::Admin<admin::ServerVersion>, _, _>(admin::server_version, NO_GUESTS)
        .ruma::<admin::Admin<admin::ListUsers>, _, _>(admin::list_users, NO_GUESTS)
        .ruma::<admin::Admin<admin::ListUsersV3>, _, _>(admin::list_users_v3, NO_GUESTS)
        .ruma::<admin::Admin<admin::GetUser>, _, _>(admin::get_user, NO_GUESTS)
        .ruma::<admin::Admin<admin::DeactivateUser>, _, _>(admin::deactivate_user, NO_GUESTS)
        .ruma::<admin::Admin<admin::Whois>, _, _>(admin::whois, NO_GUESTS)
        .ruma::<admin::Admin<admin::JoinedRooms>, _, _>(admin::joined_rooms, NO_GUESTS)
        .ruma::<admin::Admin<admin::ListDevices>, _, _>(admin::list_devices, NO_GUESTS)
        .ruma::<admin::Admin<admin::GetDevice>, _, _>(admin::get_device, NO_GUESTS)
        .ruma::<admin::Admin<admin::PutDevice>, _, _>(admin::put_device, NO_GUESTS)
        .ruma::<admin::Admin<admin::DeleteDevice>, _, _>(admin::delete_device, NO_GUESTS)
        .ruma::<admin::Admin<admin::LoginAsUser>, _, _>(admin::login_as_user, NO_GUESTS)
        .ruma::<admin::Admin<admin::ShadowBan>, _, _>(admin::shadow_ban_user, NO_GUESTS)
        .ruma::<admin::Admin<admin::LiftShadowBan>, _, _>(admin::lift_shadow_ban, NO_GUESTS)
        .ruma::<admin::Admin<admin::GetRateLimit>, _, _>(admin::get_rate_limit, NO_GUESTS)
        .ruma::<admin::Admin<admin::SetRateLimit>, _, _>(admin::set_rate_limit, NO_GUESTS)
        .ruma::<admin::Admin<admin::DeleteRateLimit>, _, _>(admin::delete_rate_limit, NO_GUESTS)
        .ruma::<admin::Admin<admin::GetUserAdmin>, _, _>(admin::get_user_admin, NO_GUESTS)
        .ruma::<admin::Admin<admin::ListRooms>, _, _>(admin::list_rooms, NO_GUESTS)
        .ruma::<admin::Admin<admin::GetRoom>, _, _>(admin::get_room, NO_GUESTS)
        .ruma::<admin::Admin<admin::RoomMembers>, _, _>(admin::room_members, NO_GUESTS)
        .ruma::<admin::Admin<admin::RoomState>, _, _>(admin::room_state, NO_GUESTS)
        .ruma::<admin::Admin<admin::GetRoomBlock>, _, _>(admin::get_room_block, NO_GUESTS)
        .ruma::<admin::Admin<admin::DeleteRoomV1>, _, _>(admin::delete_room_v1, NO_GUESTS)
        .ruma::<admin::Admin<admin::DeleteRoomV2>, _, _>(admin::delete_room_v2, NO_GUESTS)
        .ruma::<admin::Admin<admin::RoomDeleteStatus>, _, _>(admin::room_delete_status, NO_GUESTS)
        .ruma::<admin::Admin<admin::DeleteStatus>, _, _>(admin::delete_status, NO_GUESTS)
        .ruma::<admin::Admin<admin::ListReports>, _, _>(admin::list_reports, NO_GUESTS)
        .ruma::<admin::Admin<admin::GetReport>, _, _>(admin::get_report, NO_GUESTS)
        .ruma::<admin::Admin<admin::DeleteReport>, _, _>(admin::delete_report, NO_GUESTS)
        .ruma::<admin::Admin<admin::UserMedia>, _, _>(admin::user_media, NO_GUESTS)
        .ruma::<admin::Admin<admin::DeleteUserMedia>, _, _>(admin::delete_user_media, NO_GUESTS)
        .ruma::<admin::Admin<admin::RoomMedia>, _, _>(admin::room_media, NO_GUESTS)
        .ruma::<admin::Admin<admin::MediaInfo>, _, _>(admin::media_info, NO_GUESTS)
        .ruma::<admin::Admin<admin::Quarantine>, _, _>(admin::quarantine, NO_GUESTS)
        .ruma::<admin::Admin<admin::Unquarantine>, _, _>(admin::unquarantine, NO_GUESTS)
        .ruma::<admin::Admin<admin::QuarantineRoomMedia>, _, _>(admin::quarantine_room_media, NO_GUESTS)
        .ruma::<admin::Admin<admin::QuarantineUserMedia>, _, _>(admin::quarantine_user_media, NO_GUESTS)
        .ruma::<admin::Admin<admin::Protect>, _, _>(admin::protect, NO_GUESTS)
        .ruma::<admin::Admin<admin::Unprotect>, _, _>(admin::unprotect, NO_GUESTS)
        .ruma::<admin::Admin<admin::DeleteMedia>, _, _>(admin::delete_media, NO_GUESTS)
        .ruma::<admin::Admin<admin::DeleteOldMedia>, _, _>(admin::delete_old_media, NO_GUESTS)
        .ruma::<admin::Admin<admin::DeleteOldMediaOf>, _, _>(admin::delete_old_media_of, NO_GUESTS)
        .ruma::<admin::Admin<admin::ListTokens>, _, _>(admin::list_registration_tokens, NO_GUESTS)
        .ruma::<admin::Admin<admin::GetToken>, _, _>(admin::get_registration_token, NO_GUESTS)
        .ruma::<admin::Admin<admin::DeleteToken>, _, _>(admin::delete_registration_token, NO_GUESTS)
        .ruma::<admin::Admin<admin::ListDestinations>, _, _>(admin::list_destinations, NO_GUESTS)
        .ruma::<admin::Admin<admin::GetDestination>, _, _>(admin::get_destination, NO_GUESTS)
        .ruma::<admin::Admin<admin::DestinationRooms>, _, _>(admin::destination_rooms, NO_GUESTS)
        .ruma::<admin::Admin<admin::ResetDestination>, _, _>(admin::reset_destination, NO_GUESTS)
        .ruma::<admin::Admin<admin::BackgroundUpdatesEnabled>, _, _>(
            admin::background_updates_enabled,
            NO_GUESTS,
        )
        .ruma::<admin::Admin<admin::BackgroundUpdatesStatus>, _, _>(
            admin::background_updates_status,
            NO_GUESTS,
        )
        .ruma_with_body::<admin::Admin<admin::SendServerNotice>, _, _>(admin::send_server_notice, NO_GUESTS)
        .ruma_with_body::<admin::Admin<admin::SendServerNoticeTxn>, _, _>(
            admin::send_server_notice_txn,
            NO_GUESTS,
        )
        .ruma_with_body::<admin::Admin<admin::PutUser>, _, _>(admin::put_user, NO_GUESTS)
        .ruma_with_body::<admin::Admin<admin::ResetPassword>, _, _>(admin::reset_password, NO_GUESTS)
        .ruma_with_body::<admin::Admin<admin::DeleteDevices>, _, _>(admin::delete_devices, NO_GUESTS)
        .ruma_with_body::<admin::Admin<admin::PutUserAdmin>, _, _>(admin::put_user_admin, NO_GUESTS)
        .ruma_with_body::<admin::Admin<admin::PutRoomBlock>, _, _>(admin::put_room_block, NO_GUESTS)
        .ruma_with_body::<admin::Admin<admin::NewToken>, _, _>(admin::new_registration_token, NO_GUESTS)
        .ruma_with_body::<admin::Admin<admin::PutToken>, _, _>(admin::put_registration_token, NO_GUESTS)
        // Hearth's own real-time channel; the only routes no ruma endpoint describes.
        .route(ws::WS_PATH, axum::routing::get(ws::connect))
        .route(ws::WS_SHORT_PATH, axum::routing::get(ws::connect))
        .route(ws::TICKET_PATH, axum::routing::post(ws::ticket))
        .fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(config))
        .with_state(hs)
}

async fn unrecognized() -> Response {
    ApiError::new(ErrorCode::Unrecognized, "Unrecognized request").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(ErrorCode::MethodNotAllowed, "Method not allowed").into_response()
}
