//! Turning handler results into HTTP responses: ruma responses as they serialize themselves,
//! errors through core's one errcode table.

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use hearth_core::{Error, ErrorCode};
use ruma::api::{IncomingRequest, Metadata, OutgoingResponse, OutgoingResponseExt, error::StandardErrorBody};

/// Every handler returns this error; it renders as `{"errcode", "error"}` with the right status.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Self(Error::new(code, message))
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.0;
        if let Error::Uiaa(info) = &error {
            return match serde_json::to_vec(info) {
                Ok(body) => json(StatusCode::UNAUTHORIZED, body),
                Err(e) => ApiError(Error::internal(e)).into_response(),
            };
        }
        let (status, kind) = error.status_and_kind();
        let message = if error.is_internal() {
            // Logged once, here, inside the request's span (which carries the request id).
            tracing::error!(%error, "request failed with an internal error");
            "Internal server error".to_owned()
        } else {
            error.to_string()
        };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = error_body(&StandardErrorBody::new(kind, message), error.extra_fields());
        let mut response = json(status, body);
        if let Some(secs) = error.retry_after_header()
            && let Ok(value) = header::HeaderValue::from_str(&secs)
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

fn error_body(
    standard: &StandardErrorBody,
    extra: Option<serde_json::Map<String, serde_json::Value>>,
) -> Vec<u8> {
    let fallback = || br#"{"errcode":"M_UNKNOWN","error":"Internal server error"}"#.to_vec();
    match extra {
        None => serde_json::to_vec(standard).unwrap_or_else(|_| fallback()),
        Some(extra) => match serde_json::to_value(standard) {
            Ok(serde_json::Value::Object(mut body)) => {
                body.extend(extra);
                serde_json::to_vec(&body).unwrap_or_else(|_| fallback())
            }
            _ => fallback(),
        },
    }
}

/// A ruma response, serialized by ruma.
pub struct RumaResponse<T>(pub T);

impl<T: OutgoingResponse> IntoResponse for RumaResponse<T> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<Vec<u8>>() {
            Ok(response) => response.map(axum::body::Body::from),
            Err(e) => ApiError(Error::internal(format!("serializing a response: {e}"))).into_response(),
        }
    }
}

/// Handlers return this.
pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body, for endpoints whose response Hearth builds itself rather than through a ruma
/// response type (endpoints outside the spec, and /sync, whose shape is assembled directly).
pub struct JsonBody(Vec<u8>);

impl JsonBody {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl ruma::api::OutgoingBody for JsonBody {
    type Error = std::convert::Infallible;

    fn content_type(&self) -> Option<axum::http::HeaderValue> {
        Some(axum::http::HeaderValue::from_static("application/json"))
    }

    fn try_into_buf<T: Default + bytes::BufMut + AsRef<[u8]>>(self) -> Result<T, std::convert::Infallible> {
        let mut buf = T::default();
        buf.put_slice(&self.0);
        Ok(buf)
    }
}

/// Any serializable value as a 200 JSON response.
pub struct Json<T>(pub T);

impl<T: serde::Serialize> OutgoingResponse for Json<T> {
    type Body = JsonBody;

    fn try_into_http_response_inner(
        self,
    ) -> Result<axum::http::Response<JsonBody>, ruma::api::error::IntoHttpError> {
        Ok(axum::http::Response::new(JsonBody(serde_json::to_vec(&self.0)?)))
    }
}

/// A ruma endpoint answered with JSON Hearth builds, for the few responses whose ruma type
/// cannot say what clients rely on (a key present with `null`, an empty list kept): the
/// request, paths and authentication stay ruma's.
pub struct JsonAnswered<R>(pub R);

impl<R: Metadata> Metadata for JsonAnswered<R> {
    const METHOD: axum::http::Method = R::METHOD;
    const RATE_LIMITED: bool = R::RATE_LIMITED;
    type Authentication = R::Authentication;
    type PathBuilder = R::PathBuilder;
    const PATH_BUILDER: Self::PathBuilder = R::PATH_BUILDER;
}

impl<R: IncomingRequest> IncomingRequest for JsonAnswered<R> {
    type EndpointError = R::EndpointError;
    type OutgoingResponse = Json<serde_json::Value>;

    fn try_from_http_request_inner(
        request: axum::http::Request<&[u8]>,
        path_args: &[&str],
    ) -> Result<Self, ruma::api::error::DeserializationError> {
        R::try_from_http_request_inner(request, path_args).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_limit_with_a_delay_says_when_to_retry() {
        let response =
            ApiError(Error::limit_exceeded("busy", std::time::Duration::from_millis(2500))).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
        assert_eq!(body["retry_after_ms"], 2500);
    }
}
