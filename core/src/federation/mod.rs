//! Federation as the homeserver logic sees it: signed requests to other servers through a
//! [`Transport`] the binary plugs in, our keys and other servers' keys, verifying what arrives,
//! and the durable outbox of what must leave.
//!
//! Nothing here knows HTTP clients or sockets: a request is built and X-Matrix-signed with
//! ruma's types, then handed to the transport, which only resolves and carries it.

pub mod acl;
pub mod e2ee;
pub mod edus;
pub mod gaps;
pub mod hierarchy;
pub mod history;
pub mod inbound;
pub mod join;
pub mod keys;
pub mod members;
pub mod outbox;
pub mod query;
pub mod serve;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use hearth_storage::{Db, schema::FederationOutbox};
use ruma::{
    OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, ServerName,
    api::{
        IncomingResponseExt, OutgoingRequest, OutgoingRequestExt, auth_scheme::AuthScheme,
        federation::authentication::XMatrixSigningInput, path_builder::PathBuilder,
    },
};

use crate::{Error, ErrorCode, Homeserver, Result, ephemeral::BoxFuture};

/// Carries a request to another server and brings back its response, whatever the status.
/// Implemented by the federation crate (resolution, TLS, address checks).
pub trait Transport: Send + Sync + 'static {
    fn send(
        &self,
        destination: &ServerName,
        request: http::Request<Vec<u8>>,
    ) -> BoxFuture<'_, Result<http::Response<Vec<u8>>>>;
}

/// Federation state shared by the inbound and outbound sides.
pub struct Federation {
    transport: Option<Arc<dyn Transport>>,
    /// Last outbox sequence number handed out (by this process; on a shared store the store
    /// counts, from at least this).
    seq: AtomicU64,
    /// The store, when several processes share it.
    shared: Option<Db>,
    /// Destinations with something new in their outbox, taken by the sender.
    pending: Mutex<BTreeSet<OwnedServerName>>,
    wake: tokio::sync::Notify,
    /// Per room, the backfill frontier whose last fetch brought nothing new, so paging at the
    /// start of such a room does not ask again every time. Forgotten at restart.
    dead_ends: Mutex<HashMap<OwnedRoomId, Vec<OwnedEventId>>>,
    /// Servers not asked again for a while after failing to answer our gap-filling requests.
    pub backoff: gaps::Backoff,
    /// How deliveries to each destination went (admin API, metrics).
    pub destinations: crate::metrics::Destinations,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation").field("enabled", &self.transport.is_some()).finish_non_exhaustive()
    }
}

impl Federation {
    pub fn new(transport: Option<Arc<dyn Transport>>, db: &Db) -> Result<Self> {
        let mut last = 0;
        for entry in db.scan_prefix_all::<FederationOutbox>()? {
            let ((_, seq), _) = entry?;
            last = last.max(seq);
        }
        Ok(Self {
            transport,
            seq: AtomicU64::new(last),
            shared: db.shared().is_some().then(|| db.clone()),
            pending: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            dead_ends: Mutex::default(),
            backoff: gaps::Backoff::default(),
            destinations: crate::metrics::Destinations::default(),
        })
    }

    /// A new outbox sequence number, above every one stored.
    pub fn next_seq(&self) -> Result<u64> {
        if let Some(store) = self.shared.as_ref().and_then(Db::shared) {
            // Processes sharing the store must not give two items one key.
            return Ok(store.increment("outbox_seq", self.seq.load(Ordering::Relaxed))?);
        }
        Ok(self.seq.fetch_add(1, Ordering::Relaxed) + 1)
    }

    pub fn enabled(&self) -> bool {
        self.transport.is_some()
    }

    /// Whether backfilling from `frontier` already brought nothing.
    pub fn is_dead_end(&self, room_id: &RoomId, frontier: &[OwnedEventId]) -> bool {
        let dead_ends = self.dead_ends.lock().unwrap_or_else(PoisonError::into_inner);
        dead_ends.get(room_id).is_some_and(|f| f == frontier)
    }

    pub fn mark_dead_end(&self, room_id: &RoomId, frontier: Vec<OwnedEventId>) {
        self.dead_ends.lock().unwrap_or_else(PoisonError::into_inner).insert(room_id.to_owned(), frontier);
    }

    /// Marks destinations as having work and wakes the sender.
    pub fn poke<'a>(&self, destinations: impl IntoIterator<Item = &'a ServerName>) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let before = pending.len();
        pending.extend(destinations.into_iter().map(ToOwned::to_owned));
        if pending.len() != before {
            self.wake.notify_one();
        }
    }

    /// Waits until some destination has work, then takes them all.
    pub async fn next_pending(&self) -> BTreeSet<OwnedServerName> {
        loop {
            let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner));
            if !taken.is_empty() {
                return taken;
            }
            self.wake.notified().await;
        }
    }
}

/// The remote's refusal as the error our own caller gets: its errcode's meaning kept where we
/// have one (a 403 stays a 403 for the client whose join was refused), otherwise a 502.
fn remote_error(destination: &ServerName, status: http::StatusCode, body: &[u8]) -> Error {
    let reason = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(ToOwned::to_owned))
        .unwrap_or_else(|| status.to_string());
    let message = format!("{destination}: {reason}");
    match status.as_u16() {
        403 => Error::forbidden(message),
        404 => Error::not_found(message),
        400 => Error::bad_request(message),
        _ => Error::new(ErrorCode::RemoteUnavailable, message),
    }
}

impl Homeserver {
    fn transport(&self) -> Result<&Arc<dyn Transport>> {
        self.federation
            .transport
            .as_ref()
            .ok_or_else(|| Error::new(ErrorCode::Forbidden, "Federation is disabled on this server"))
    }

    /// Sends an X-Matrix-signed federation request and parses the response.
    pub async fn federation_request<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest,
        for<'a> R::Authentication: AuthScheme<Input<'a> = XMatrixSigningInput<'a>>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = ()>,
    {
        let input = XMatrixSigningInput::new(
            self.server_name().to_owned(),
            destination.to_owned(),
            &self.signing_key.pair,
        );
        let http_request = request
            .try_into_http_request::<Vec<u8>>("", input, ())
            .map_err(|e| Error::internal(format!("building a federation request: {e}")))?;
        self.exchange::<R>(destination, http_request).await
    }

    /// Sends an unauthenticated federation request (the key endpoints).
    pub async fn unsigned_request<R>(
        &self,
        destination: &ServerName,
        request: R,
    ) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest,
        for<'a> R::Authentication: AuthScheme<Input<'a> = ()>,
        for<'a> R::PathBuilder: PathBuilder<Input<'a> = ()>,
    {
        let http_request = request
            .try_into_http_request::<Vec<u8>>("", (), ())
            .map_err(|e| Error::internal(format!("building a federation request: {e}")))?;
        self.exchange::<R>(destination, http_request).await
    }

    async fn exchange<R: OutgoingRequest>(
        &self,
        destination: &ServerName,
        request: http::Request<Vec<u8>>,
    ) -> Result<R::IncomingResponse> {
        if destination == self.server_name() {
            return Err(Error::internal("refusing to send a federation request to ourselves"));
        }
        // Every outbound request passes here: a name outside the grammar never reaches DNS.
        crate::server_name::check_server_name(destination)?;
        let response = self.transport()?.send(destination, request).await?;
        let (parts, body) = response.into_parts();
        if !parts.status.is_success() {
            return Err(remote_error(destination, parts.status, &body));
        }
        let response = http::Response::from_parts(parts, body.as_slice());
        <R::IncomingResponse as IncomingResponseExt>::try_from_http_response(response).map_err(|e| {
            Error::new(
                ErrorCode::RemoteUnavailable,
                format!("{destination} sent a response we cannot read: {e}"),
            )
        })
    }
}

#[cfg(test)]
mod fake_net;
#[cfg(test)]
mod gap_tests;
#[cfg(test)]
mod tests;
