//! The `hearth` binary's library half: configuration, wiring and the HTTP server.
//!
//! [`run`] takes an already-bound listener and a shutdown future, so tests start a real server
//! on port 0 and stop it when they like; `main.rs` only parses arguments and calls it.

pub mod admin_cli;
pub mod config;
mod federation_listener;
mod http_client;
mod mailer;
mod metrics;
mod queues;
mod redis_ephemeral;
mod router;
mod serve;
mod stream_bus;
pub mod telemetry;
mod url_fetch;
mod web_client;

use std::{future::Future, sync::Arc};

use anyhow::Context;
use hearth_core::{
    Backends, Homeserver,
    ephemeral::LocalEphemeral,
    media::{MediaBackends, NoFederation},
};
use hearth_storage::Db;
use tokio::net::TcpListener;

pub use crate::{config::Config, router::app, serve::raise_nofile_limit};

/// How often presence changes wake their readers: bursts cost one wake-up per reader per flush.
const PRESENCE_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
/// How often time-driven presence transitions (idle, gone) are looked for.
const PRESENCE_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens storage (and Redis, when configured) and builds the homeserver the config describes.
pub async fn build(config: &Config) -> anyhow::Result<Homeserver> {
    // The PostgreSQL URL may carry a password: the message names the backend, not the URL.
    let db = Db::open(&config.storage).with_context(|| match config.storage.backend {
        hearth_storage::Backend::Rocksdb => {
            format!("opening the database at {}", config.storage.path.display())
        }
        hearth_storage::Backend::Postgres => {
            "opening the PostgreSQL database of storage.postgres_url".to_owned()
        }
    })?;
    // Short-lived state lives in this process unless Redis is configured to share it.
    let redis = match &config.redis.url {
        Some(url) => Some(
            hearth_storage::redis_kv::RedisKv::connect(url, &config.redis.key_prefix)
                .await
                .with_context(|| "connecting to redis.url".to_owned())?,
        ),
        None => None,
    };
    let ephemeral: Arc<dyn hearth_core::ephemeral::EphemeralStore> = match &redis {
        Some(kv) => Arc::new(redis_ephemeral::RedisEphemeral::new(kv.clone())),
        None => Arc::new(LocalEphemeral::new()),
    };
    // Processes sharing a store tell each other about their writes through Redis.
    let stream_bus = match (&redis, db.shared()) {
        (Some(kv), Some(_)) => Some(stream_bus::shared(kv.clone())),
        (None, Some(_)) => {
            tracing::warn!(
                "storage.backend = \"postgres\" without redis.url: fine for one process, but several \
                 processes on this database need Redis to wake each other's clients and to share \
                 sessions, tickets and rate limits"
            );
            None
        }
        _ => None,
    };
    let transport = match config.listen.federation {
        Some(_) => Some(Arc::new(
            hearth_federation::transport::HttpTransport::new(&config.federation)
                .map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    let federation: Option<Arc<dyn hearth_core::federation::Transport>> =
        transport.clone().map(|t| t as Arc<dyn hearth_core::federation::Transport>);
    // Other servers' media comes over federation when it is on; otherwise it is not found.
    let remote_media = transport.map(|t| Arc::new(hearth_federation::media::FederationMedia::new(t)));
    let remote: Arc<dyn hearth_core::media::RemoteMediaFetcher> = match &remote_media {
        Some(fetcher) => fetcher.clone(),
        None => Arc::new(NoFederation),
    };
    let policy = hearth_core::media::IpPolicy::new(
        &config.media.url_preview_ip_range_denylist,
        &config.media.url_preview_ip_range_allowlist,
    )
    .map_err(|e| anyhow::anyhow!("media.url_preview_ip_range_*: {e}"))?;
    let backends = Backends {
        media: MediaBackends {
            remote,
            urls: Arc::new(
                url_fetch::PreviewFetcher::new(policy).context("building the URL preview client")?,
            ),
        },
        federation,
        http: Arc::new(http_client::ReqwestHttp::new().context("building the outbound HTTP client")?),
        mailer: mailer::SmtpMailer::from_config(&config.email)
            .context("invalid configuration")?
            .map(|m| Arc::new(m) as Arc<dyn hearth_core::push::mail::Mailer>),
        search: open_search_index(config)?,
        stream_bus: stream_bus.clone().map(|bus| bus as Arc<dyn hearth_core::sync::stream::StreamBus>),
    };
    let hs = Homeserver::with_backends(config.homeserver(), db, ephemeral, backends)?;
    if let Some(bus) = stream_bus {
        bus.deliver_to(hs.downgrade());
    }
    if let Some(fetcher) = remote_media {
        fetcher.attach(&hs);
    }
    hs.ensure_appservice_senders().await.context("creating the application services' users")?;
    Ok(hs)
}

/// The search index inside the storage directory (refilled from the database when it is
/// missing or unreadable); `None` when search is off.
fn open_search_index(config: &Config) -> anyhow::Result<Option<Arc<hearth_storage::search::SearchIndex>>> {
    if !config.search.enabled {
        return Ok(None);
    }
    let language = hearth_storage::search::stemming_language(&config.search.language)
        .with_context(|| format!("invalid configuration: search.language {:?}", config.search.language))?;
    let dir = hearth_storage::search::index_dir(&config.storage.path);
    let index = hearth_storage::search::SearchIndex::open(&dir, language)
        .with_context(|| format!("opening the search index at {}", dir.display()))?;
    Ok(Some(Arc::new(index)))
}

/// Serves the Client-Server API on `listener` until `shutdown` completes, then drains
/// in-flight requests and flushes storage.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let federation = match config.listen.federation {
        Some(addr) => Some(
            TcpListener::bind(addr).await.with_context(|| format!("binding listen.federation = {addr}"))?,
        ),
        None => None,
    };
    run_with(config, listener, federation, shutdown).await
}

/// [`run`] with the federation listener already bound (tests bind port 0 first, to name the
/// port in the other server's configuration).
pub async fn run_with(
    config: Config,
    listener: TcpListener,
    federation: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let nofile = serve::raise_nofile_limit();
    let limits = serve::Limits::new(&config.connections, nofile)?;
    let hs = build(&config).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics = match config.listen.metrics {
        Some(addr) => {
            let metrics = metrics::Metrics::new(&hs);
            let listener =
                TcpListener::bind(addr).await.with_context(|| format!("binding listen.metrics = {addr}"))?;
            let bound = listener.local_addr().context("reading the metrics listener's address")?;
            tracing::info!(listen = %bound, "serving Prometheus metrics at /metrics");
            let app = metrics::router(metrics.clone());
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                };
                if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                    tracing::error!(%error, "the metrics listener failed");
                }
            });
            Some(metrics)
        }
        None => None,
    };
    let federation_tasks = match federation {
        Some(listener) if hs.federation.enabled() => {
            let tls = federation_listener::tls_config(&config)?;
            let addr = listener.local_addr().context("reading the federation listener's address")?;
            tracing::info!(listen = %addr, "serving the federation API");
            let mut app = hearth_federation::server::router(hs.clone());
            if let Some(metrics) = &metrics {
                app = app.layer(axum::middleware::from_fn_with_state(metrics.clone(), metrics::record));
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            vec![tokio::spawn(serve::serve(listener, Some(acceptor), app, limits.clone(), stop_rx.clone()))]
        }
        _ => Vec::new(),
    };
    let federation_sender = !federation_tasks.is_empty();
    warn_about_risky_settings(&config, &listener);
    let local = listener.local_addr().context("reading the listener's address")?;
    tracing::info!(
        server_name = %config.server_name,
        listen = %local,
        storage = %config.storage.path.display(),
        version = env!("CARGO_PKG_VERSION"),
        "Hearth is serving the client API"
    );
    // Presence changes that time alone causes (idle, gone) are announced by this timer (in the
    // process that runs the delivery queues), and the readers of all presence changes are woken
    // in batches.
    // Alone on its store, this process runs the queues from the start.
    let runs_queues = Arc::new(std::sync::atomic::AtomicBool::new(hs.db.shared().is_none()));
    let sweeper = {
        let (hs, runs_queues) = (hs.clone(), runs_queues.clone());
        tokio::spawn(async move {
            let mut flush = tokio::time::interval(PRESENCE_FLUSH_EVERY);
            let mut sweep_at = tokio::time::Instant::now();
            loop {
                flush.tick().await;
                hs.flush_presence();
                if tokio::time::Instant::now() >= sweep_at {
                    sweep_at += PRESENCE_SWEEP_EVERY;
                    let announce = runs_queues.load(std::sync::atomic::Ordering::Relaxed);
                    if let Err(error) = hs.sweep_presence(announce).await {
                        tracing::warn!(%error, "presence sweep failed");
                    }
                }
            }
        })
    };
    // The homeserver's own background work, each stopping on the same signal as the listeners.
    // Every process keeps its own search index; the queues run in one process at a time.
    let search_indexer = {
        let (hs, stop) = (hs.clone(), stopped(&stop_rx));
        tokio::spawn(async move { hs.run_search_indexer(stop).await })
    };
    let queues = tokio::spawn(queues::run(hs.clone(), federation_sender, runs_queues, stop_rx.clone()));
    let app = router::app(hs.clone(), config.client_api.clone(), &config.web_client, metrics);
    {
        let hs = hs.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: refusing new connections, answering long-polls");
            // Long-polls and WebSockets answer at once, so connections can drain within the grace.
            hs.notifier.close();
            let _ = stop_tx.send(true);
        });
    }
    serve::serve(listener, None, app, limits, stop_rx.clone()).await;
    sweeper.abort();
    let _ = sweeper.await;
    // Both stop on the same signal as the client listener and release their handles.
    let _ = search_indexer.await;
    let _ = queues.await;
    for task in federation_tasks {
        let _ = task.await;
    }
    tracing::info!("shutting down: flushing storage");
    hs.db.flush().context("flushing storage")?;
    Ok(())
}

/// Completes once the stop signal is given.
pub(crate) fn stopped(
    stop: &tokio::sync::watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'static {
    let mut stop = stop.clone();
    async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    }
}

fn warn_about_risky_settings(config: &Config, listener: &TcpListener) {
    let public = listener.local_addr().is_ok_and(|a| !a.ip().is_loopback());
    let open = config.registration.enabled && config.registration.token.is_none();
    if public && open {
        tracing::warn!(
            "registration is open to anyone on a non-loopback listener; set registration.token \
             or registration.enabled = false for a public server"
        );
    }
    if !config.storage.sync_writes {
        tracing::warn!("storage.sync_writes is off: acknowledged writes can be lost on power failure");
    }
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
