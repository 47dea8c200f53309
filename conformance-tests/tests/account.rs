//! Password change and deactivation, both behind user-interactive auth.

use hearth_conformance_tests::{Client, TestServer};
use serde_json::json;

#[tokio::test]
async fn change_password_with_uia() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "pwuser", "old-pw").await;
    let other = Client::login(&server.base_url, "pwuser", "old-pw").await;
    let path = "/_matrix/client/v3/account/password";

    let challenge = alice.post(path, json!({"new_password": "new-pw"})).await;
    assert_eq!(challenge.status.as_u16(), 401);
    assert_eq!(challenge.body["flows"], json!([{"stages": ["m.login.password"]}]));
    let session = challenge.body["session"].as_str().unwrap().to_owned();

    let wrong = alice
        .post(path, json!({"new_password": "new-pw", "auth": alice.password_auth("nope", &session)}))
        .await;
    assert_eq!(wrong.status.as_u16(), 401);
    assert_eq!(wrong.body["errcode"], json!("M_FORBIDDEN"));

    alice
        .post(path, json!({"new_password": "new-pw", "auth": alice.password_auth("old-pw", &session)}))
        .await
        .assert_ok();
    // Other sessions end by default; this one stays.
    alice.get("/_matrix/client/v3/account/whoami").await.assert_ok();
    other.get("/_matrix/client/v3/account/whoami").await.assert_error(401, "M_UNKNOWN_TOKEN");
    let anon = server.client();
    let login = |pw: &str| json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "pwuser"}, "password": pw});
    anon.post("/_matrix/client/v3/login", login("old-pw")).await.assert_error(403, "M_FORBIDDEN");
    anon.post("/_matrix/client/v3/login", login("new-pw")).await.assert_ok();

    // A UIA session cannot be carried over to a different operation.
    let challenge = alice.post(path, json!({"new_password": "x"})).await;
    let session = challenge.body["session"].as_str().unwrap().to_owned();
    alice
        .post(
            "/_matrix/client/v3/delete_devices",
            json!({"devices": [], "auth": alice.password_auth("new-pw", &session)}),
        )
        .await
        .assert_error(403, "M_FORBIDDEN");
    // Without a token the endpoint asks for one.
    anon.post(path, json!({"new_password": "x"})).await.assert_error(401, "M_MISSING_TOKEN");
}

#[tokio::test]
async fn deactivate_with_uia() {
    let server = TestServer::start().await;
    let alice = Client::register(&server.base_url, "leaver", "pw").await;
    alice
        .put("/_matrix/client/v3/profile/@leaver:localhost/displayname", json!({"displayname": "Leaver"}))
        .await
        .assert_ok();
    let path = "/_matrix/client/v3/account/deactivate";
    let challenge = alice.post(path, json!({})).await;
    let session = challenge.body["session"].as_str().unwrap().to_owned();
    let done = alice.post(path, json!({"auth": alice.password_auth("pw", &session)})).await;
    assert_eq!(done.assert_ok()["id_server_unbind_result"], json!("no-support"));

    alice.get("/_matrix/client/v3/account/whoami").await.assert_error(401, "M_UNKNOWN_TOKEN");
    let anon = server.client();
    anon.post("/_matrix/client/v3/login", json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "leaver"}, "password": "pw"}))
        .await
        .assert_error(403, "M_USER_DEACTIVATED");
    // The ID stays taken and the profile is gone.
    anon.get("/_matrix/client/v3/register/available?username=leaver")
        .await
        .assert_error(400, "M_USER_IN_USE");
    let profile = anon.get("/_matrix/client/v3/profile/@leaver:localhost").await;
    assert!(profile.assert_ok().get("displayname").is_none(), "{}", profile.body);
}

/// Third-party identifiers: none are kept, adding one is refused with MSC4178's errcode (what
/// Synapse without e-mail says), and signing in from an existing session is refused, not
/// unknown.
#[tokio::test]
async fn third_party_identifiers_and_login_tokens_answer_with_matrix_errors() {
    let server = TestServer::start_with(|c| c.storage.sync_writes = false).await;
    let alice = Client::register(&server.base_url, "threepid", "pw").await;
    let listed = alice.get("/_matrix/client/v3/account/3pid").await;
    assert!(listed.assert_ok()["threepids"].as_array().is_none_or(Vec::is_empty), "{}", listed.body);
    let email = json!({"client_secret": "secret123", "email": "a@example.org", "send_attempt": 1});
    alice
        .post("/_matrix/client/v3/account/3pid/email/requestToken", email)
        .await
        .assert_error(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED");
    let msisdn = json!({"client_secret": "secret123", "country": "GB", "phone_number": "07700900000", "send_attempt": 1});
    alice
        .post("/_matrix/client/v3/account/3pid/msisdn/requestToken", msisdn)
        .await
        .assert_error(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED");
    let add = json!({"client_secret": "secret123", "sid": "nosuchsession"});
    alice.post("/_matrix/client/v3/account/3pid/add", add).await.assert_error(400, "M_THREEPID_AUTH_FAILED");
    let delete = alice
        .post(
            "/_matrix/client/v3/account/3pid/delete",
            json!({"medium": "email", "address": "a@example.org"}),
        )
        .await;
    assert_eq!(delete.assert_ok()["id_server_unbind_result"], "no-support");
    let bind = json!({"client_secret": "secret123", "sid": "s", "id_server": "id.example.org", "id_access_token": "t"});
    alice.post("/_matrix/client/v3/account/3pid/bind", bind).await.assert_error(403, "M_SERVER_NOT_TRUSTED");
    let unbind = alice
        .post(
            "/_matrix/client/v3/account/3pid/unbind",
            json!({"medium": "email", "address": "a@example.org"}),
        )
        .await;
    assert_eq!(unbind.assert_ok()["id_server_unbind_result"], "no-support");
    alice.post("/_matrix/client/v1/login/get_token", json!({})).await.assert_error(403, "M_FORBIDDEN");
    Client::new(&server.base_url)
        .get("/_matrix/client/v3/account/3pid")
        .await
        .assert_error(401, "M_MISSING_TOKEN");
}
