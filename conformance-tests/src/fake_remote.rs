//! A hand-rolled remote homeserver, for tests that need another server to send what Hearth
//! would never send itself (malformed or mismatched membership events). It publishes an
//! ed25519 key over HTTPS (self-signed) on a loopback address, accepts every transaction, and
//! lets the test sign events and X-Matrix requests with that key; the transactions it got are
//! kept for the test to read. Everything else is 404.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{Json, Router, routing::get, routing::put};
use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use reqwest::Method;
use ruma::{
    CanonicalJsonObject, RoomVersionId,
    signatures::{Ed25519KeyPair, hash_and_sign_event, reference_hash, sign_json},
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};

const KEY_VERSION: &str = "fake1";

pub struct FakeRemote {
    pub name: String,
    pub addr: SocketAddr,
    key: Arc<Ed25519KeyPair>,
    task: JoinHandle<()>,
    transactions: Arc<Mutex<Vec<Value>>>,
}

impl Drop for FakeRemote {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn canonical(value: &Value) -> CanonicalJsonObject {
    serde_json::from_value(value.clone()).expect("a JSON object canonical JSON can hold")
}

impl FakeRemote {
    /// Listens on `ip` (a loopback address no other test server uses) as `name`: give Hearth a
    /// `federation.resolve_overrides` entry from `name` to [`Self::addr`].
    pub async fn start(name: &str, ip: &str) -> Self {
        let der = Ed25519KeyPair::generate();
        let key = Arc::new(Ed25519KeyPair::from_der(&der, KEY_VERSION.to_owned()).expect("the key parses"));
        let listener = TcpListener::bind(format!("{ip}:0")).await.expect("bind the fake server");
        let addr = listener.local_addr().expect("addr");

        let (server_name, signing) = (name.to_owned(), key.clone());
        let keys = move || {
            let (server_name, signing) = (server_name.clone(), signing.clone());
            async move {
                let mut body = canonical(&json!({
                    "server_name": server_name,
                    "verify_keys": {format!("ed25519:{KEY_VERSION}"): {"key": STANDARD_NO_PAD.encode(signing.public_key())}},
                    "old_verify_keys": {},
                    "valid_until_ts": 4_000_000_000_000_u64,
                }));
                sign_json(&server_name, signing.as_ref(), &mut body).expect("sign the keys");
                Json(serde_json::to_value(body).expect("JSON"))
            }
        };
        let transactions = Arc::new(Mutex::new(Vec::new()));
        let kept = transactions.clone();
        let send = move |Json(body): Json<Value>| {
            let kept = kept.clone();
            async move {
                kept.lock().expect("the transaction log").push(body);
                Json(json!({"pdus": {}}))
            }
        };
        let app = Router::new()
            .route("/_matrix/key/v2/server", get(keys))
            .route("/_matrix/federation/v1/send/{txn}", put(send))
            .fallback(|| async {
                (axum::http::StatusCode::NOT_FOUND, Json(json!({"errcode": "M_UNRECOGNIZED", "error": "no"})))
            });

        let (tls, _) = crate::self_signed_tls(name);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let service = TowerToHyperService::new(app);
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { name: name.to_owned(), addr, key, task, transactions }
    }

    /// The EDUs of every transaction received so far.
    pub fn edus(&self) -> Vec<Value> {
        let transactions = self.transactions.lock().expect("the transaction log");
        transactions.iter().flat_map(|t| t["edus"].as_array().cloned().unwrap_or_default()).collect()
    }

    /// A user ID on this server.
    pub fn user(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.name)
    }

    /// Hashes and signs `event` (a PDU without hashes and signatures) for a room of `version`;
    /// returns its event ID (the reference hash) and the signed PDU.
    pub fn sign_event(&self, event: &Value, version: &str) -> (String, Value) {
        let rules = RoomVersionId::try_from(version).expect("a room version").rules().expect("known rules");
        let mut object = canonical(event);
        for field in ["hashes", "signatures", "unsigned", "event_id"] {
            object.remove(field);
        }
        hash_and_sign_event(&self.name, self.key.as_ref(), &mut object, &rules.redaction)
            .expect("sign the event");
        let hash = reference_hash(&object, &rules).expect("a reference hash");
        (format!("${hash}"), serde_json::to_value(object).expect("JSON"))
    }

    /// An X-Matrix-signed request to `destination`, whose federation listener is at `addr`.
    /// Returns the status and the JSON body (`Null` when there is none).
    pub async fn request(
        &self,
        destination: &str,
        addr: SocketAddr,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut signed = json!({
            "method": method.as_str(),
            "uri": path,
            "origin": self.name,
            "destination": destination,
        });
        if let Some(body) = body {
            signed["content"] = body.clone();
        }
        let mut object = canonical(&signed);
        sign_json(&self.name, self.key.as_ref(), &mut object).expect("sign the request");
        let object = serde_json::to_value(object).expect("JSON");
        let signature = object["signatures"][&self.name][format!("ed25519:{KEY_VERSION}")]
            .as_str()
            .expect("a base64 signature")
            .to_owned();
        let header = format!(
            "X-Matrix origin=\"{}\",destination=\"{destination}\",key=\"ed25519:{KEY_VERSION}\",sig=\"{signature}\"",
            self.name
        );
        let mut request = crate::insecure_https()
            .request(method, format!("https://{addr}{path}"))
            .header("Authorization", header);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("the federation request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}
