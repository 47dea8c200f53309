//! Prometheus metrics on their own listener (`listen.metrics`, off by default): HTTP requests
//! by endpoint and status with latency histograms, counted as they are answered; and, read at
//! each scrape, open long-polls and WebSockets, events persisted, delivery backlogs and
//! federation failures per destination, RocksDB's numbers, and the process's memory and CPU.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{MatchedPath, State},
    http::{Request, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use hearth_core::Homeserver;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route's template (`/_matrix/client/v3/rooms/{roomId}/send/...`), never the path
    /// itself: one series per endpoint, whatever IDs clients send.
    endpoint: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    method: String,
    endpoint: String,
}

/// The registry and the request metrics the HTTP layer records into.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<EndpointLabels, Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(hs: &Homeserver) -> Arc<Self> {
        let mut registry = Registry::with_prefix("hearth");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by endpoint and status",
            requests.clone(),
        );
        // 1 ms to about 65 s: long-polls land in the last buckets.
        let durations = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 17))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its response",
            durations.clone(),
        );
        registry.register_collector(Box::new(ServerCollector { hs: hs.downgrade() }));
        Arc::new(Self { registry, requests, durations })
    }

    fn record(&self, method: &str, endpoint: &str, status: StatusCode, took: Duration) {
        let (method, endpoint) = (method.to_owned(), endpoint.to_owned());
        self.requests
            .get_or_create(&RequestLabels {
                method: method.clone(),
                endpoint: endpoint.clone(),
                status: status.as_u16(),
            })
            .inc();
        self.durations.get_or_create(&EndpointLabels { method, endpoint }).observe(took.as_secs_f64());
    }

    /// The exposition text of every metric.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Middleware recording every request of the router it wraps.
pub async fn record(State(metrics): State<Arc<Metrics>>, request: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics.record(&method, &endpoint, response.status(), started.elapsed());
    response
}

/// The metrics listener's routes: `GET /metrics`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(metrics)
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    // The collector reads storage: off the async threads.
    match tokio::task::spawn_blocking(move || metrics.render()).await {
        Ok(Ok(text)) => {
            // What the encoder writes (`_total` counters, `# EOF`); Prometheus asks for it.
            let kind = "application/openmetrics-text; version=1.0.0; charset=utf-8";
            ([(header::CONTENT_TYPE, kind)], text).into_response()
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Numbers read at each scrape.
#[derive(Debug)]
struct ServerCollector {
    hs: hearth_core::WeakHomeserver,
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// One gauge per label value.
fn labelled_gauges<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (&'a str, i64)>,
) -> Result<(), std::fmt::Error> {
    let kind = ConstGauge::new(0i64).metric_type();
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (key, value) in values {
        let labels = [(label, key)];
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn saturating(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Collector for ServerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(hs) = self.hs.upgrade() else { return Ok(()) };
        let activity = &hs.activity;
        let load = |a: &std::sync::atomic::AtomicI64| a.load(std::sync::atomic::Ordering::Relaxed);
        gauge(
            &mut encoder,
            "sync_long_polls",
            "/sync requests waiting for news",
            load(&activity.sync_long_polls),
        )?;
        gauge(&mut encoder, "websockets", "Open WebSocket connections", load(&activity.websockets))?;
        counter(
            &mut encoder,
            "events_persisted",
            "Events written to storage since start",
            hs.rooms.events_persisted(),
        )?;

        match hs.backlogs() {
            Ok(backlogs) => {
                let federation = backlogs.federation.iter().map(|(d, n)| (d.as_str(), saturating(*n)));
                labelled_gauges(
                    &mut encoder,
                    "federation_queue_items",
                    "Items queued per destination",
                    "destination",
                    federation,
                )?;
                gauge(
                    &mut encoder,
                    "push_queue_items",
                    "Notifications waiting for their pusher",
                    saturating(backlogs.push),
                )?;
                let services = backlogs.appservices.iter().map(|(s, n)| (s.as_str(), saturating(*n)));
                labelled_gauges(
                    &mut encoder,
                    "appservice_lag_positions",
                    "Stream positions a service has yet to acknowledge",
                    "service",
                    services,
                )?;
            }
            Err(error) => tracing::warn!(%error, "could not read the delivery backlogs for a scrape"),
        }

        let destinations = hs.federation.destinations.all();
        let kind = ConstCounter::new(0u64).metric_type();
        let mut failures = encoder.encode_descriptor(
            "federation_failures",
            "Failed transactions per destination",
            None,
            kind,
        )?;
        for (destination, status) in &destinations {
            let labels = [("destination", destination.as_str())];
            ConstCounter::new(status.failures).encode(failures.encode_family(&labels)?)?;
        }
        let backing_off =
            destinations.iter().map(|(d, s)| (d.as_str(), i64::from(s.retry_last_ts.is_some())));
        labelled_gauges(
            &mut encoder,
            "federation_backing_off",
            "1 while deliveries to a destination fail",
            "destination",
            backing_off,
        )?;

        for (name, value) in hs.db.engine_stats() {
            let help = "RocksDB's own figure of this name";
            gauge(&mut encoder, &format!("rocksdb_{name}"), help, saturating(value))?;
        }
        if let Some((rss, cpu)) = process_usage() {
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory of the process",
                saturating(rss),
            )?;
            let cpu = ConstCounter::new(cpu);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "CPU time the process used",
                None,
                cpu.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// Resident memory (bytes) and CPU time (seconds) of this process, from `/proc` (Linux).
fn process_usage() -> Option<(u64, f64)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, so split after its ')').
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // 4 KiB pages and 100 ticks a second, as x86-64 and most arm64 Linux kernels have.
    #[allow(clippy::cast_precision_loss)]
    Some((pages * 4096, ticks as f64 / 100.0))
}
