//! Refresh tokens: expiring access tokens, `POST /refresh`, single use, soft logout.

use std::time::Duration;

use hearth_conformance_tests::{Client, TestServer};
use serde_json::json;

#[tokio::test]
async fn register_and_login_with_refresh_tokens() {
    let server = TestServer::start().await;
    let anon = server.client();
    let reply = anon
        .post(
            "/_matrix/client/v3/register",
            json!({"username": "fresh", "password": "pw", "refresh_token": true, "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    let body = reply.assert_ok().clone();
    assert_eq!(body["expires_in_ms"], json!(300_000));
    let first_refresh = body["refresh_token"].as_str().expect("refresh_token").to_owned();
    let first = Client::from_session(&server.base_url, &body);
    first.get("/_matrix/client/v3/account/whoami").await.assert_ok();

    let refreshed = anon.post("/_matrix/client/v3/refresh", json!({"refresh_token": first_refresh})).await;
    let refreshed = refreshed.assert_ok().clone();
    assert_eq!(refreshed["expires_in_ms"], json!(300_000));
    let second = first.with_token(refreshed["access_token"].as_str().unwrap());
    let who = second.get("/_matrix/client/v3/account/whoami").await;
    assert_eq!(who.assert_ok()["device_id"], body["device_id"], "the same device");
    first.get("/_matrix/client/v3/account/whoami").await.assert_error(401, "M_UNKNOWN_TOKEN");
    // A refresh token works once.
    anon.post("/_matrix/client/v3/refresh", json!({"refresh_token": first_refresh}))
        .await
        .assert_error(401, "M_UNKNOWN_TOKEN");
    let next = refreshed["refresh_token"].as_str().unwrap();
    anon.post("/_matrix/client/v3/refresh", json!({"refresh_token": next})).await.assert_ok();

    // Without asking, tokens do not expire and there is no refresh token.
    let login = anon
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "fresh"}, "password": "pw"}),
        )
        .await;
    let login = login.assert_ok();
    assert!(login.get("refresh_token").is_none() && login.get("expires_in_ms").is_none(), "{login}");
}

#[tokio::test]
async fn an_expired_access_token_is_a_soft_logout() {
    let server =
        TestServer::start_with(|config| config.session.refreshable_access_token_lifetime_secs = 1).await;
    Client::register(&server.base_url, "sleepy", "pw").await;
    let reply = server
        .client()
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "sleepy"},
                   "password": "pw", "refresh_token": true}),
        )
        .await;
    let body = reply.assert_ok().clone();
    assert_eq!(body["expires_in_ms"], json!(1000));
    let client = Client::from_session(&server.base_url, &body);
    client.get("/_matrix/client/v3/account/whoami").await.assert_ok();
    // Wait out the lifetime (the assertion does not depend on how long the wait really took).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = client.get("/_matrix/client/v3/account/whoami").await;
    expired.assert_error(401, "M_UNKNOWN_TOKEN");
    assert_eq!(expired.body["soft_logout"], json!(true));
    let renewed = server
        .client()
        .post("/_matrix/client/v3/refresh", json!({"refresh_token": body["refresh_token"]}))
        .await;
    let renewed = client.with_token(renewed.assert_ok()["access_token"].as_str().unwrap());
    renewed.get("/_matrix/client/v3/account/whoami").await.assert_ok();
    // An unknown token is a plain (hard) logout.
    let unknown = client.with_token("hth_unknown").get("/_matrix/client/v3/account/whoami").await;
    unknown.assert_error(401, "M_UNKNOWN_TOKEN");
    assert!(unknown.body.get("soft_logout").is_none_or(|v| v == &json!(false)), "{}", unknown.body);
}
