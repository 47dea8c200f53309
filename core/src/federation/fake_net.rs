//! A network of in-memory homeservers for tests: a [`Transport`] that hands each request to the
//! destination's core (the few federation endpoints gap filling and joins use), records what was
//! asked, and lets a test make a server misbehave by answering some requests itself.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId,
    api::{
        OutgoingResponse, OutgoingResponseExt,
        federation::{
            discovery::get_server_keys,
            event::{get_event, get_missing_events, get_room_state, get_room_state_ids},
            membership::{create_join_event, prepare_join_event},
            transactions::send_transaction_message,
        },
    },
};
use serde_json::{Value, value::RawValue};

use super::Transport;
use crate::{
    Error, ErrorCode, Homeserver, Result, WeakHomeserver, config::HomeserverConfig, ephemeral::BoxFuture,
    homeserver::Backends,
};

type Rewrite = Box<dyn Fn(&ServerName, &str, &mut Value) + Send + Sync>;
type Hook = Box<dyn Fn(&ServerName, &str) -> Option<Result<http::Response<Vec<u8>>>> + Send + Sync>;

#[derive(Default)]
pub struct FakeNet {
    servers: Mutex<HashMap<OwnedServerName, WeakHomeserver>>,
    /// Every request: destination, then method and path with query.
    log: Mutex<Vec<(OwnedServerName, String)>>,
    hooks: Mutex<Vec<Hook>>,
    rewrites: Arc<Mutex<Vec<Rewrite>>>,
}

impl FakeNet {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A homeserver named `name` on this network.
    pub fn server(self: &Arc<Self>, name: &str) -> Homeserver {
        let mut config = HomeserverConfig::for_tests();
        config.server_name = ServerName::parse(name).unwrap();
        let backends = Backends { federation: Some(self.clone()), ..Backends::default() };
        let hs = Homeserver::with_backends(
            config,
            hearth_storage::Db::in_memory(),
            Arc::new(crate::ephemeral::LocalEphemeral::new()),
            backends,
        )
        .unwrap();
        self.servers.lock().unwrap().insert(hs.server_name().to_owned(), hs.downgrade());
        hs
    }

    /// Answers requests for which `hook(destination, "METHOD /path?query")` (decoded) gives
    /// an answer.
    pub fn intercept(
        &self,
        hook: impl Fn(&ServerName, &str) -> Option<Result<http::Response<Vec<u8>>>> + Send + Sync + 'static,
    ) {
        self.hooks.lock().unwrap().push(Box::new(hook));
    }

    /// Changes the JSON body of successful answers: `rewrite(destination, request line, body)`.
    pub fn rewrite(&self, rewrite: impl Fn(&ServerName, &str, &mut Value) + Send + Sync + 'static) {
        self.rewrites.lock().unwrap().push(Box::new(rewrite));
    }

    /// The requests made so far whose "METHOD /path" contains `part`.
    pub fn requests(&self, part: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|(_, r)| r.contains(part)).count()
    }

    pub fn clear_log(&self) {
        self.log.lock().unwrap().clear();
    }
}

/// A JSON error answer, as a server sends it.
pub fn error_response(status: u16, message: &str) -> http::Response<Vec<u8>> {
    let body = serde_json::to_vec(&serde_json::json!({"errcode": "M_UNKNOWN", "error": message})).unwrap();
    http::Response::builder().status(status).body(body).unwrap()
}

pub fn decode(part: &str) -> String {
    let bytes = part.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&part[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn query(uri: &http::Uri, key: &str) -> Vec<String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| decode(v))
        .collect()
}

fn origin_of(request: &http::Request<Vec<u8>>) -> OwnedServerName {
    let header = request.headers().get("authorization").and_then(|h| h.to_str().ok()).unwrap_or_default();
    let origin = header
        .split("origin=")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_default()
        .trim_matches('"');
    ServerName::parse(origin).unwrap_or_else(|_| ruma::owned_server_name!("unsigned.invalid"))
}

pub fn reply<R: OutgoingResponse>(response: R) -> Result<http::Response<Vec<u8>>> {
    response.try_into_http_response::<Vec<u8>>().map_err(Error::internal)
}

fn raw(json: String) -> Box<RawValue> {
    RawValue::from_string(json).unwrap()
}

async fn dispatch(
    hs: Homeserver,
    origin: OwnedServerName,
    request: http::Request<Vec<u8>>,
) -> Result<http::Response<Vec<u8>>> {
    let uri = request.uri().clone();
    let segments: Vec<String> = uri.path().split('/').skip(1).map(decode).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let body: Value = serde_json::from_slice(request.body()).unwrap_or(Value::Null);
    let now = MilliSecondsSinceUnixEpoch::now;
    match segments.as_slice() {
        ["_matrix", "key", "v2", "server", ..] => {
            reply(get_server_keys::v2::Response::new(hs.server_keys_response()?.cast_unchecked()))
        }
        ["_matrix", "federation", "v1", "make_join", room, user] => {
            let versions: Vec<RoomVersionId> =
                query(&uri, "ver").iter().map(|v| RoomVersionId::try_from(v.as_str()).unwrap()).collect();
            let room = RoomId::parse(*room).unwrap();
            let (version, event) = hs.make_join(&origin, &room, &UserId::parse(*user).unwrap(), &versions)?;
            let mut response = prepare_join_event::v1::Response::new(event);
            response.room_version = Some(version);
            reply(response)
        }
        ["_matrix", "federation", "v2", "send_join", room, event] => {
            let pdu = raw(String::from_utf8(request.body().clone()).unwrap());
            let state = hs
                .send_join(&origin, &RoomId::parse(*room).unwrap(), &EventId::parse(*event).unwrap(), &pdu)
                .await?;
            reply(create_join_event::v2::Response::new(state))
        }
        ["_matrix", "federation", "v1", "send", txn] => {
            let pdus = body["pdus"].as_array().cloned().unwrap_or_default();
            let pdus = pdus.iter().map(|p| raw(p.to_string())).collect();
            let results = hs.receive_transaction(&origin, txn, pdus, Vec::new()).await?;
            reply(send_transaction_message::v1::Response::new(results))
        }
        ["_matrix", "federation", "v1", "event", event] => {
            let json = hs.event_for_server(&origin, &EventId::parse(*event).unwrap())?;
            reply(get_event::v1::Response::new(hs.server_name().to_owned(), now(), raw(json)))
        }
        ["_matrix", "federation", "v1", "get_missing_events", room] => {
            let ids = |key: &str| -> Vec<ruma::OwnedEventId> {
                serde_json::from_value(body[key].clone()).unwrap_or_default()
            };
            let limit = body["limit"].as_u64().unwrap_or(10) as usize;
            let events = hs.missing_events(
                &origin,
                &RoomId::parse(*room).unwrap(),
                &ids("earliest_events"),
                &ids("latest_events"),
                limit,
            )?;
            reply(get_missing_events::v1::Response::new(events.into_iter().map(raw).collect()))
        }
        ["_matrix", "federation", "v1", "state_ids", room] => {
            let event = EventId::parse(query(&uri, "event_id").pop().unwrap_or_default()).unwrap();
            let (chain, ids) = hs.state_ids_for_server(&origin, &RoomId::parse(*room).unwrap(), &event)?;
            reply(get_room_state_ids::v1::Response::new(chain, ids))
        }
        ["_matrix", "federation", "v1", "state", room] => {
            let event = EventId::parse(query(&uri, "event_id").pop().unwrap_or_default()).unwrap();
            let (pdus, chain) = hs.state_for_server(&origin, &RoomId::parse(*room).unwrap(), &event)?;
            let to_raw = |v: Vec<String>| v.into_iter().map(raw).collect();
            reply(get_room_state::v1::Response::new(to_raw(chain), to_raw(pdus)))
        }
        _ => Ok(error_response(404, "unknown endpoint")),
    }
}

impl Transport for FakeNet {
    fn send(
        &self,
        destination: &ServerName,
        request: http::Request<Vec<u8>>,
    ) -> BoxFuture<'_, Result<http::Response<Vec<u8>>>> {
        // Decoded, so tests can look for event IDs as they are.
        let line = format!(
            "{} {}",
            request.method(),
            decode(&request.uri().path_and_query().map(ToString::to_string).unwrap_or_default())
        );
        self.log.lock().unwrap().push((destination.to_owned(), line.clone()));
        let hooked = self.hooks.lock().unwrap().iter().find_map(|hook| hook(destination, &line));
        let hs = self.servers.lock().unwrap().get(destination).and_then(WeakHomeserver::upgrade);
        let rewrites = self.rewrites.clone();
        let destination = destination.to_owned();
        Box::pin(async move {
            if let Some(answer) = hooked {
                return answer;
            }
            let Some(hs) = hs else {
                return Err(Error::new(ErrorCode::RemoteUnavailable, "no such server"));
            };
            let origin = origin_of(&request);
            match dispatch(hs, origin, request).await {
                Ok(response) if response.status().is_success() => {
                    let (parts, body) = response.into_parts();
                    let mut json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    for rewrite in rewrites.lock().unwrap().iter() {
                        rewrite(&destination, &line, &mut json);
                    }
                    Ok(http::Response::from_parts(parts, serde_json::to_vec(&json).unwrap()))
                }
                Ok(response) => Ok(response),
                Err(error) => {
                    let (status, _) = error.code().status_and_kind();
                    Ok(error_response(status, &error.to_string()))
                }
            }
        })
    }
}
