//! What Hearth asks application services: whether a user or an alias in their namespace
//! exists (so that they can create it on demand), their third-party protocols, and pings.
//! Every request carries the service's `hs_token` in the `Authorization` header.

use std::time::{Duration, Instant};

use ruma::{OwnedRoomId, RoomAliasId, UserId};
use serde_json::{Value, json};

use super::Registration;
use crate::{
    Error, ErrorCode, Homeserver, Result,
    auth::http::{HttpError, HttpResponse},
};

/// How long a ping waits for the service: under the HTTP client's connect timeout (10 s), so
/// that a service that does not answer is reported as a timeout.
const PING_TIMEOUT: Duration = Duration::from_secs(8);
/// How long a query (user, alias, third party) waits.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a ping failed, as the client is told (MSC2659).
#[derive(Debug, thiserror::Error)]
pub enum PingError {
    #[error("The application service has no URL")]
    UrlNotSet,
    #[error("The application service did not answer in time")]
    Timeout,
    #[error("Could not reach the application service: {0}")]
    Connection(String),
    #[error("The application service answered with status {status}")]
    BadStatus { status: u16, body: String },
}

impl Homeserver {
    /// One request to a service under its `/_matrix/app/v1/` path.
    async fn appservice_call(
        &self,
        service: &Registration,
        method: http::Method,
        path: &str,
        body: Option<&Value>,
    ) -> std::result::Result<HttpResponse, HttpError> {
        let base = service.url.as_ref().ok_or_else(|| HttpError("no URL".to_owned()))?;
        let url = format!("{}/_matrix/app/v1/{path}", base.as_str().trim_end_matches('/'));
        let bytes = body.map(serde_json::to_vec).transpose().map_err(|e| HttpError(e.to_string()))?;
        let request = http::Request::builder()
            .method(method)
            .uri(url)
            .header(http::header::AUTHORIZATION, format!("Bearer {}", service.hs_token))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(bytes.unwrap_or_default())
            .map_err(|e| HttpError(e.to_string()))?;
        self.http.send(request).await
    }

    /// Delivers a request whose answer only matters as success (a transaction).
    pub(super) async fn send_to_appservice(
        &self,
        service: &Registration,
        method: http::Method,
        path: &str,
        body: &Value,
    ) -> Result<()> {
        let response = self
            .appservice_call(service, method, path, Some(body))
            .await
            .map_err(|e| Error::internal(format!("request failed: {e}")))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(Error::internal(format!("answered with status {}", response.status())))
        }
    }

    /// A GET whose 200 answer is JSON; anything else is `None` (logged), since a service that
    /// fails a query must not fail the client's request.
    async fn appservice_get(&self, service: &Registration, path: &str) -> Option<Value> {
        service.url.as_ref()?;
        // Logged without its query: a lookup's search fields are the user's business.
        let logged = path.split('?').next().unwrap_or_default();
        let call = self.appservice_call(service, http::Method::GET, path, None);
        match tokio::time::timeout(QUERY_TIMEOUT, call).await {
            Ok(Ok(response)) if response.status().is_success() => {
                serde_json::from_slice(response.body()).ok()
            }
            Ok(Ok(response)) => {
                if response.status() != http::StatusCode::NOT_FOUND {
                    tracing::info!(appservice = %service.id, path = logged, status = %response.status(), "query refused");
                }
                None
            }
            Ok(Err(_)) => {
                // The client's error names the whole URL, query included, so it is not logged.
                tracing::info!(appservice = %service.id, path = logged, "query failed");
                None
            }
            Err(_) => {
                tracing::info!(appservice = %service.id, path = logged, "query timed out");
                None
            }
        }
    }

    /// Whether a local user exists, after asking the services whose namespace holds it (a
    /// bridge creates its users when first asked about them).
    pub async fn user_exists_or_queried(&self, user: &UserId) -> Result<bool> {
        if self.users.exists(user)? {
            return Ok(true);
        }
        if !self.users.is_local(user) {
            return Ok(false);
        }
        for service in self.appservices.all().iter().filter(|s| s.owns_user(user)) {
            let path = format!("users/{}", urlencode(user.as_str()));
            if self.appservice_get(service, &path).await.is_some() && self.users.exists(user)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The room a local alias names, after asking the services whose namespace holds it when
    /// nobody has created it yet.
    pub async fn resolve_alias_or_query(&self, alias: &RoomAliasId) -> Result<Option<OwnedRoomId>> {
        if let Some(room) = self.rooms.resolve_alias(alias)? {
            return Ok(Some(room));
        }
        for service in self.appservices.all().iter().filter(|s| s.owns_alias(alias)) {
            let path = format!("rooms/{}", urlencode(alias.as_str()));
            if self.appservice_get(service, &path).await.is_some()
                && let Some(room) = self.rooms.resolve_alias(alias)?
            {
                return Ok(Some(room));
            }
        }
        Ok(None)
    }

    /// `POST /appservice/{id}/ping`: asks the service to answer, and times it. A success also
    /// retries a delivery that was waiting out its backoff.
    pub async fn ping_appservice(
        &self,
        service: &Registration,
        transaction_id: Option<&str>,
    ) -> std::result::Result<Duration, PingError> {
        if service.url.is_none() {
            return Err(PingError::UrlNotSet);
        }
        let started = Instant::now();
        let body = match transaction_id {
            Some(id) => json!({ "transaction_id": id }),
            None => json!({}),
        };
        let call = self.appservice_call(service, http::Method::POST, "ping", Some(&body));
        let response = match tokio::time::timeout(PING_TIMEOUT, call).await {
            Err(_) => return Err(PingError::Timeout),
            Ok(Err(error)) => return Err(PingError::Connection(error.0)),
            Ok(Ok(response)) => response,
        };
        if !response.status().is_success() {
            return Err(PingError::BadStatus {
                status: response.status().as_u16(),
                body: String::from_utf8_lossy(response.body()).into_owned(),
            });
        }
        self.appservices.retry(&service.id);
        Ok(started.elapsed())
    }

    /// `GET /thirdparty/protocols`: every protocol the services declare, as they describe it,
    /// with each instance given an `instance_id` that names its service. Services that declare
    /// the same protocol have their instances merged.
    pub async fn thirdparty_protocols(&self) -> Value {
        Value::Object(self.describe_protocols(None).await)
    }

    /// `GET /thirdparty/protocol/{protocol}`: asks only the services that declare it.
    pub async fn thirdparty_protocol(&self, protocol: &str) -> Result<Value> {
        self.describe_protocols(Some(protocol))
            .await
            .remove(protocol)
            .ok_or_else(|| Error::not_found("Unknown protocol"))
    }

    /// The services' descriptions of their protocols (or of `only` that one), merged.
    async fn describe_protocols(&self, only: Option<&str>) -> serde_json::Map<String, Value> {
        let mut out = serde_json::Map::new();
        for service in self.appservices.all() {
            for protocol in service.protocols.iter().filter(|p| only.is_none_or(|o| o == p.as_str())) {
                let path = format!("thirdparty/protocol/{}", urlencode(protocol));
                let Some(Value::Object(mut answer)) = self.appservice_get(service, &path).await else {
                    continue;
                };
                let Some(Value::Array(instances)) = answer.remove("instances") else { continue };
                let instances: Vec<Value> = instances
                    .into_iter()
                    .map(|mut instance| {
                        if let Some(network) = instance.get("network_id").and_then(Value::as_str) {
                            instance["instance_id"] = json!(format!("{}|{network}", service.id));
                        }
                        instance
                    })
                    .collect();
                match out.get_mut(protocol.as_str()) {
                    Some(existing) => {
                        if let Some(Value::Array(list)) = existing.get_mut("instances") {
                            list.extend(instances);
                        }
                    }
                    None => {
                        answer.insert("instances".to_owned(), Value::Array(instances));
                        out.insert(protocol.clone(), Value::Object(answer));
                    }
                }
            }
        }
        out
    }

    /// `GET /thirdparty/location|user/{protocol}?fields` and the reverse lookups without a
    /// protocol: every declaring service is asked, and well-formed answers are joined.
    /// `kind` is `location` or `user`; `fields` the search fields to pass on.
    pub async fn thirdparty_lookup(
        &self,
        kind: &str,
        protocol: Option<&str>,
        fields: &[(String, String)],
    ) -> Vec<Value> {
        let id_field = if kind == "user" { "userid" } else { "alias" };
        let query = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
        let mut out = Vec::new();
        for service in self.appservices.all() {
            if protocol.is_some_and(|p| !service.protocols.iter().any(|q| q == p)) {
                continue;
            }
            let mut path = match protocol {
                Some(p) => format!("thirdparty/{kind}/{}", urlencode(p)),
                None => format!("thirdparty/{kind}"),
            };
            if !query.is_empty() {
                path = format!("{path}?{query}");
            }
            let Some(Value::Array(items)) = self.appservice_get(service, &path).await else { continue };
            out.extend(items.into_iter().filter(|item| {
                item.get(id_field).is_some_and(Value::is_string)
                    && item.get("protocol").is_some_and(Value::is_string)
                    && item.get("fields").is_some_and(Value::is_object)
            }));
        }
        out
    }
}

impl From<PingError> for Error {
    fn from(error: PingError) -> Self {
        let code = match &error {
            PingError::UrlNotSet => ErrorCode::UrlNotSet,
            PingError::Timeout => ErrorCode::ConnectionTimeout,
            PingError::Connection(_) => ErrorCode::ConnectionFailed,
            PingError::BadStatus { .. } => ErrorCode::BadStatus,
        };
        match error {
            PingError::BadStatus { status, body } => Error::BadStatus { status, body },
            other => Error::new(code, other.to_string()),
        }
    }
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>().replace('+', "%20")
}
