//! Registration (UIA dummy and token flows, guests, shared secret) and login/logout.

use hearth_conformance_tests::{Client, SHARED_SECRET, TestServer};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha1::Sha1;

const REGISTER: &str = "/_matrix/client/v3/register";

#[tokio::test]
async fn dummy_flow_registration() {
    let server = TestServer::start().await;
    let anon = server.client();
    let challenge = anon.post(REGISTER, json!({"username": "alice", "password": "pw"})).await;
    assert_eq!(challenge.status.as_u16(), 401);
    assert_eq!(challenge.body["flows"], json!([{"stages": ["m.login.dummy"]}]));
    assert!(challenge.body["session"].is_string());
    assert!(challenge.body["params"].is_object());

    let alice = Client::register(&server.base_url, "alice2", "pw").await;
    assert_eq!(alice.user_id(), "@alice2:localhost");
    let who = alice.get("/_matrix/client/v3/account/whoami").await;
    let who = who.assert_ok();
    assert_eq!(who["user_id"], json!("@alice2:localhost"));
    assert_eq!(who["device_id"].as_str(), alice.device_id.as_deref());

    // A stage sent without a session starts one and completes at once, as on Synapse.
    let one_shot = anon
        .post(REGISTER, json!({"username": "oneshot", "password": "pw", "auth": {"type": "m.login.dummy"}}))
        .await;
    one_shot.assert_ok();
}

#[tokio::test]
async fn registration_options_and_errors() {
    let server = TestServer::start().await;
    let anon = server.client();
    Client::register(&server.base_url, "taken", "pw").await;

    anon.post(REGISTER, json!({"username": "taken", "password": "x"}))
        .await
        .assert_error(400, "M_USER_IN_USE");
    anon.post(REGISTER, json!({"username": "Taken", "password": "x"}))
        .await
        .assert_error(400, "M_USER_IN_USE");
    for bad in ["has space", "_reserved", "12345", "a:b", "ünïcode"] {
        anon.post(REGISTER, json!({"username": bad, "password": "x"}))
            .await
            .assert_error(400, "M_INVALID_USERNAME");
    }
    anon.get("/_matrix/client/v3/register/available?username=taken").await.assert_error(400, "M_USER_IN_USE");
    anon.get("/_matrix/client/v3/register/available?username=bad%20name")
        .await
        .assert_error(400, "M_INVALID_USERNAME");
    let free = anon.get("/_matrix/client/v3/register/available?username=free").await;
    assert_eq!(free.assert_ok()["available"], json!(true));

    // An unknown UIA session is refused.
    anon.post(REGISTER, json!({"username": "x1", "auth": {"type": "m.login.dummy", "session": "nope"}}))
        .await
        .assert_error(400, "M_UNKNOWN");

    // inhibit_login: an account but no session.
    let reply = anon
        .post(REGISTER, json!({"username": "quiet", "password": "pw", "inhibit_login": true, "auth": {"type": "m.login.dummy"}}))
        .await;
    let body = reply.assert_ok();
    assert_eq!(body["user_id"], json!("@quiet:localhost"));
    assert!(body.get("access_token").is_none());

    // A chosen device ID and display name.
    let reply = anon
        .post(
            REGISTER,
            json!({"username": "dev", "password": "pw", "device_id": "MYDEVICE",
                   "initial_device_display_name": "My phone", "auth": {"type": "m.login.dummy"}}),
        )
        .await;
    let body = reply.assert_ok().clone();
    assert_eq!(body["device_id"], json!("MYDEVICE"));
    let me = anon.with_token(body["access_token"].as_str().unwrap());
    let device = me.get("/_matrix/client/v3/devices/MYDEVICE").await;
    assert_eq!(device.assert_ok()["display_name"], json!("My phone"));

    // Guests are off by default.
    anon.post("/_matrix/client/v3/register?kind=guest", json!({}))
        .await
        .assert_error(403, "M_GUEST_ACCESS_FORBIDDEN");
    // The token validity endpoint answers while registration is open (as Synapse's does),
    // even where tokens are not required; an unknown token is not valid.
    let validity = anon.get("/_matrix/client/v1/register/m.login.registration_token/validity?token=x").await;
    assert_eq!(validity.assert_ok()["valid"], json!(false));
}

#[tokio::test]
async fn registration_disabled_and_token_required() {
    let closed = TestServer::start_with(|c| c.registration.enabled = false).await;
    closed
        .client()
        .post(REGISTER, json!({"username": "a", "password": "b"}))
        .await
        .assert_error(403, "M_FORBIDDEN");
    closed
        .client()
        .get("/_matrix/client/v3/register/available?username=a")
        .await
        .assert_error(403, "M_FORBIDDEN");

    let server = TestServer::start_with(|c| c.registration.token = Some("open-sesame".into())).await;
    let anon = server.client();
    let validity = "/_matrix/client/v1/register/m.login.registration_token/validity";
    assert_eq!(anon.get(&format!("{validity}?token=open-sesame")).await.assert_ok()["valid"], json!(true));
    assert_eq!(anon.get(&format!("{validity}?token=wrong")).await.assert_ok()["valid"], json!(false));

    let challenge = anon.post(REGISTER, json!({"username": "tok", "password": "pw"})).await;
    assert_eq!(challenge.body["flows"], json!([{"stages": ["m.login.registration_token"]}]));
    let session = challenge.body["session"].as_str().unwrap();
    // The dummy stage does not satisfy a token flow.
    let dummy = anon
        .post(REGISTER, json!({"username": "tok", "password": "pw", "auth": {"type": "m.login.dummy", "session": session}}))
        .await;
    assert_eq!(dummy.status.as_u16(), 401);
    let wrong = anon
        .post(
            REGISTER,
            json!({"username": "tok", "password": "pw",
            "auth": {"type": "m.login.registration_token", "token": "wrong", "session": session}}),
        )
        .await;
    assert_eq!(wrong.status.as_u16(), 401);
    assert_eq!(wrong.body["errcode"], json!("M_FORBIDDEN"));
    let right = anon
        .post(
            REGISTER,
            json!({"username": "tok", "password": "pw",
            "auth": {"type": "m.login.registration_token", "token": "open-sesame", "session": session}}),
        )
        .await;
    assert_eq!(right.assert_ok()["user_id"], json!("@tok:localhost"));
}

#[tokio::test]
async fn guest_registration() {
    let server = TestServer::start_with(|c| c.registration.allow_guests = true).await;
    let reply = server.client().post("/_matrix/client/v3/register?kind=guest", json!({})).await;
    let body = reply.assert_ok().clone();
    let guest = server.client().with_token(body["access_token"].as_str().unwrap());
    let who = guest.get("/_matrix/client/v3/account/whoami").await;
    assert_eq!(who.assert_ok()["is_guest"], json!(true));
    // Guests may not do everything a full account may.
    guest
        .post("/_matrix/client/v3/delete_devices", json!({"devices": []}))
        .await
        .assert_error(403, "M_GUEST_ACCESS_FORBIDDEN");
}

fn mac(nonce: &str, user: &str, password: &str, admin: bool) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(SHARED_SECRET.as_bytes()).expect("any key length works");
    mac.update(
        format!("{nonce}\0{user}\0{password}\0{}", if admin { "admin" } else { "notadmin" }).as_bytes(),
    );
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn shared_secret_registration() {
    let server = TestServer::start().await;
    let anon = server.client();
    let path = "/_synapse/admin/v1/register";
    let nonce = anon.get(path).await.assert_ok()["nonce"].as_str().unwrap().to_owned();
    let reply = anon
        .post(path, json!({"nonce": nonce, "username": "root", "password": "pw", "admin": true, "mac": mac(&nonce, "root", "pw", true)}))
        .await;
    let body = reply.assert_ok().clone();
    assert_eq!(body["user_id"], json!("@root:localhost"));
    assert_eq!(body["home_server"], json!("localhost"));
    let root = anon.with_token(body["access_token"].as_str().unwrap());
    root.get("/_matrix/client/v3/account/whoami").await.assert_ok();

    // A nonce works once.
    anon.post(path, json!({"nonce": nonce, "username": "root2", "password": "pw", "mac": mac(&nonce, "root2", "pw", false)}))
        .await
        .assert_error(400, "M_UNKNOWN");
    // A wrong MAC is refused.
    let nonce = anon.get(path).await.assert_ok()["nonce"].as_str().unwrap().to_owned();
    anon.post(path, json!({"nonce": nonce, "username": "root3", "password": "pw", "mac": mac(&nonce, "root3", "pw", true)}))
        .await
        .assert_error(403, "M_FORBIDDEN");

    let off = TestServer::start_with(|c| c.registration.shared_secret = None).await;
    off.client().get(path).await.assert_error(400, "M_UNKNOWN");
}

#[tokio::test]
async fn login_and_logout() {
    let server = TestServer::start().await;
    let anon = server.client();
    let flows = anon.get("/_matrix/client/v3/login").await;
    assert_eq!(flows.assert_ok()["flows"], json!([{"type": "m.login.password"}]));

    Client::register(&server.base_url, "bob", "secret").await;
    let by_localpart = Client::login(&server.base_url, "bob", "secret").await;
    assert_eq!(by_localpart.user_id(), "@bob:localhost");
    let by_mxid = Client::login(&server.base_url, "@bob:localhost", "secret").await;
    assert_ne!(by_mxid.access_token, by_localpart.access_token);
    // The deprecated top-level `user` field still works.
    let legacy = anon
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.password", "user": "BOB", "password": "secret"}),
        )
        .await;
    assert_eq!(legacy.assert_ok()["user_id"], json!("@bob:localhost"));

    let bad = |user: &str, pw: &str| json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": pw});
    anon.post("/_matrix/client/v3/login", bad("bob", "wrong")).await.assert_error(403, "M_FORBIDDEN");
    anon.post("/_matrix/client/v3/login", bad("nobody", "secret")).await.assert_error(403, "M_FORBIDDEN");
    anon.post("/_matrix/client/v3/login", json!({"type": "m.login.magic"}))
        .await
        .assert_error(400, "M_UNKNOWN");

    // Logging in on an existing device replaces its token.
    let reply = anon
        .post(
            "/_matrix/client/v3/login",
            json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "bob"},
            "password": "secret", "device_id": by_mxid.device_id}),
        )
        .await;
    assert_eq!(reply.assert_ok()["device_id"].as_str(), by_mxid.device_id.as_deref());
    by_mxid.get("/_matrix/client/v3/account/whoami").await.assert_error(401, "M_UNKNOWN_TOKEN");

    by_localpart.post("/_matrix/client/v3/logout", json!({})).await.assert_ok();
    by_localpart.get("/_matrix/client/v3/account/whoami").await.assert_error(401, "M_UNKNOWN_TOKEN");

    let a = Client::login(&server.base_url, "bob", "secret").await;
    let b = Client::login(&server.base_url, "bob", "secret").await;
    a.post("/_matrix/client/v3/logout/all", json!({})).await.assert_ok();
    b.get("/_matrix/client/v3/account/whoami").await.assert_error(401, "M_UNKNOWN_TOKEN");
    a.get("/_matrix/client/v3/account/whoami").await.assert_error(401, "M_UNKNOWN_TOKEN");
}

/// A burst of logins larger than the hashing bound waits its turn: every login is answered,
/// none with a 5xx or a dropped connection (the bound trades latency for memory, not errors).
#[tokio::test]
async fn a_login_burst_beyond_the_hashing_bound_gets_no_server_error() {
    let server = TestServer::start_with(|c| c.passwords.max_concurrent = 1).await;
    for i in 0..4 {
        Client::register(&server.base_url, &format!("burst{i}"), "pw").await;
    }
    let http = reqwest::Client::new();
    let mut logins = Vec::new();
    for n in 0..40 {
        let url = format!("{}/_matrix/client/v3/login", server.base_url);
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": format!("burst{}", n % 4)},
            "password": if n % 5 == 0 { "wrong" } else { "pw" },
        });
        let http = http.clone();
        logins.push(tokio::spawn(async move { http.post(url).json(&body).send().await.map(|r| r.status()) }));
    }
    for (n, login) in logins.into_iter().enumerate() {
        let status = login.await.unwrap().expect("the connection is answered").as_u16();
        let expected = if n % 5 == 0 { 403 } else { 200 };
        assert!(status == expected || status == 429, "login {n}: {status}");
    }
}
