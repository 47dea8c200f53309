//! The connection layer under both listeners: accepts sockets, refuses those over the
//! connection caps, applies header, body and idle timeouts, and drains connections on shutdown.
//!
//! A public server meets clients that open sockets and never speak, trickle one byte at a time,
//! or open thousands of connections from one address. None of them may take the server off the
//! air for others, so every connection is bounded in time (headers, body, idle keep-alive) and
//! in number (globally and per client address).

use std::{
    collections::HashMap,
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo};
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use ipnet::IpNet;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
    time::{Instant, Sleep},
};
use tower::ServiceExt;

use crate::config::ConnectionConfig;

/// File descriptors kept back from connections for storage, outbound requests and media.
const RESERVED_FDS: u64 = 512;
/// Longest a TLS client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the refusal of an over-cap connection may take to write.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Raises the soft limit on open files to the hard limit, so that the connection cap and not the
/// operating system's default (often 1,024) decides how many clients are served. Returns the
/// soft limit in force afterwards, when it can be read.
pub fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (soft, hard) = (limit.current, limit.maximum);
    if let (Some(current), Some(max)) = (soft, hard)
        && current < max
    {
        let raised = rustix::process::Rlimit { current: Some(max), maximum: Some(max) };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::info!(from = current, to = max, "raised the open-file limit");
                return Some(max);
            }
            Err(error) => tracing::warn!(%error, current, "cannot raise the open-file limit"),
        }
    }
    // `None` means unlimited for either field.
    soft.or(Some(u64::MAX))
}

/// The limits one listener applies, resolved from the configuration and the open-file limit.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub min_body_bytes_per_sec: u64,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub uncapped: Vec<IpNet>,
    pub max_header_count: usize,
    pub max_header_bytes: usize,
    pub shutdown_grace: Duration,
}

impl Limits {
    pub fn new(config: &ConnectionConfig, nofile: Option<u64>) -> anyhow::Result<Self> {
        let uncapped = config
            .uncapped_addresses
            .iter()
            .map(|net| {
                net.parse::<IpNet>().or_else(|_| net.parse::<IpAddr>().map(IpNet::from)).map_err(|_| {
                    anyhow::anyhow!(
                        "connections.uncapped_addresses: {net:?} is not an address or a CIDR range"
                    )
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // Never promise more connections than there are descriptors to hold them.
        let by_fds = nofile.map_or(usize::MAX, |soft| {
            let usable = soft.saturating_sub(RESERVED_FDS).max(soft / 2);
            usize::try_from(usable).unwrap_or(usize::MAX)
        });
        let max_connections = config.max_connections.min(by_fds).max(1);
        if max_connections < config.max_connections {
            tracing::warn!(
                configured = config.max_connections,
                effective = max_connections,
                "connections.max_connections lowered to fit the open-file limit"
            );
        }
        Ok(Self {
            header_timeout: Duration::from_secs(config.header_timeout_secs.max(1)),
            body_idle_timeout: Duration::from_secs(config.body_idle_timeout_secs.max(1)),
            min_body_bytes_per_sec: config.min_body_bytes_per_sec,
            max_connections,
            max_connections_per_ip: config.max_connections_per_ip.max(1),
            uncapped,
            max_header_count: config.max_header_count.max(16),
            max_header_bytes: config.max_header_bytes.max(4096),
            shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        })
    }
}

/// Open connections, globally and per client address.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Holds one slot of the connection caps; frees it when the connection ends.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.total = counts.total.saturating_sub(1);
        if let Some(ip) = self.ip
            && let Some(n) = counts.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&ip);
            }
        }
    }
}

fn take_slot(counts: &Arc<Mutex<Counts>>, limits: &Limits, ip: IpAddr) -> Option<Slot> {
    let mut guard = counts.lock().unwrap_or_else(PoisonError::into_inner);
    if guard.total >= limits.max_connections {
        return None;
    }
    let capped = !limits.uncapped.iter().any(|net| net.contains(&ip));
    if capped {
        let n = guard.per_ip.entry(ip).or_insert(0);
        if *n >= limits.max_connections_per_ip {
            if *n == 0 {
                guard.per_ip.remove(&ip);
            }
            return None;
        }
        *n += 1;
    }
    guard.total += 1;
    Some(Slot { counts: counts.clone(), ip: capped.then_some(ip) })
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` flips; then stops
/// accepting, asks every connection to finish its in-flight requests, and waits at most the
/// grace period before cutting the rest.
pub async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let limits = Arc::new(limits);
    let counts = Arc::new(Mutex::new(Counts::default()));
    let mut connections = JoinSet::new();
    let mut refused_logged = Instant::now() - Duration::from_secs(60);
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // Out of descriptors (EMFILE) or a transient error: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = take_slot(&counts, &limits, peer.ip()) else {
            if refused_logged.elapsed() > Duration::from_secs(10) {
                tracing::warn!(%peer, "connection refused: over the connection cap");
                refused_logged = Instant::now();
            }
            if tls.is_none() {
                connections.spawn(refuse(stream));
            }
            continue;
        };
        let (tls, app, limits, shutdown) = (tls.clone(), app.clone(), limits.clone(), shutdown.clone());
        connections.spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            match tls {
                None => serve_connection(stream, peer, app, &limits, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_connection(stream, peer, app, &limits, shutdown).await,
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    let open = connections.len();
    if open > 0 {
        tracing::info!(open, grace_secs = limits.shutdown_grace.as_secs(), "draining connections");
    }
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(left = connections.len(), "grace period over: closing the remaining connections");
    }
    connections.shutdown().await;
}

/// Tells a client over the cap why it is refused, then closes.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = r#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too many connections"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, stream.write_all(response.as_bytes())).await;
    let _ = stream.shutdown().await;
}

async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    limits: &Limits,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Covers the wait for the next request on a kept-alive connection too: an idle
        // connection is closed after this long.
        .header_read_timeout(limits.header_timeout)
        .max_headers(limits.max_header_count)
        // The head must fit in the read buffer: a larger one is answered 431.
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(128)
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    let (idle, min_rate) = (limits.body_idle_timeout, limits.min_body_bytes_per_sec);
    let started = Arc::new(AtomicBool::new(false));
    let service_started = started.clone();
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let app = app.clone();
        service_started.store(true, Ordering::Relaxed);
        async move {
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(ConnectInfo(peer));
            let body = Body::new(SlowBodyGuard::new(body, idle, min_rate));
            let response: Response<Body> = app.oneshot(Request::from_parts(parts, body)).await?;
            Ok::<_, Infallible>(response)
        }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut draining = *shutdown.borrow();
    if draining {
        connection.as_mut().graceful_shutdown();
    }
    // Before the first request, the protocol is still being sniffed and hyper's header timeout
    // has not started: a socket that never sends a byte is closed by this deadline instead.
    let first_request = tokio::time::sleep(limits.header_timeout);
    tokio::pin!(first_request);
    let mut waiting_for_first = true;
    loop {
        tokio::select! {
            () = &mut first_request, if waiting_for_first => {
                if !started.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "no request within the header timeout: closing");
                    return;
                }
                waiting_for_first = false;
            }
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            changed = shutdown.changed(), if !draining => {
                // Finish the request in flight, then close (HTTP/2: GOAWAY).
                draining = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A request body that fails when the client stalls: no data for `idle`, or (after a short
    /// start) an average rate under `min_rate` bytes per second. A trickling client is cut off
    /// instead of holding a connection and a handler for as long as it likes.
    struct SlowBodyGuard<B> {
        #[pin]
        inner: B,
        #[pin]
        stall: Sleep,
        idle: Duration,
        min_rate: u64,
        started: Instant,
        received: u64,
    }
}

/// How long a body may take before its average rate is held against it.
const RATE_GRACE: Duration = Duration::from_secs(10);

impl<B> SlowBodyGuard<B> {
    fn new(inner: B, idle: Duration, min_rate: u64) -> Self {
        let now = Instant::now();
        Self { inner, stall: tokio::time::sleep_until(now + idle), idle, min_rate, started: now, received: 0 }
    }
}

/// Why a request body was abandoned.
#[derive(Debug, thiserror::Error)]
enum SlowBody {
    #[error("no request body data for {0:?}")]
    Stalled(Duration),
    #[error("request body slower than {0} bytes/s")]
    TooSlow(u64),
}

impl<B> HttpBody for SlowBodyGuard<B>
where
    B: HttpBody<Data = bytes::Bytes>,
    B::Error: Into<axum::BoxError>,
{
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.received += data.len() as u64;
                }
                let elapsed = this.started.elapsed();
                if *this.min_rate > 0 && elapsed > RATE_GRACE {
                    let expected = (*this.min_rate as u128 * elapsed.as_millis()) / 1000;
                    if u128::from(*this.received) < expected {
                        return Poll::Ready(Some(Err(Box::new(SlowBody::TooSlow(*this.min_rate)))));
                    }
                }
                this.stall.as_mut().reset(Instant::now() + *this.idle);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.stall.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(SlowBody::Stalled(*this.idle))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
