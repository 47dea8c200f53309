//! CORS the way Synapse answers it, so browser clients (Element Web) work from any origin:
//! every response carries the headers, and a preflight `OPTIONS` is answered at once.

use axum::{
    body::Body,
    http::{HeaderValue, Method, Request, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "X-Requested-With, Content-Type, Authorization, Date";
const EXPOSE_HEADERS: &str = "X-Request-Id";

fn add_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE_HEADERS));
}

/// Middleware: `axum::middleware::from_fn(cors)`.
pub async fn cors(request: Request<Body>, next: Next) -> Response {
    let mut response = if request.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    add_headers(&mut response);
    response
}
