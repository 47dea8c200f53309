//! core's outbound HTTP seam (`hearth_core::auth::http::HttpClient`) over reqwest: the only
//! place that knows both. Identity providers are reached through it.

use std::time::Duration;

use hearth_core::{
    auth::http::{HttpClient, HttpError, HttpRequest, HttpResponse},
    ephemeral::BoxFuture,
};

/// Responses larger than this are refused rather than read into memory.
const MAX_RESPONSE_BYTES: usize = 2 * 1024 * 1024;

pub struct ReqwestHttp {
    client: reqwest::Client,
}

impl ReqwestHttp {
    pub fn new() -> reqwest::Result<Self> {
        let client = reqwest::Client::builder()
            // A provider's back channel never redirects; following one could carry a secret
            // somewhere else.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self { client })
    }

    async fn exchange(&self, request: HttpRequest) -> Result<HttpResponse, HttpError> {
        let request = reqwest::Request::try_from(request).map_err(|e| HttpError(e.to_string()))?;
        let mut response = self.client.execute(request).await.map_err(|e| HttpError(e.to_string()))?;
        let mut builder = http::Response::builder().status(response.status()).version(response.version());
        if let Some(headers) = builder.headers_mut() {
            headers.extend(response.headers().iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| HttpError(e.to_string()))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(HttpError(format!("response larger than {MAX_RESPONSE_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        builder.body(body).map_err(|e| HttpError(e.to_string()))
    }
}

impl HttpClient for ReqwestHttp {
    fn send(&self, request: HttpRequest) -> BoxFuture<'_, Result<HttpResponse, HttpError>> {
        Box::pin(self.exchange(request))
    }
}
