//! Turning handler results into HTTP responses: ruma responses as they serialize themselves,
//! errors through core's one errcode table.

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use hearth_core::{Error, ErrorCode};
use ruma::api::{OutgoingResponse, OutgoingResponseExt, error::StandardErrorBody};

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
        let body = serde_json::to_vec(&StandardErrorBody::new(kind, message))
            .unwrap_or_else(|_| br#"{"errcode":"M_UNKNOWN","error":"Internal server error"}"#.to_vec());
        json(status, body)
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
