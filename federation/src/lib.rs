//! hearth-federation: the Matrix Server-Server API.
//!
//! Not built yet. Its place in the crate graph is fixed: it depends on `hearth-core` only, and
//! plugs into the homeserver through a trait that core defines (outbound PDUs and EDUs), so that
//! core never imports HTTP clients and `hearth-client-api` never imports this crate.
