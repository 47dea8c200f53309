//! An in-process server: `hearth::run` on a port-0 listener with its own data directory.

use std::net::SocketAddr;

use hearth::Config;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub struct TestServer {
    pub addr: SocketAddr,
    pub base_url: String,
    pub config: Config,
    /// Kept alive (and deleted at drop) unless the test moves it into a restart.
    pub dir: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// What every test server starts from: its own database (on the engine [`crate::backend`]
/// says), shared-secret registration, and no rate limits (tests act faster than people; the
/// tests of limits turn them on).
fn base_config(dir: &tempfile::TempDir) -> Config {
    let mut config = Config::default();
    config.storage.path = dir.path().join("db");
    config.registration.shared_secret = Some(crate::SHARED_SECRET.to_owned());
    config.rate_limits.enabled = false;
    crate::backend::apply(&mut config);
    config
}

impl TestServer {
    /// A server with open registration and shared-secret registration on.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(customize: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = base_config(&dir);
        customize(&mut config);
        Self::start_in(config, dir).await
    }

    /// Like [`Self::start_with`], but the listener is bound first and its address given to
    /// `customize`, for settings that name the server's own URL (`public_baseurl`).
    pub async fn start_at(customize: impl FnOnce(&mut Config, SocketAddr)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = base_config(&dir);
        customize(&mut config, addr);
        Self::start_on(listener, config, dir, None).await
    }

    /// Starts a server on `config`, keeping `dir` alive for as long as the server.
    pub async fn start_in(config: Config, dir: tempfile::TempDir) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        Self::start_on(listener, config, dir, None).await
    }

    /// Servers that federate with each other: each gets a federation listener on port 0 of its
    /// own loopback address (127.0.0.1, 127.0.0.2, ...), and each server name resolves to its
    /// listener through `federation.resolve_overrides`. TLS certificates are self-signed, so
    /// verification is off; private addresses are allowed (they are all loopback).
    pub async fn start_federation(names: &[&str], customize: impl Fn(&mut Config)) -> Vec<Self> {
        let mut listeners = Vec::new();
        for i in 0..names.len() {
            let ip = format!("127.0.0.{}", i + 1);
            listeners.push(TcpListener::bind(format!("{ip}:0")).await.expect("bind a federation port"));
        }
        let overrides: std::collections::BTreeMap<String, String> = names
            .iter()
            .zip(&listeners)
            .map(|(name, l)| ((*name).to_owned(), l.local_addr().expect("addr").to_string()))
            .collect();
        let mut servers = Vec::new();
        for (name, listener) in names.iter().zip(listeners) {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut config =
                Config { server_name: (*name).try_into().expect("server name"), ..base_config(&dir) };
            config.listen.federation = Some(listener.local_addr().expect("addr"));
            config.federation.verify_tls = false;
            config.federation.allow_private_addresses = true;
            config.federation.resolve_overrides = overrides.clone();
            customize(&mut config);
            let client = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
            servers.push(Self::start_on(client, config, dir, Some(listener)).await);
        }
        servers
    }

    /// A server named after its own federation address (`127.0.0.1:<port>`), so any peer finds
    /// it without overrides (as an IP literal with a port). Certificate checks are off and
    /// private addresses allowed, for peers on loopback.
    pub async fn start_federating_by_address(customize: impl FnOnce(&mut Config)) -> Self {
        let federation = TcpListener::bind("127.0.0.1:0").await.expect("bind a federation port");
        let addr = federation.local_addr().expect("addr");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config =
            Config { server_name: addr.to_string().try_into().expect("server name"), ..base_config(&dir) };
        config.listen.federation = Some(addr);
        config.federation.verify_tls = false;
        config.federation.allow_private_addresses = true;
        customize(&mut config);
        let client = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        Self::start_on(client, config, dir, Some(federation)).await
    }

    async fn start_on(
        listener: TcpListener,
        config: Config,
        dir: tempfile::TempDir,
        federation: Option<TcpListener>,
    ) -> Self {
        // A restart binds the federation address it had before.
        let federation = match (federation, config.listen.federation) {
            (Some(listener), _) => Some(listener),
            (None, Some(addr)) => Some(TcpListener::bind(addr).await.expect("rebind the federation port")),
            (None, None) => None,
        };
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let run_config = config.clone();
        let task = tokio::spawn(async move {
            hearth::run_with(run_config, listener, federation, async {
                let _ = rx.await;
            })
            .await
        });
        let mut server = Self {
            addr,
            base_url: format!("http://{addr}"),
            config,
            dir: Some(dir),
            shutdown: Some(tx),
            task: Some(task),
        };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&mut self) {
        let http = reqwest::Client::new();
        for _ in 0..200 {
            if self.task.as_ref().is_some_and(JoinHandle::is_finished) {
                let result = self.task.take().expect("task").await;
                panic!("test server exited during start-up: {result:?}");
            }
            if http.get(format!("{}/_matrix/client/versions", self.base_url)).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("test server at {} did not become ready", self.base_url);
    }

    /// Two servers, `hs-a.test` and `hs-b.test`, federating with each other (see
    /// [`Self::start_federation`]).
    pub async fn federating_pair() -> (Self, Self) {
        let mut servers = Self::start_federation(&["hs-a.test", "hs-b.test"], |_| {}).await;
        let b = servers.pop().expect("two servers");
        let a = servers.pop().expect("two servers");
        (a, b)
    }

    /// The server's own key response, over its federation listener (self-signed TLS).
    pub async fn server_keys(&self) -> serde_json::Value {
        let fed = self.config.listen.federation.expect("a federating server");
        let response = crate::insecure_https()
            .get(format!("https://{fed}/_matrix/key/v2/server"))
            .send()
            .await
            .expect("keys");
        response.json().await.expect("a JSON key response")
    }

    pub fn client(&self) -> crate::Client {
        crate::Client::new(&self.base_url)
    }

    /// Stops the server gracefully and returns its data directory, so the same data can be
    /// opened again.
    pub async fn stop(mut self) -> (Config, tempfile::TempDir) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server ran cleanly");
        }
        (self.config.clone(), self.dir.take().expect("data dir"))
    }

    /// Stops and starts again on the same data.
    pub async fn restart(self) -> Self {
        let (config, dir) = self.stop().await;
        Self::start_in(config, dir).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
