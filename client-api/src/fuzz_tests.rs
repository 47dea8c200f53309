//! Property tests of the whole client router: requests of any method, path, headers and body,
//! with and without a valid access token, never get a 5xx (a panic would be a 500 from the
//! router's containment in the binary, and here a failed test), and every error is a Matrix error.
//! Bounded case counts keep them in the ordinary test run.

use axum::{
    Router,
    body::Body,
    http::{Method, Request},
};
use hearth_core::{Homeserver, config::HomeserverConfig};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{ClientApiConfig, router};

/// Real endpoints, with `{}` where an identifier goes: most generated requests reach a handler
/// (and its parser), which is where a panic or a 5xx would hide.
const TEMPLATES: &[&str] = &[
    "/_matrix/client/versions",
    "/_matrix/client/v3/capabilities",
    "/_matrix/client/v3/login",
    "/_matrix/client/v3/register",
    "/_matrix/client/v3/logout",
    "/_matrix/client/v3/account/whoami",
    "/_matrix/client/v3/account/password",
    "/_matrix/client/v3/createRoom",
    "/_matrix/client/v3/sync",
    "/_matrix/client/v3/join/{}",
    "/_matrix/client/v3/knock/{}",
    "/_matrix/client/v3/rooms/{}/join",
    "/_matrix/client/v3/rooms/{}/leave",
    "/_matrix/client/v3/rooms/{}/forget",
    "/_matrix/client/v3/rooms/{}/invite",
    "/_matrix/client/v3/rooms/{}/kick",
    "/_matrix/client/v3/rooms/{}/ban",
    "/_matrix/client/v3/rooms/{}/send/{}/{}",
    "/_matrix/client/v3/rooms/{}/state/{}/{}",
    "/_matrix/client/v3/rooms/{}/state/{}",
    "/_matrix/client/v3/rooms/{}/state",
    "/_matrix/client/v3/rooms/{}/messages",
    "/_matrix/client/v3/rooms/{}/members",
    "/_matrix/client/v3/rooms/{}/joined_members",
    "/_matrix/client/v3/rooms/{}/context/{}",
    "/_matrix/client/v1/rooms/{}/relations/{}",
    "/_matrix/client/v1/rooms/{}/threads",
    "/_matrix/client/v3/user/{}/rooms/{}/tags",
    "/_matrix/client/v3/user/{}/openid/request_token",
    "/_matrix/client/v3/account/3pid",
    "/_matrix/client/v3/account/3pid/add",
    "/_matrix/client/v3/account/3pid/delete",
    "/_matrix/client/v3/account/3pid/email/requestToken",
    "/_matrix/client/v1/login/get_token",
    "/_matrix/client/v1/mutual_rooms",
    "/_matrix/client/v3/profile/{}/{}",
    "/_matrix/client/v3/users/{}/report",
    "/_matrix/client/v3/rooms/{}/report",
    "/_matrix/client/v3/user/{}/rooms/{}/tags/{}",
    "/_matrix/client/v1/rooms/{}/relations/{}/{}",
    "/_matrix/client/v1/rooms/{}/relations/{}/{}/{}",
    "/_matrix/client/v3/rooms/{}/event/{}",
    "/_matrix/client/v3/rooms/{}/redact/{}/{}",
    "/_matrix/client/v3/rooms/{}/receipt/{}/{}",
    "/_matrix/client/v3/rooms/{}/read_markers",
    "/_matrix/client/v3/rooms/{}/typing/{}",
    "/_matrix/client/v3/rooms/{}/report/{}",
    "/_matrix/client/v3/rooms/{}/upgrade",
    "/_matrix/client/v3/rooms/{}/initialSync",
    "/_matrix/client/v1/rooms/{}/timestamp_to_event",
    "/_matrix/client/v1/room_summary/{}",
    "/_matrix/client/v1/rooms/{}/hierarchy",
    "/_matrix/client/v3/profile/{}",
    "/_matrix/client/v3/profile/{}/displayname",
    "/_matrix/client/v3/profile/{}/avatar_url",
    "/_matrix/client/v3/user/{}/account_data/{}",
    "/_matrix/client/v3/user/{}/rooms/{}/account_data/{}",
    "/_matrix/client/v3/user/{}/rooms/{}/tags/{}",
    "/_matrix/client/v3/user/{}/filter",
    "/_matrix/client/v3/user/{}/filter/{}",
    "/_matrix/client/v3/sendToDevice/{}/{}",
    "/_matrix/client/v3/keys/upload",
    "/_matrix/client/v3/keys/query",
    "/_matrix/client/v3/keys/claim",
    "/_matrix/client/v3/keys/changes",
    "/_matrix/client/v3/keys/device_signing/upload",
    "/_matrix/client/v3/keys/signatures/upload",
    "/_matrix/client/v3/room_keys/version",
    "/_matrix/client/v3/room_keys/version/{}",
    "/_matrix/client/v3/room_keys/keys/{}/{}",
    "/_matrix/client/v3/devices",
    "/_matrix/client/v3/devices/{}",
    "/_matrix/client/v3/delete_devices",
    "/_matrix/client/v3/directory/room/{}",
    "/_matrix/client/v3/directory/list/room/{}",
    "/_matrix/client/v3/publicRooms",
    "/_matrix/client/v3/pushrules/",
    "/_matrix/client/v3/pushrules/global/{}/{}",
    "/_matrix/client/v3/pushrules/global/{}/{}/enabled",
    "/_matrix/client/v3/pushers",
    "/_matrix/client/v3/pushers/set",
    "/_matrix/client/v3/notifications",
    "/_matrix/client/v3/presence/{}/status",
    "/_matrix/client/v3/user_directory/search",
    "/_matrix/client/v3/events",
    "/_matrix/client/v1/media/config",
    "/_matrix/client/v1/media/download/{}/{}",
    "/_matrix/client/v1/media/thumbnail/{}/{}",
    "/_matrix/client/v1/media/preview_url",
    "/_matrix/media/v3/upload",
    "/_matrix/media/v3/upload/{}/{}",
    "/_matrix/media/v1/create",
    "/_matrix/media/v3/download/{}/{}",
];

/// What goes where a template has `{}`: the room and event the set-up made, identifiers of
/// every kind, and junk.
fn slot(room: &str, event: &str) -> impl Strategy<Value = String> + use<> {
    prop_oneof![
        4 => prop::sample::select(vec![
            room.to_owned(),
            room.replace('!', "%21"),
            event.to_owned(),
            event.replace('$', "%24"),
            "@alice:localhost".to_owned(),
            "%40alice%3Alocalhost".to_owned(),
            "%23alias:localhost".to_owned(),
            "localhost".to_owned(),
            "m.room.message".to_owned(),
            "m.room.member".to_owned(),
            "m.room.power_levels".to_owned(),
            "m.room.create".to_owned(),
            "m.read".to_owned(),
            "override".to_owned(),
            ".m.rule.master".to_owned(),
            "txn1".to_owned(),
            "1".to_owned(),
            String::new(),
        ]),
        1 => prop::sample::select(vec![
            "!room:localhost", "$event", "..", "%00", "%ff%fe", "%2F", "@", "!", "#", "a:b:c", "::1",
        ])
        .prop_map(str::to_owned),
        1 => "[a-zA-Z0-9_.~%!@#$:-]{0,12}",
    ]
}

fn path(room: &str, event: &str) -> impl Strategy<Value = String> + use<> {
    let query = prop_oneof![
        Just(String::new()),
        Just("?limit=10&dir=b".to_owned()),
        Just("?from=zz&max_depth=-1&suggested_only=maybe&limit=0&via=..".to_owned()),
        Just("?limit=-1&from=zz&timeout=notanumber".to_owned()),
        Just("?filter=%7B%22room%22%3A1%7D&since=s99999999999999999999".to_owned()),
        Just("?dir=f&ts=99999999999999999999&at=x&membership=nope".to_owned()),
        Just("?width=0&height=99999999&method=nope&url=http%3A%2F%2F127.0.0.1%3A1%2F".to_owned()),
        "\\?[a-z=&%0-9]{0,20}",
    ];
    let template = prop::sample::select(TEMPLATES.to_vec());
    (template, prop::collection::vec(slot(room, event), 3), query).prop_map(|(template, slots, query)| {
        let mut out = String::new();
        let mut slots = slots.into_iter();
        for (i, piece) in template.split("{}").enumerate() {
            if i > 0 {
                out.push_str(&slots.next().unwrap_or_default());
            }
            out.push_str(piece);
        }
        format!("{out}{query}")
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(b"{}".to_vec()),
        Just(b"[]".to_vec()),
        Just(b"null".to_vec()),
        Just(b"{\"msgtype\":\"m.text\",\"body\":\"hi\"}".to_vec()),
        Just(b"{\"type\":\"m.login.password\",\"user\":\"alice\",\"password\":1}".to_vec()),
        Just(b"{\"a\":1e999}".to_vec()),
        Just(b"{\"a\":\"\\ud800\"}".to_vec()),
        Just(b"{\"a\":1,\"a\":2}".to_vec()),
        Just(b"\xef\xbb\xbf{}".to_vec()),
        Just(b"{\"x\":\"\xff\"}".to_vec()),
        Just("[".repeat(70).into_bytes()),
        prop::collection::vec(any::<u8>(), 0..64),
        "\\PC{0,40}".prop_map(String::into_bytes),
    ]
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
    ])
}

async fn setup() -> (Router, String, String, String) {
    let app = router(Homeserver::for_tests(HomeserverConfig::for_tests()), ClientApiConfig::default());
    let register = json!({"username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}});
    let request =
        Request::post("/_matrix/client/v3/register").body(Body::from(register.to_string())).unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    let token = body["access_token"].as_str().unwrap().to_owned();
    // A room, so that room paths can reach their handlers.
    let create = Request::post("/_matrix/client/v3/createRoom")
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(json!({"room_alias_name": "alias"}).to_string()))
        .unwrap();
    let response = app.clone().oneshot(create).await.unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let room = serde_json::from_slice::<Value>(&bytes).unwrap()["room_id"].as_str().unwrap().to_owned();
    let send = Request::put(format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/t0"))
        .header("authorization", format!("Bearer {token}"))
        .body(Body::from(json!({"msgtype": "m.text", "body": "hi"}).to_string()))
        .unwrap();
    let response = app.clone().oneshot(send).await.unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let event = serde_json::from_slice::<Value>(&bytes).unwrap()["event_id"].as_str().unwrap().to_owned();
    (app, token, room, event)
}

#[test]
fn no_request_gets_a_server_error() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // One server for all cases: what earlier cases stored is part of what later ones meet.
    let (app, token, room, event) = runtime.block_on(setup());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 4000,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (method(), path(&room, &event), body(), any::<bool>(), any::<bool>());
    // How many requests reached a handler (anything but the router's own 404/405): a generator
    // that only ever produced unroutable paths would prove nothing.
    let routed = std::cell::Cell::new(0_u32);
    let result = runner.run(&strategy, |(method, path, body, authed, json_type)| {
        let (status, answer) = runtime.block_on(async {
            let mut request = Request::builder().method(method.clone()).uri(path.as_str());
            if authed {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            if json_type {
                request = request.header("content-type", "application/json");
            }
            let Ok(request) = request.body(Body::from(body.clone())) else {
                // Not a request hyper would ever hand us (an invalid URI).
                return (200, Value::Null);
            };
            // Long-polls are cut short: only the answer matters here.
            let Ok(response) =
                tokio::time::timeout(std::time::Duration::from_secs(5), app.clone().oneshot(request)).await
            else {
                return (200, Value::Null);
            };
            let response = response.unwrap();
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
        });
        if !(status == 404 && answer["errcode"] == "M_UNRECOGNIZED") && status != 405 {
            routed.set(routed.get() + 1);
        }
        let shown = String::from_utf8_lossy(&body).into_owned();
        prop_assert!(status < 500, "{} {} with {:?}: {} {}", method, path, shown, status, answer);
        // A UIA challenge (401 with flows) is not an error body; every other 4xx is.
        let challenge = status == 401 && answer.get("flows").is_some();
        if status >= 400 && !challenge {
            prop_assert!(
                answer["errcode"].is_string(),
                "{} {}: {} without errcode: {}",
                method,
                path,
                status,
                answer
            );
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    assert!(routed.get() >= 600, "only {} of 4000 requests reached a handler", routed.get());
}
