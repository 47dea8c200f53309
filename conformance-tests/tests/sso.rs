//! Single sign-on against stand-in GitHub and Google providers on loopback, driven by a browser
//! that keeps cookies and follows redirects hop by hop; the client side with plain API calls.

use hearth_conformance_tests::{
    Client, TestServer,
    idp::{Browser, StandIn, Tamper, own_baseurl},
};
use serde_json::{Value, json};

const APP: &str = "https://app.example/after-login";

struct Setup {
    server: TestServer,
    github: StandIn,
    google: StandIn,
}

async fn setup() -> Setup {
    let github = StandIn::github("gh-client").await;
    let google = StandIn::google("google-client.apps.example").await;
    let server = TestServer::start_at(|config, addr| {
        own_baseurl(config, addr);
        config.sso.providers = vec![github.provider_config("github"), google.provider_config("google")];
        config.sso.client_allowlist = vec!["https://app.example/".to_owned()];
    })
    .await;
    Setup { server, github, google }
}

fn octocat() -> Value {
    json!({"id": 583231, "login": "Octo-Cat", "name": "The Octocat", "email": "octocat@github.example"})
}

fn alice_at_google() -> Value {
    json!({"sub": "1098765", "email": "alice@example.com", "email_verified": true, "name": "Alice A."})
}

async fn token_login(server: &TestServer, token: &str) -> hearth_conformance_tests::client::Reply {
    server.client().post("/_matrix/client/v3/login", json!({"type": "m.login.token", "token": token})).await
}

/// Whether a localpart is still free: nothing was created under it.
async fn is_free(server: &TestServer, localpart: &str) -> bool {
    let reply =
        server.client().get(&format!("/_matrix/client/v3/register/available?username={localpart}")).await;
    reply.status.as_u16() == 200
}

#[tokio::test]
async fn login_types_advertise_sso_with_providers_and_token_login() {
    let s = setup().await;
    let reply = s.server.client().get("/_matrix/client/v3/login").await;
    let flows = reply.assert_ok()["flows"].as_array().unwrap().clone();
    let sso = flows.iter().find(|f| f["type"] == "m.login.sso").expect("m.login.sso");
    let providers: Vec<(&str, &str, &str)> = sso["identity_providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap(), p["brand"].as_str().unwrap()))
        .collect();
    assert_eq!(providers, [("github", "github", "github"), ("google", "google", "google")]);
    assert!(flows.iter().any(|f| f["type"] == "m.login.token"));
    assert!(flows.iter().any(|f| f["type"] == "m.login.password"));
}

#[tokio::test]
async fn github_sign_in_creates_the_mapped_account_and_the_second_lands_in_it() {
    let s = setup().await;
    s.github.sign_in_as(octocat());
    let mut browser = Browser::new();
    let token = browser.sign_in(&s.server.base_url, "github", APP).await.expect("a login token");
    let login = token_login(&s.server, &token).await;
    let body = login.assert_ok();
    assert_eq!(body["user_id"], json!("@octo-cat:localhost"));
    let client = Client::from_session(&s.server.base_url, body);
    client.get("/_matrix/client/v3/account/whoami").await.assert_ok();
    let name = client.get("/_matrix/client/v3/profile/@octo-cat:localhost/displayname").await;
    assert_eq!(name.assert_ok()["displayname"], json!("The Octocat"));

    // The login token works once.
    token_login(&s.server, &token).await.assert_error(403, "M_FORBIDDEN");

    // A second sign-in (another browser, even with a changed GitHub login) is the same account.
    let mut renamed = octocat();
    renamed["login"] = json!("octo-renamed");
    s.github.sign_in_as(renamed);
    let token = Browser::new().sign_in(&s.server.base_url, "github", APP).await.expect("token");
    assert_eq!(token_login(&s.server, &token).await.assert_ok()["user_id"], json!("@octo-cat:localhost"));
    assert!(is_free(&s.server, "octo-renamed").await);
}

#[tokio::test]
async fn google_sign_in_takes_a_free_localpart_when_the_email_one_is_taken() {
    let s = setup().await;
    // Someone already has @alice; signing in with alice@example.com must not take it over.
    let existing = Client::register(&s.server.base_url, "alice", "pw").await;
    s.google.sign_in_as(alice_at_google());
    let token = Browser::new().sign_in(&s.server.base_url, "google", APP).await.expect("token");
    let body = token_login(&s.server, &token).await.assert_ok().clone();
    assert_eq!(body["user_id"], json!("@alice1:localhost"));
    assert_ne!(body["user_id"].as_str(), existing.user_id.as_deref());
    let token = Browser::new().sign_in(&s.server.base_url, "google", APP).await.expect("token");
    assert_eq!(token_login(&s.server, &token).await.assert_ok()["user_id"], json!("@alice1:localhost"));
    // The existing account's password still works and is still its own.
    Client::login(&s.server.base_url, "alice", "pw").await;
}

/// Drives a sign-in up to the provider's redirect back to Hearth, and returns that callback URL.
async fn callback_url(browser: &mut Browser, s: &Setup, idp: &str) -> String {
    let first = browser.start(&s.server.base_url, idp, APP).await;
    assert_eq!(first.status, 302, "{}", first.body);
    let at_provider = browser.get(first.location.as_deref().expect("to the provider")).await;
    assert_eq!(at_provider.status, 302, "{}", at_provider.body);
    at_provider.location.expect("back to the callback")
}

#[tokio::test]
async fn forged_replayed_and_foreign_state_is_refused_and_creates_nothing() {
    let s = setup().await;
    s.github.sign_in_as(octocat());
    let callback = format!("{}/_matrix/client/unstable/io.hearth/sso/callback/github", s.server.base_url);

    // A state Hearth never issued.
    let mut browser = Browser::new();
    browser.start(&s.server.base_url, "github", APP).await;
    let hop = browser.get(&format!("{callback}?code=abc&state=forged")).await;
    assert_eq!((hop.status, hop.errcode().as_str()), (403, "M_FORBIDDEN"), "{}", hop.body);
    // No state at all.
    let hop = browser.get(&format!("{callback}?code=abc")).await;
    assert_eq!((hop.status, hop.errcode().as_str()), (400, "M_MISSING_PARAM"), "{}", hop.body);

    // The state and code of one browser, delivered by another (no cookie, or its own).
    let url = callback_url(&mut Browser::new(), &s, "github").await;
    let hop = Browser::new().get(&url).await;
    assert_eq!(hop.status, 403, "{}", hop.body);
    assert!(hop.body.contains("another browser"), "{}", hop.body);
    let mut other = Browser::new();
    other.start(&s.server.base_url, "github", APP).await;
    let hop = other.get(&url).await;
    assert_eq!(hop.status, 403, "{}", hop.body);
    assert!(is_free(&s.server, "octo-cat").await, "an account was created");

    // A state started for GitHub, brought to Google's callback.
    let mut browser = Browser::new();
    let url = callback_url(&mut browser, &s, "github").await;
    let hop = browser.get(&url.replace("/callback/github", "/callback/google")).await;
    assert_eq!(hop.status, 403, "{}", hop.body);
    assert!(hop.body.contains("another identity provider"), "{}", hop.body);
    assert!(is_free(&s.server, "octo-cat").await);

    // The right browser finishes once; replaying the callback is refused.
    let mut browser = Browser::new();
    let url = callback_url(&mut browser, &s, "github").await;
    let done = browser.get(&url).await;
    assert_eq!(done.status, 302, "{}", done.body);
    assert!(done.location.unwrap().starts_with(APP));
    let replay = browser.get(&url).await;
    assert_eq!((replay.status, replay.errcode().as_str()), (403, "M_FORBIDDEN"), "{}", replay.body);
}

#[tokio::test]
async fn bad_id_tokens_are_refused_and_nothing_is_created_or_linked() {
    let s = setup().await;
    s.google.sign_in_as(json!({"sub": "42", "email": "mallory@example.com", "name": "M"}));
    for (tamper, says) in [
        (Tamper::WrongNonce, "nonce"),
        (Tamper::Expired, "Expired"),
        (Tamper::WrongAudience, "Audience"),
        (Tamper::WrongIssuer, "Issuer"),
        (Tamper::UnknownKey, "Signature"),
    ] {
        s.google.tamper(Some(tamper));
        let hop = Browser::new().sign_in(&s.server.base_url, "google", APP).await.expect_err("refused");
        assert_eq!((hop.status, hop.errcode().as_str()), (403, "M_FORBIDDEN"), "{tamper:?}: {}", hop.body);
        assert!(hop.body.contains(says), "{tamper:?}: {}", hop.body);
        assert!(is_free(&s.server, "mallory").await, "{tamper:?} created an account");
    }
    // The same identity with an honest token signs in, as a new account: nothing was linked.
    s.google.tamper(None);
    let token = Browser::new().sign_in(&s.server.base_url, "google", APP).await.expect("token");
    assert_eq!(token_login(&s.server, &token).await.assert_ok()["user_id"], json!("@mallory:localhost"));
}

#[tokio::test]
async fn a_redirect_url_outside_the_allowlist_gets_a_confirmation_page_first() {
    let s = setup().await;
    s.github.sign_in_as(octocat());
    let evil = "https://evil.example/steal";
    let mut browser = Browser::new();
    let first = browser.start(&s.server.base_url, "github", evil).await;
    assert_eq!(first.status, 302);
    let confirm_url = first.location.clone().unwrap();
    assert!(confirm_url.contains("/_matrix/client/unstable/io.hearth/sso/confirm?state="), "{confirm_url}");
    let page = browser.get(&confirm_url).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(evil), "the page names the target: {}", page.body);
    assert!(page.link("continue").unwrap().starts_with(&s.github.base_url));
    // Nothing happened yet, and the page is not shown to another browser.
    assert!(is_free(&s.server, "octo-cat").await);
    assert_eq!(Browser::new().get(&confirm_url).await.status, 403);
    let no_state =
        browser.get(&format!("{}/_matrix/client/unstable/io.hearth/sso/confirm", s.server.base_url)).await;
    assert_eq!(no_state.errcode(), "M_MISSING_PARAM");

    // Only when the user continues does the token go there.
    let last = browser.follow(page, evil).await;
    assert!(last.location.unwrap().starts_with(evil));

    // A redirectUrl that is not an absolute URL is refused outright.
    let hop = Browser::new().start(&s.server.base_url, "github", "javascript:alert(1)").await;
    assert_eq!((hop.status, hop.errcode().as_str()), (400, "M_INVALID_PARAM"), "{}", hop.body);
    let hop = Browser::new().start(&s.server.base_url, "gitlab", APP).await;
    assert_eq!(hop.status, 404, "{}", hop.body);
}

#[tokio::test]
async fn provider_refusals_and_organisation_restriction() {
    let github = StandIn::github("gh-client").await;
    let server = TestServer::start_at(|config, addr| {
        own_baseurl(config, addr);
        let mut provider = github.provider_config("github");
        provider.organization = Some("hearth-devs".to_owned());
        config.sso.providers = vec![provider];
        config.sso.client_allowlist = vec!["https://app.example/".to_owned()];
    })
    .await;
    github.sign_in_as(octocat());
    github.set_orgs(&["other-org"]);
    let hop = Browser::new().sign_in(&server.base_url, "github", APP).await.expect_err("not a member");
    assert_eq!(hop.status, 403, "{}", hop.body);
    assert!(hop.body.contains("hearth-devs"), "{}", hop.body);
    assert!(is_free(&server, "octo-cat").await);

    // The user said no at the provider.
    let mut browser = Browser::new();
    let first = browser.start(&server.base_url, "github", APP).await;
    let state = reqwest::Url::parse(first.location.as_deref().unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let denied = format!(
        "{}/_matrix/client/unstable/io.hearth/sso/callback/github?error=access_denied&state={state}",
        server.base_url
    );
    let hop = browser.get(&denied).await;
    assert_eq!(hop.status, 403, "{}", hop.body);
    assert!(hop.body.contains("access_denied"));

    github.set_orgs(&["Hearth-Devs"]);
    let token = Browser::new().sign_in(&server.base_url, "github", APP).await.expect("a member");
    token_login(&server, &token).await.assert_ok();
}

#[tokio::test]
async fn sso_accounts_confirm_sensitive_operations_with_sso() {
    let s = setup().await;
    s.github.sign_in_as(octocat());
    let token = Browser::new().sign_in(&s.server.base_url, "github", APP).await.expect("token");
    let me = Client::from_session(&s.server.base_url, token_login(&s.server, &token).await.assert_ok());
    let device = me.device_id.clone().unwrap();
    let path = format!("/_matrix/client/v3/devices/{device}");

    let challenge = me.request(reqwest::Method::DELETE, &path, Some(json!({}))).await;
    assert_eq!(challenge.status.as_u16(), 401, "{}", challenge.body);
    assert_eq!(challenge.body["flows"], json!([{"stages": ["m.login.sso"]}]));
    let session = challenge.body["session"].as_str().unwrap().to_owned();
    let fallback =
        format!("{}/_matrix/client/v3/auth/m.login.sso/fallback/web?session={session}", s.server.base_url);

    // Someone else's GitHub identity cannot confirm for this account.
    s.github.sign_in_as(json!({"id": 9, "login": "someone", "name": "S", "email": "s@example.com"}));
    let mut browser = Browser::new();
    let page = browser.get(&fallback).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("delete_device"), "{}", page.body);
    let link = page.link("provider").expect("a provider link");
    let back = browser.get(&link).await;
    let hop = browser.get(back.location.as_deref().unwrap()).await;
    assert_eq!(hop.status, 403, "{}", hop.body);
    let still = me.request(reqwest::Method::DELETE, &path, Some(json!({"auth": {"session": session}}))).await;
    assert_eq!(still.status.as_u16(), 401, "{}", still.body);

    // The account's own identity can.
    s.github.sign_in_as(octocat());
    let page = browser.get(&fallback).await;
    let back = browser.get(&page.link("provider").unwrap()).await;
    let done = browser.get(back.location.as_deref().unwrap()).await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("authDone"));
    me.request(reqwest::Method::DELETE, &path, Some(json!({"auth": {"session": session}}))).await.assert_ok();
    me.get("/_matrix/client/v3/account/whoami").await.assert_error(401, "M_UNKNOWN_TOKEN");
}
