//! Property tests of the federation router: any path, method, body and `Authorization` header
//! (X-Matrix made of valid and broken parts) gets a Matrix error below 500, never a panic or
//! a server error. Bounded case counts keep them in the ordinary test run.

use axum::{
    body::Body,
    http::{Method, Request},
};
use hearth_core::{Homeserver, config::HomeserverConfig};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::Value;
use tower::ServiceExt;

fn path() -> impl Strategy<Value = String> {
    let endpoint = prop::sample::select(vec![
        "/_matrix/federation/v1/send/txn1",
        "/_matrix/federation/v1/make_join/!room:localhost/@bob:remote",
        "/_matrix/federation/v2/send_join/!room:localhost/$event",
        "/_matrix/federation/v1/send_join/!room:localhost/$event",
        "/_matrix/federation/v2/invite/!room:localhost/$event",
        "/_matrix/federation/v1/event/$event",
        "/_matrix/federation/v1/state/!room:localhost",
        "/_matrix/federation/v1/backfill/!room:localhost",
        "/_matrix/federation/v1/get_missing_events/!room:localhost",
        "/_matrix/federation/v1/query/profile",
        "/_matrix/federation/v1/hierarchy/!room:localhost",
        "/_matrix/federation/v1/user/keys/query",
        "/_matrix/federation/v1/media/download/abc",
        "/_matrix/federation/v1/version",
        "/_matrix/key/v2/server",
        "/_matrix/key/v2/query",
        "/_matrix/federation/v1/nope",
    ]);
    let query = prop_oneof![Just(""), Just("?v=$x&limit=abc"), Just("?user_id=%00&field=displayname")];
    (endpoint, query).prop_map(|(e, q)| format!("{e}{q}"))
}

fn authorization() -> impl Strategy<Value = Option<String>> {
    let part = prop_oneof![
        Just("origin=remote.example".to_owned()),
        Just("origin=\"remote.example:8448\"".to_owned()),
        Just("origin=..".to_owned()),
        Just("destination=localhost".to_owned()),
        Just("key=\"ed25519:abc\"".to_owned()),
        Just("key=\"rsa:abc\"".to_owned()),
        Just("sig=\"AAAA\"".to_owned()),
        Just("sig=\"!!not base64!!\"".to_owned()),
        Just("origin".to_owned()),
        Just("=".to_owned()),
        "[a-z=\",: ]{0,16}",
    ];
    prop_oneof![
        Just(None),
        prop::collection::vec(part, 0..6).prop_map(|parts| Some(format!("X-Matrix {}", parts.join(",")))),
        "\\PC{0,30}".prop_map(Some),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(b"{}".to_vec()),
        Just(b"{\"pdus\":[{}],\"edus\":[1]}".to_vec()),
        Just(b"{\"origin\":1}".to_vec()),
        Just("[".repeat(200).into_bytes()),
        prop::collection::vec(any::<u8>(), 0..48),
    ]
}

#[test]
fn no_federation_request_gets_a_server_error() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let app = crate::server::router(Homeserver::for_tests(HomeserverConfig::for_tests()));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let methods = prop::sample::select(vec![Method::GET, Method::POST, Method::PUT, Method::DELETE]);
    let strategy = (methods, path(), authorization(), body());
    // Requests that got past routing (to the X-Matrix check or a handler); see the assertion.
    let routed = std::cell::Cell::new(0_u32);
    let result = runner.run(&strategy, |(method, path, auth, body)| {
        let (status, answer) = runtime.block_on(async {
            let mut request = Request::builder().method(method.clone()).uri(path.as_str());
            if let Some(auth) = &auth {
                request = request.header("authorization", auth.as_str());
            }
            let Ok(request) = request.body(Body::from(body.clone())) else { return (400, Value::Null) };
            let response = app.clone().oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
        });
        if !(status == 404 && answer["errcode"] == "M_UNRECOGNIZED") && status != 405 {
            routed.set(routed.get() + 1);
        }
        prop_assert!(status < 500, "{} {} auth {:?}: {} {}", method, path, auth, status, answer);
        if status >= 400 {
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
    assert!(routed.get() >= 400, "only {} of 2000 requests got past routing", routed.get());
}
