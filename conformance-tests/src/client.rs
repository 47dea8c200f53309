//! A minimal Matrix client over reqwest: raw requests that return status and JSON, and the
//! registration dance written out, so tests see exactly what goes over the wire.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base_url: String,
    pub access_token: Option<String>,
    pub user_id: Option<String>,
    pub device_id: Option<String>,
}

/// A response: status and body parsed as JSON (`Value::Null` for an empty or non-JSON body).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    pub fn errcode(&self) -> &str {
        self.body["errcode"].as_str().unwrap_or("")
    }

    /// Asserts a Matrix error with this status and errcode, and a human-readable message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, errcode: &str) {
        assert_eq!(self.status.as_u16(), status, "status; body: {}", self.body);
        assert_eq!(self.errcode(), errcode, "errcode; body: {}", self.body);
        assert!(self.body["error"].is_string(), "error message missing: {}", self.body);
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.body);
        &self.body
    }
}

impl Client {
    pub fn new(base_url: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base_url: base_url.to_owned(),
            access_token: None,
            user_id: None,
            device_id: None,
        }
    }

    pub fn with_token(&self, token: &str) -> Self {
        let mut c = self.clone();
        c.access_token = Some(token.to_owned());
        c
    }

    /// Sends a request with an optional JSON body, authenticated when the client has a token.
    pub async fn request(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base_url));
        if let Some(token) = &self.access_token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        Self::reply(req.send().await.expect("request sent")).await
    }

    /// Sends raw bytes as the body.
    pub async fn request_raw(&self, method: Method, path: &str, body: Vec<u8>) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base_url)).body(body);
        if let Some(token) = &self.access_token {
            req = req.bearer_auth(token);
        }
        Self::reply(req.send().await.expect("request sent")).await
    }

    pub async fn reply(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("response body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, body, headers }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.request(Method::DELETE, path, None).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.request(Method::PUT, path, Some(body)).await
    }

    /// A PUT that may meet a server going away: the status and, on 200, the `event_id` it
    /// answered; `None` when the connection was refused or cut before a whole answer.
    pub async fn try_put_event(&self, path: &str, body: &Value) -> Option<(u16, Option<String>)> {
        let mut req = self.http.put(format!("{}{path}", self.base_url)).json(body);
        if let Some(token) = &self.access_token {
            req = req.bearer_auth(token);
        }
        let reply = req.send().await.ok()?;
        let status = reply.status().as_u16();
        if status != 200 {
            return Some((status, None));
        }
        let value: Value = reply.json().await.ok()?;
        Some((status, value["event_id"].as_str().map(str::to_owned)))
    }

    /// Registers with the dummy flow: first a request without auth (expecting the 401 with
    /// flows and a session), then the same request completing `m.login.dummy`.
    pub async fn register(base_url: &str, username: &str, password: &str) -> Self {
        let anon = Self::new(base_url);
        let body = json!({"username": username, "password": password});
        let challenge = anon.post("/_matrix/client/v3/register", body.clone()).await;
        assert_eq!(challenge.status, StatusCode::UNAUTHORIZED, "{}", challenge.body);
        let session = challenge.body["session"].as_str().expect("UIA session").to_owned();
        let mut body = body;
        body["auth"] = json!({"type": "m.login.dummy", "session": session});
        let reply = anon.post("/_matrix/client/v3/register", body).await;
        Self::from_session(base_url, reply.assert_ok())
    }

    /// Registers through Synapse's shared-secret endpoint (on Hearth and on Synapse alike),
    /// as an admin when `admin` is set.
    pub async fn register_with_secret(
        base_url: &str,
        secret: &str,
        username: &str,
        password: &str,
        admin: bool,
    ) -> Self {
        use hmac::{Hmac, Mac};
        let anon = Self::new(base_url);
        let path = "/_synapse/admin/v1/register";
        let nonce = anon.get(path).await.assert_ok()["nonce"].as_str().expect("nonce").to_owned();
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("any key length works");
        let kind = if admin { "admin" } else { "notadmin" };
        mac.update(format!("{nonce}\0{username}\0{password}\0{kind}").as_bytes());
        let mac = hex::encode(mac.finalize().into_bytes());
        let body =
            json!({"nonce": nonce, "username": username, "password": password, "admin": admin, "mac": mac});
        let reply = anon.post(path, body).await;
        Self::from_session(base_url, reply.assert_ok())
    }

    /// Logs in with a password and returns a client holding the new session.
    pub async fn login(base_url: &str, user: &str, password: &str) -> Self {
        let anon = Self::new(base_url);
        let reply = anon
            .post(
                "/_matrix/client/v3/login",
                json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}),
            )
            .await;
        Self::from_session(base_url, reply.assert_ok())
    }

    /// A client holding the session a register or login response describes.
    pub fn from_session(base_url: &str, body: &Value) -> Self {
        let mut client = Self::new(base_url);
        client.access_token = body["access_token"].as_str().map(Into::into);
        client.user_id = body["user_id"].as_str().map(Into::into);
        client.device_id = body["device_id"].as_str().map(Into::into);
        client
    }

    /// Creates a room and returns its ID.
    pub async fn create_room(&self, body: Value) -> String {
        let reply = self.post("/_matrix/client/v3/createRoom", body).await;
        reply.assert_ok()["room_id"].as_str().expect("room_id").to_owned()
    }

    /// Sends an `m.text` message and returns its event ID.
    pub async fn send_text(&self, room: &str, txn: &str, body: &str) -> String {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
        let reply = self.put(&path, json!({"msgtype": "m.text", "body": body})).await;
        reply.assert_ok()["event_id"].as_str().expect("event_id").to_owned()
    }

    pub fn user_id(&self) -> &str {
        self.user_id.as_deref().expect("logged in")
    }

    /// The `next_batch` of an initial sync: a position to continue from.
    pub async fn since_now(&self) -> String {
        let reply = self.get("/_matrix/client/v3/sync?timeout=0").await;
        reply.assert_ok()["next_batch"].as_str().expect("next_batch").to_owned()
    }

    /// Syncs (incrementally from `since`, or from an initial sync) until one response satisfies
    /// `found`, and returns it. Bounded by time, 60 s of long-polls of a second each, not by
    /// their number: a server still receiving a stream of other events answers each poll at
    /// once.
    pub async fn sync_until(&self, since: Option<&str>, what: &str, found: impl Fn(&Value) -> bool) -> Value {
        let mut since = since.map(ToOwned::to_owned);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            let path = match &since {
                Some(s) => format!("/_matrix/client/v3/sync?timeout=1000&since={s}"),
                None => "/_matrix/client/v3/sync?timeout=0".to_owned(),
            };
            let body = self.get(&path).await.assert_ok().clone();
            if found(&body) {
                return body;
            }
            since = body["next_batch"].as_str().map(ToOwned::to_owned);
        }
        panic!("{:?} never saw {what} in /sync", self.user_id);
    }

    /// Syncs until `room`'s timeline has shown every body in `wanted`; returns the bodies seen.
    pub async fn wait_for_bodies(&self, room: &str, wanted: &[&str]) -> Vec<String> {
        let seen = std::sync::Mutex::new(Vec::<String>::new());
        self.sync_until(None, &format!("{wanted:?} in {room}"), |body| {
            let mut seen = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for event in body["rooms"]["join"][room]["timeline"]["events"].as_array().into_iter().flatten() {
                if let Some(text) = event["content"]["body"].as_str() {
                    seen.push(text.to_owned());
                }
            }
            wanted.iter().all(|w| seen.iter().any(|s| s == w))
        })
        .await;
        seen.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Device keys for this session's device, with placeholder key material (the server never
    /// checks it; clients do).
    pub fn device_keys(&self) -> Value {
        let device = self.device_id.clone().expect("logged in");
        json!({
            "user_id": self.user_id(),
            "device_id": device,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {format!("curve25519:{device}"): "curvekey", format!("ed25519:{device}"): "edkey"},
            "signatures": {self.user_id(): {format!("ed25519:{device}"): "sig"}},
        })
    }

    /// The `auth` object for a password UIA stage of this user.
    pub fn password_auth(&self, password: &str, session: &str) -> Value {
        json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": self.user_id()},
            "password": password,
            "session": session,
        })
    }
}
