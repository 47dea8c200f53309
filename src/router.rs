//! The HTTP stack around the APIs: request ids and tracing, panic containment, CORS; and the
//! web client beside them.

use std::{sync::Arc, time::Instant};

use crate::{config::WebClientConfig, metrics::Metrics};

use axum::{
    Router,
    body::Body,
    http::{HeaderValue, Request, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use hearth_client_api::ClientApiConfig;
use hearth_core::Homeserver;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Instrument;

/// The complete application: the client API with its middleware. With federation on, the
/// federation and key APIs are served here too (as Synapse does on its main listener), for
/// deployments that put both behind one TLS-terminating proxy and delegate to it. With the web
/// client on, its app is served at `/` and the paths of its build.
pub fn app(
    hs: Homeserver,
    client_api: ClientApiConfig,
    web_client: &WebClientConfig,
    metrics: Option<Arc<Metrics>>,
) -> Router {
    let mut router = hearth_client_api::router(hs.clone(), client_api)
        // For load balancers and orchestrators: the process is up and serving.
        .route("/health", axum::routing::get(|| async { "OK" }));
    if hs.federation.enabled() {
        // As a service (not nested) it sees the full path, as on its own listener.
        let federation = hearth_federation::server::router(hs).into_service::<Body>();
        router = router
            .route_service("/_matrix/federation/{*rest}", federation.clone())
            .route_service("/_matrix/key/{*rest}", federation);
    }
    if web_client.enabled {
        // Its routes never overlap the APIs', and the client API's fallback still answers the rest.
        router = router.merge(crate::web_client::router(web_client));
    }
    if let Some(metrics) = metrics {
        router = router.layer(middleware::from_fn_with_state(metrics, crate::metrics::record));
    }
    router
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(hearth_client_api::cors))
        .layer(middleware::from_fn(request_span))
}

/// Gives every request an id, logs it once when it completes, and returns the id to the client
/// in `X-Request-Id` so a report can be matched to the log. Only the path is logged: query
/// strings can carry access tokens.
async fn request_span(request: Request<Body>, next: Next) -> Response {
    let request_id = hearth_core::util::random_string(12);
    let span = tracing::info_span!(
        "request",
        id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    span.in_scope(|| tracing::debug!(status, micros, "request completed"));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

// The signature is the one `CatchPanicLayer::custom` requires.
#[allow(clippy::needless_pass_by_value)]
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "a request handler panicked");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        r#"{"errcode":"M_UNKNOWN","error":"Internal server error"}"#,
    )
        .into_response()
}
