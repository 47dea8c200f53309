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

/// The member events among a response's `state` list: user ID to display name.
fn members_of(state: &Value) -> std::collections::BTreeMap<String, Value> {
    state
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .map(|e| (e["state_key"].as_str().unwrap().to_owned(), e["content"]["displayname"].clone()))
        .collect()
}

#[tokio::test]
async fn lazy_loaded_members_are_the_windows_senders_at_the_window_on_every_read_path() {
    let app = app();
    let (alice, bob, carol, dave) = (
        register(&app, "alice").await,
        register(&app, "bob").await,
        register(&app, "carol").await,
        register(&app, "dave").await,
    );
    let (_, created) = call(
        &app,
        Method::POST,
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        Some(json!({"preset": "public_chat"})),
    )
    .await;
    let room = created["room_id"].as_str().unwrap().to_owned();
    let join = format!("/_matrix/client/v3/rooms/{room}/join");
    for token in [&bob, &carol] {
        let (status, body) = call(&app, Method::POST, &join, Some(token), Some(json!({}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let rename = |name: &'static str| {
        let app = app.clone();
        let (bob, room) = (bob.clone(), room.clone());
        async move {
            let path = format!("/_matrix/client/v3/rooms/{room}/state/m.room.member/@bob:localhost");
            let content = json!({"membership": "join", "displayname": name});
            let (status, body) = call(&app, Method::PUT, &path, Some(&bob), Some(content)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    rename("Bob Two").await;
    let mut sent = Vec::new();
    for (i, token) in [&alice, &bob, &carol].into_iter().enumerate() {
        let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t{i}");
        let body = json!({"msgtype": "m.text", "body": format!("m{i}")});
        let (status, body) = call(&app, Method::PUT, &path, Some(token), Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        sent.push(body["event_id"].as_str().unwrap().to_owned());
    }

    // /sync: the window is bob's and carol's messages; alice syncs, so she comes too.
    let filter = json!({"room": {"timeline": {"limit": 2}, "state": {"lazy_load_members": true}}});
    let path = format!("/_matrix/client/v3/sync?filter={}", urlencode(&filter.to_string()));
    let (status, synced) = call(&app, Method::GET, &path, Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK, "{synced}");
    let joined = &synced["rooms"]["join"][&room];
    let end = joined["timeline"]["events"][1]["event_id"].as_str().unwrap().to_owned();
    assert_eq!(end, sent[2]);
    let from = synced["next_batch"].as_str().unwrap().to_owned();
    let expected = |with_alice: bool| {
        let mut m = std::collections::BTreeMap::new();
        m.insert("@bob:localhost".to_owned(), json!("Bob Two"));
        m.insert("@carol:localhost".to_owned(), json!("carol"));
        if with_alice {
            m.insert("@alice:localhost".to_owned(), json!("alice"));
        }
        m
    };
    assert_eq!(members_of(&joined["state"]["events"]), expected(true));

    // Later changes must not leak into the state of an earlier window.
    rename("Bob Three").await;
    let (status, _) = call(&app, Method::POST, &join, Some(&dave), Some(json!({}))).await;
    assert_eq!(status, StatusCode::OK);

    // /messages over the same window: the same members, as they were then.
    let lazy = urlencode(&json!({"lazy_load_members": true}).to_string());
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&from={from}&limit=2&filter={lazy}");
    let (status, page) = call(&app, Method::GET, &path, Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["chunk"].as_array().unwrap().len(), 2);
    assert_eq!(members_of(&page["state"]), expected(false));
    let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&from={from}&limit=2");
    let (_, page) = call(&app, Method::GET, &path, Some(&alice), None).await;
    assert!(page["state"].as_array().is_none_or(Vec::is_empty), "{page}");

    // /context around bob's message: alice's before, carol's after, and bob's own.
    let path = format!("/_matrix/client/v3/rooms/{room}/context/{}?limit=2&filter={lazy}", sent[1]);
    let (status, context) = call(&app, Method::GET, &path, Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK, "{context}");
    assert_eq!(members_of(&context["state"]), expected(true));
    // Without lazy-loading, the whole state at the last event returned: dave not yet in it.
    let path = format!("/_matrix/client/v3/rooms/{room}/context/{}?limit=2", sent[1]);
    let (_, context) = call(&app, Method::GET, &path, Some(&alice), None).await;
    assert_eq!(members_of(&context["state"]), expected(true));
    assert!(context["state"].as_array().unwrap().iter().any(|e| e["type"] == "m.room.create"));
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
