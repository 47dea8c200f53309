//! Router tests: the whole client API on an in-memory homeserver, driven with `oneshot`, no socket.

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode},
};
use hearth_core::{Homeserver, config::HomeserverConfig};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{ClientApiConfig, router};

fn app() -> Router {
    router(Homeserver::for_tests(HomeserverConfig::for_tests()), ClientApiConfig::default())
}

async fn call(
    app: &Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn register(app: &Router, user: &str) -> String {
    let body = json!({"username": user, "password": "pw", "auth": {"type": "m.login.dummy"}});
    let (status, body) = call(app, Method::POST, "/_matrix/client/v3/register", None, Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_path_version_is_routed() {
    let app = app();
    for path in ["/_matrix/client/r0/login", "/_matrix/client/v3/login"] {
        let (status, body) = call(&app, Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (status, _) = call(&app, Method::GET, "/_matrix/client/versions", None, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn errors_are_matrix_errors() {
    let app = app();
    let (status, body) = call(&app, Method::GET, "/_matrix/client/v3/unknown", None, None).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_UNRECOGNIZED")));
    let (status, body) = call(&app, Method::PATCH, "/_matrix/client/v3/login", None, None).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("M_UNRECOGNIZED")));
    let (status, body) = call(&app, Method::GET, "/_matrix/client/v3/devices", None, None).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::UNAUTHORIZED, Some("M_MISSING_TOKEN")));
}

#[tokio::test]
async fn register_whoami_profile_round_trip() {
    let app = app();
    let token = register(&app, "router").await;
    let (status, body) =
        call(&app, Method::GET, "/_matrix/client/v3/account/whoami", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["user_id"], json!("@router:localhost"));

    let path = "/_matrix/client/v3/profile/@router:localhost/displayname";
    let (status, _) = call(&app, Method::PUT, path, Some(&token), Some(json!({"displayname": "R"}))).await;
    assert_eq!(status, StatusCode::OK);
    let (_, body) = call(&app, Method::GET, path, None, None).await;
    assert_eq!(body["displayname"], json!("R"));
}

#[tokio::test]
async fn uia_challenge_shape() {
    let app = app();
    let token = register(&app, "uia").await;
    let (status, body) = call(
        &app,
        Method::POST,
        "/_matrix/client/v3/delete_devices",
        Some(&token),
        Some(json!({"devices": []})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["flows"], json!([{"stages": ["m.login.password"]}]));
    assert!(body["session"].is_string());
    assert_eq!(body["params"], json!({}));
    assert!(body.get("errcode").is_none(), "a first challenge carries no error: {body}");
}

#[tokio::test]
async fn media_upload_streams_to_disk_and_downloads_with_safety_headers() {
    let app = app();
    let token = register(&app, "media").await;
    let upload = Request::builder()
        .method(Method::POST)
        .uri("/_matrix/media/v3/upload?filename=page.html")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "text/html")
        // Not JSON and larger than `max_request_bytes`: uploads bypass both checks.
        .body(Body::from(vec![b'<'; 2 * 1024 * 1024]))
        .unwrap();
    let resp = app.clone().oneshot(upload).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let uri = body["content_uri"].as_str().unwrap().strip_prefix("mxc://").unwrap().to_owned();

    let download = Request::builder()
        .uri(format!("/_matrix/client/v1/media/download/{uri}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(download).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let headers = resp.headers().clone();
    assert_eq!(headers["content-type"], "text/html");
    assert_eq!(headers["content-disposition"], "attachment; filename=page.html");
    assert!(headers["content-security-policy"].to_str().unwrap().starts_with("sandbox"));
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes().len(), 2 * 1024 * 1024);

    let (status, body) =
        call(&app, Method::GET, &format!("/_matrix/client/v1/media/download/{uri}"), None, None).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::UNAUTHORIZED, Some("M_MISSING_TOKEN")));
}

#[tokio::test]
async fn login_extensions_without_providers() {
    let app = app();
    let (status, body) = call(&app, Method::GET, "/_matrix/client/v3/login", None, None).await;
    assert_eq!((status, body["flows"].clone()), (StatusCode::OK, json!([{"type": "m.login.password"}])));
    let path = "/_matrix/client/v3/login/sso/redirect?redirectUrl=https%3A%2F%2Fapp.example%2F";
    let (status, body) = call(&app, Method::GET, path, None, None).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")));
    let (status, body) =
        call(&app, Method::POST, "/_matrix/client/v3/refresh", None, Some(json!({"refresh_token": "nope"})))
            .await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::UNAUTHORIZED, Some("M_UNKNOWN_TOKEN")));
    let login = json!({"type": "m.login.token", "token": "htl_nope"});
    let (status, body) = call(&app, Method::POST, "/_matrix/client/v3/login", None, Some(login)).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")));
    let fallback = "/_matrix/client/v3/auth/m.login.sso/fallback/web?session=unknown";
    let (status, body) = call(&app, Method::GET, fallback, None, None).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")));
    let callback = "/_matrix/client/unstable/io.hearth/sso/callback/github?code=x&state=y";
    let (status, body) = call(&app, Method::GET, callback, None, None).await;
    assert_eq!((status, body["errcode"].as_str()), (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")));
}
