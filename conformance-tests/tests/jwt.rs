//! JWT login (`org.matrix.login.jwt`) with HS256, RS256 and EdDSA keys.

use hearth_conformance_tests::{TestServer, idp::SigningKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
        .expect("signing")
}

async fn jwt_login(server: &TestServer, token: &str) -> hearth_conformance_tests::client::Reply {
    server
        .client()
        .post("/_matrix/client/v3/login", json!({"type": "org.matrix.login.jwt", "token": token}))
        .await
}

#[tokio::test]
async fn hs256_logs_in_and_refuses_bad_tokens() {
    let server = TestServer::start_with(|config| {
        config.jwt.enabled = true;
        config.jwt.secret = Some("jwt-secret".to_owned());
        config.jwt.issuer = Some("https://issuer.example".to_owned());
        config.jwt.audiences = vec!["hearth".to_owned()];
    })
    .await;
    let flows = server.client().get("/_matrix/client/v3/login").await;
    assert!(
        flows.assert_ok()["flows"].as_array().unwrap().iter().any(|f| f["type"] == "org.matrix.login.jwt")
    );

    let claims =
        |sub: &str, iss: &str, aud: &str, exp: u64| json!({"sub": sub, "iss": iss, "aud": aud, "exp": exp});
    let valid = claims("jwtuser", "https://issuer.example", "hearth", now() + 300);
    let reply = jwt_login(&server, &hs256(&valid, "jwt-secret")).await;
    assert_eq!(reply.assert_ok()["user_id"], json!("@jwtuser:localhost"));
    let again = jwt_login(&server, &hs256(&valid, "jwt-secret")).await;
    assert_eq!(again.assert_ok()["user_id"], json!("@jwtuser:localhost"));

    for (token, why) in [
        (hs256(&valid, "wrong-secret"), "wrong key"),
        (hs256(&claims("x1", "https://other.example", "hearth", now() + 300), "jwt-secret"), "wrong iss"),
        (hs256(&claims("x2", "https://issuer.example", "other", now() + 300), "jwt-secret"), "wrong aud"),
        (hs256(&claims("x3", "https://issuer.example", "hearth", now() - 3600), "jwt-secret"), "expired"),
        ("garbage".to_owned(), "not a JWT"),
    ] {
        let reply = jwt_login(&server, &token).await;
        assert_eq!((reply.status.as_u16(), reply.errcode()), (403, "M_FORBIDDEN"), "{why}: {}", reply.body);
    }
    let missing =
        server.client().post("/_matrix/client/v3/login", json!({"type": "org.matrix.login.jwt"})).await;
    missing.assert_error(403, "M_FORBIDDEN");
    for name in ["x1", "x2", "x3"] {
        let free =
            server.client().get(&format!("/_matrix/client/v3/register/available?username={name}")).await;
        free.assert_ok();
    }
}

#[tokio::test]
async fn rs256_and_eddsa_public_keys() {
    for key in [SigningKey::rsa("k"), SigningKey::ed25519("k")] {
        let algorithm = if key.algorithm == Algorithm::RS256 { "RS256" } else { "EdDSA" };
        let public = key.public_pem.clone();
        let server = TestServer::start_with(|config| {
            config.jwt.enabled = true;
            config.jwt.algorithm = algorithm.to_owned();
            config.jwt.secret = Some(public);
        })
        .await;
        let token = key.sign(&json!({"sub": "keyed", "exp": now() + 60}));
        let reply = jwt_login(&server, &token).await;
        assert_eq!(reply.assert_ok()["user_id"], json!("@keyed:localhost"), "{algorithm}");
        // Same algorithm, another key.
        let stranger = if algorithm == "RS256" { SigningKey::rsa("k") } else { SigningKey::ed25519("k") };
        let forged = stranger.sign(&json!({"sub": "keyed", "exp": now() + 60}));
        jwt_login(&server, &forged).await.assert_error(403, "M_FORBIDDEN");
        // An HS256 token keyed with the public key itself is not accepted either.
        let confused = hs256(&json!({"sub": "keyed", "exp": now() + 60}), &key.public_pem);
        jwt_login(&server, &confused).await.assert_error(403, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn account_creation_can_be_turned_off() {
    let server = TestServer::start_with(|config| {
        config.jwt.enabled = true;
        config.jwt.secret = Some("k".to_owned());
        config.jwt.create_accounts = false;
    })
    .await;
    let token = hs256(&json!({"sub": "nobody", "exp": now() + 60}), "k");
    jwt_login(&server, &token).await.assert_error(403, "M_FORBIDDEN");
    hearth_conformance_tests::Client::register(&server.base_url, "somebody", "pw").await;
    let token = hs256(&json!({"sub": "somebody", "exp": now() + 60}), "k");
    assert_eq!(jwt_login(&server, &token).await.assert_ok()["user_id"], json!("@somebody:localhost"));
    // Off by default: the login type is unknown.
    let plain = TestServer::start().await;
    let flows = plain.client().get("/_matrix/client/v3/login").await;
    assert_eq!(flows.assert_ok()["flows"], json!([{"type": "m.login.password"}]));
    jwt_login(&plain, &token).await.assert_error(400, "M_UNKNOWN");
}
