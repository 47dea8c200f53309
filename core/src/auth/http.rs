//! Outbound HTTP for the homeserver logic (identity providers today). Core knows no HTTP client
//! library: the binary plugs one in behind [`HttpClient`].

use std::sync::Arc;

use crate::ephemeral::BoxFuture;

pub type HttpRequest = http::Request<Vec<u8>>;
pub type HttpResponse = http::Response<Vec<u8>>;

/// A request that got no HTTP response: connection refused, timeout, a body too large.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(pub String);

/// Sends one request and returns the response as it came; redirects are not followed (an
/// identity provider's back channel never redirects, and following one could leak a secret).
pub trait HttpClient: Send + Sync + 'static {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, HttpError>>;
}

/// The client of a homeserver that never talks to anything (unit tests).
#[derive(Debug, Default)]
pub struct NoHttp;

impl HttpClient for NoHttp {
    fn send(&self, _request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, HttpError>> {
        Box::pin(async { Err(HttpError("outbound HTTP is not available".to_owned())) })
    }
}

pub fn no_http() -> Arc<dyn HttpClient> {
    Arc::new(NoHttp)
}
