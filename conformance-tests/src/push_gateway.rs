//! A stand-in push gateway on loopback speaking the Push Gateway API
//! (`POST /_matrix/push/v1/notify`): it records what it receives, and can be told to reject a
//! pushkey, to fail, or to answer slowly, as real gateways do.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::post};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// How the gateway answers the next requests.
#[derive(Debug, Clone, Default)]
pub enum Mode {
    /// 200 with no rejected pushkeys.
    #[default]
    Accept,
    /// 200 naming these pushkeys as rejected.
    Reject(Vec<String>),
    /// 500, without recording the notification.
    Fail,
    /// Accept after this long.
    Slow(Duration),
}

#[derive(Default)]
struct Shared {
    mode: Mode,
    received: Vec<Value>,
    failed: usize,
}

type S = Arc<Mutex<Shared>>;

pub struct PushGateway {
    /// The URL pushers name: `http://127.0.0.1:PORT/_matrix/push/v1/notify`.
    pub url: String,
    shared: S,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PushGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn notify(State(s): State<S>, Json(body): Json<Value>) -> impl IntoResponse {
    let mode = s.lock().expect("lock").mode.clone();
    match mode {
        Mode::Fail => {
            s.lock().expect("lock").failed += 1;
            return (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": "down"})));
        }
        Mode::Slow(delay) => tokio::time::sleep(delay).await,
        Mode::Accept | Mode::Reject(_) => {}
    }
    s.lock().expect("lock").received.push(body);
    let rejected = match mode {
        Mode::Reject(keys) => keys,
        _ => Vec::new(),
    };
    (StatusCode::OK, Json(json!({ "rejected": rejected })))
}

impl PushGateway {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/_matrix/push/v1/notify", listener.local_addr().expect("addr"));
        let shared = S::default();
        let app = Router::new().route("/_matrix/push/v1/notify", post(notify)).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, shared, task }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.lock().expect("lock").mode = mode;
    }

    /// Every notification received (the `notification` objects), in order.
    pub fn received(&self) -> Vec<Value> {
        self.shared.lock().expect("lock").received.iter().map(|b| b["notification"].clone()).collect()
    }

    /// Requests answered with a failure so far.
    pub fn failures(&self) -> usize {
        self.shared.lock().expect("lock").failed
    }

    /// Waits (up to `limit`) until `count` notifications arrived; returns them all.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let received = self.received();
            if received.len() >= count || tokio::time::Instant::now() >= deadline {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A stand-in SMS gateway speaking Twilio's Messages API
/// (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded, HTTP basic auth with
/// the account SID and auth token): it records the messages it accepts.
pub struct SmsGateway {
    /// The API base URL (`sms.api_url`).
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: String,
    sent: Arc<Mutex<Vec<std::collections::HashMap<String, String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmsGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Sms = (String, String, Arc<Mutex<Vec<std::collections::HashMap<String, String>>>>);

async fn messages(
    State((sid, token, sent)): State<Sms>,
    axum::extract::Path(account): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    axum::Form(form): axum::Form<std::collections::HashMap<String, String>>,
) -> impl IntoResponse {
    use base64::Engine;
    let expected =
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{sid}:{token}")));
    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str());
    if !authorized || account != sid {
        return (StatusCode::UNAUTHORIZED, Json(json!({"code": 20003, "message": "Authenticate"})));
    }
    let to = form.get("To").cloned().unwrap_or_default();
    sent.lock().expect("lock").push(form);
    (
        StatusCode::CREATED,
        Json(json!({"sid": "SM00000000000000000000000000000000", "status": "queued", "to": to})),
    )
}

impl SmsGateway {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let (account_sid, auth_token) = ("AC0123456789".to_owned(), "sms-token".to_owned());
        let sent: Arc<Mutex<Vec<std::collections::HashMap<String, String>>>> = Arc::default();
        let state: Sms = (account_sid.clone(), auth_token.clone(), sent.clone());
        let app = Router::new()
            .route("/2010-04-01/Accounts/{account}/Messages.json", post(messages))
            .with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base_url, account_sid, auth_token, sent, task }
    }

    /// The form fields (`To`, `From`, `Body`) of every message accepted.
    pub fn sent(&self) -> Vec<std::collections::HashMap<String, String>> {
        self.sent.lock().expect("lock").clone()
    }
}
