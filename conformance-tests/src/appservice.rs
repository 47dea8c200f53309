//! A stand-in application service on loopback speaking the Application Service API: it
//! records the transactions it accepts (with the token they came with), can be told to refuse
//! them (as a bridge that is down), creates the users and aliases it is asked about through
//! the homeserver's client API as a bridge does, answers pings and describes one third-party
//! protocol.

use std::sync::{Arc, Mutex};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, post, put},
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// One accepted transaction.
#[derive(Debug, Clone)]
pub struct Txn {
    pub id: String,
    pub body: Value,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct Shared {
    /// Refuse transactions and pings with 503.
    down: bool,
    accepted: Vec<Txn>,
    refused: usize,
    pings: Vec<Value>,
    /// The homeserver and the service's token, for creating what it is asked about.
    homeserver: Option<(String, String)>,
}

type S = Arc<Mutex<Shared>>;

pub struct StandInAppservice {
    /// What the registration's `url` is: `http://127.0.0.1:PORT`.
    pub url: String,
    shared: S,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandInAppservice {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(s: &S) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn transaction(
    State(s): State<S>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> impl IntoResponse {
    let mut shared = lock(&s);
    if shared.down {
        shared.refused += 1;
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"errcode": "M_UNKNOWN", "error": "down"})));
    }
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    // A retried transaction is answered again but not recorded twice, as bridges do.
    if !shared.accepted.iter().any(|t| t.id == id) {
        shared.accepted.push(Txn { id, body, authorization });
    }
    (StatusCode::OK, Json(json!({})))
}

async fn ping(State(s): State<S>, Json(body): Json<Value>) -> impl IntoResponse {
    let mut shared = lock(&s);
    if shared.down {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"errcode": "M_UNKNOWN", "error": "down"})));
    }
    shared.pings.push(body);
    (StatusCode::OK, Json(json!({})))
}

/// `GET /users/{userId}`: registers users whose localpart contains `_auto_`.
async fn query_user(State(s): State<S>, Path(user): Path<String>) -> impl IntoResponse {
    let localpart = user.trim_start_matches('@').split(':').next().unwrap_or_default().to_owned();
    let body = json!({"type": "m.login.application_service", "username": localpart, "inhibit_login": true});
    create_on_demand(&s, &localpart, "register", body).await
}

/// `GET /rooms/{alias}`: creates a room with aliases whose localpart contains `_auto_`.
async fn query_alias(State(s): State<S>, Path(alias): Path<String>) -> impl IntoResponse {
    let localpart = alias.trim_start_matches('#').split(':').next().unwrap_or_default().to_owned();
    let body = json!({"room_alias_name": localpart, "preset": "public_chat"});
    create_on_demand(&s, &localpart, "createRoom", body).await
}

/// What a bridge does when asked about a user or alias of its namespace: creates it (through
/// the client API `endpoint`) and says it exists, or says it does not.
async fn create_on_demand(s: &S, localpart: &str, endpoint: &str, body: Value) -> (StatusCode, Json<Value>) {
    let homeserver = lock(s).homeserver.clone();
    let Some((hs, token)) = homeserver.filter(|_| localpart.contains("_auto_")) else {
        return (StatusCode::NOT_FOUND, Json(json!({"errcode": "M_NOT_FOUND"})));
    };
    let reply = reqwest::Client::new()
        .post(format!("{hs}/_matrix/client/v3/{endpoint}"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await;
    match reply {
        Ok(r) if r.status().is_success() => (StatusCode::OK, Json(json!({}))),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({}))),
    }
}

async fn protocol(Path(name): Path<String>) -> impl IntoResponse {
    if name != "gopher" {
        return (StatusCode::NOT_FOUND, Json(json!({"errcode": "M_NOT_FOUND"})));
    }
    (
        StatusCode::OK,
        Json(json!({
            "user_fields": ["nick"],
            "location_fields": ["hole"],
            "icon": "mxc://example.org/gopher",
            "field_types": {
                "nick": {"regexp": ".*", "placeholder": "nick"},
                "hole": {"regexp": ".*", "placeholder": "hole"}
            },
            "instances": [{"desc": "Gophernet", "network_id": "gophernet", "fields": {}}]
        })),
    )
}

async fn thirdparty_user(Path(name): Path<String>) -> impl IntoResponse {
    Json(json!([
        {"userid": "@gopher_bob:example.org", "protocol": name, "fields": {"nick": "bob"}},
        {"protocol": name, "fields": {}}
    ]))
}

impl StandInAppservice {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shared = S::default();
        let app = Router::new()
            .route("/_matrix/app/v1/transactions/{txn}", put(transaction))
            .route("/_matrix/app/v1/ping", post(ping))
            .route("/_matrix/app/v1/users/{user}", get(query_user))
            .route("/_matrix/app/v1/rooms/{alias}", get(query_alias))
            .route("/_matrix/app/v1/thirdparty/protocol/{name}", get(protocol))
            .route("/_matrix/app/v1/thirdparty/user/{name}", get(thirdparty_user))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, shared, task }
    }

    /// Lets the service create users and aliases it is asked about, on `homeserver` with its
    /// `as_token`.
    pub fn act_on(&self, homeserver: &str, as_token: &str) {
        lock(&self.shared).homeserver = Some((homeserver.to_owned(), as_token.to_owned()));
    }

    pub fn set_down(&self, down: bool) {
        lock(&self.shared).down = down;
    }

    pub fn accepted(&self) -> Vec<Txn> {
        lock(&self.shared).accepted.clone()
    }

    pub fn refused(&self) -> usize {
        lock(&self.shared).refused
    }

    pub fn pings(&self) -> Vec<Value> {
        lock(&self.shared).pings.clone()
    }

    /// Every event of every accepted transaction, in delivery order.
    pub fn events(&self) -> Vec<Value> {
        self.accepted()
            .into_iter()
            .flat_map(|t| t.body["events"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Every ephemeral event accepted, under the stable key.
    pub fn ephemeral(&self) -> Vec<Value> {
        self.accepted()
            .into_iter()
            .flat_map(|t| t.body["ephemeral"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Waits (bounded) until `found` holds for what was accepted.
    pub async fn wait_for(&self, what: &str, found: impl Fn(&Self) -> bool) {
        for _ in 0..600 {
            if found(self) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the application service never got {what}; accepted: {:#?}", self.accepted());
    }
}

/// A registration file as a bridge writes it, for a service named `id` at `url` (or none),
/// owning `@{id}_.*` and `#{id}_.*` exclusively.
pub fn registration_yaml(id: &str, url: Option<&str>, server_name: &str, extra: &str) -> String {
    let url = url.map_or_else(|| "null".to_owned(), |u| format!("'{u}'"));
    let server = server_name.replace('.', "\\.");
    format!(
        "id: {id}\nurl: {url}\nas_token: {id}-as-token\nhs_token: {id}-hs-token\nsender_localpart: {id}bot\n\
         rate_limited: false\nnamespaces:\n  users:\n    - exclusive: true\n      regex: '@{id}_.*:{server}'\n  \
         aliases:\n    - exclusive: true\n      regex: '#{id}_.*:{server}'\n  rooms: []\n{extra}"
    )
}
