//! Versions, well-known, capabilities, CORS and the generic error cases.

use hearth_conformance_tests::TestServer;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn versions_well_known_and_capabilities() {
    let server = TestServer::start().await;
    let anon = server.client();
    let versions = anon.get("/_matrix/client/versions").await;
    let body = versions.assert_ok();
    let list: Vec<&str> = body["versions"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert!(list.contains(&"v1.19"), "{list:?}");
    // Only what is implemented is advertised: cross-signing, which Element's account set-up
    // looks for under its unstable name; delayed events; and transport discovery only once a
    // transport is configured.
    assert_eq!(
        body["unstable_features"],
        json!({"org.matrix.e2e_cross_signing": true, "org.matrix.msc4140": true, "org.matrix.msc4143": false,
            "org.matrix.simplified_msc3575": true})
    );

    let wk = anon.get("/.well-known/matrix/client").await;
    assert_eq!(wk.assert_ok()["m.homeserver"]["base_url"], json!("http://127.0.0.1:8008/"));

    let alice = hearth_conformance_tests::Client::register(&server.base_url, "capa", "pw").await;
    let caps = alice.get("/_matrix/client/v3/capabilities").await;
    let caps = &caps.assert_ok()["capabilities"];
    // Spelled out even at their default, as clients and Synapse expect.
    assert_eq!(caps["m.change_password"]["enabled"], json!(true));
    assert_eq!(caps["m.room_versions"]["default"], json!("12"));
    assert_eq!(caps["m.3pid_changes"]["enabled"], json!(false));
    anon.get("/_matrix/client/v3/capabilities").await.assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn cors_preflight_and_headers() {
    let server = TestServer::start().await;
    let resp = reqwest::Client::new()
        .request(Method::OPTIONS, format!("{}/_matrix/client/v3/login", server.base_url))
        .header("Origin", "https://app.element.io")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(h["access-control-allow-methods"].to_str().unwrap().contains("PUT"));
    assert!(h["access-control-allow-headers"].to_str().unwrap().contains("Authorization"));

    // Every response carries the headers too, errors included.
    let reply = server.client().get("/_matrix/client/v3/account/whoami").await;
    assert_eq!(reply.headers["access-control-allow-origin"], "*");
    assert!(reply.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn generic_errors() {
    let server = TestServer::start().await;
    let anon = server.client();

    anon.get("/_matrix/client/v3/no/such/endpoint").await.assert_error(404, "M_UNRECOGNIZED");
    anon.get("/nothing").await.assert_error(404, "M_UNRECOGNIZED");
    anon.request(Method::DELETE, "/_matrix/client/v3/login", None).await.assert_error(405, "M_UNRECOGNIZED");

    anon.get("/_matrix/client/v3/account/whoami").await.assert_error(401, "M_MISSING_TOKEN");
    anon.with_token("hth_not_a_real_token")
        .get("/_matrix/client/v3/account/whoami")
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    // The deprecated query parameter is honoured (and checked) too.
    anon.get("/_matrix/client/v3/account/whoami?access_token=nope")
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    let reply = anon
        .http
        .get(format!("{}/_matrix/client/v3/account/whoami", server.base_url))
        .header("Authorization", "Basic Zm9vOmJhcg==")
        .send()
        .await
        .unwrap();
    hearth_conformance_tests::Client::reply(reply).await.assert_error(401, "M_MISSING_TOKEN");

    anon.request_raw(Method::POST, "/_matrix/client/v3/login", b"this is not json".to_vec())
        .await
        .assert_error(400, "M_NOT_JSON");
    anon.post("/_matrix/client/v3/login", json!({"type": 5})).await.assert_error(400, "M_BAD_JSON");
    anon.post("/_matrix/client/v3/login", json!(["a", "list"])).await.assert_error(400, "M_BAD_JSON");

    let big = vec![b' '; 2 * 1024 * 1024];
    anon.request_raw(Method::POST, "/_matrix/client/v3/login", big).await.assert_error(413, "M_TOO_LARGE");

    // A malformed user ID in the path is a client error, not a server one.
    anon.get("/_matrix/client/v3/profile/not-a-user-id").await.assert_error(400, "M_INVALID_PARAM");
}
