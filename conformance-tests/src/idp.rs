//! Stand-ins for the identity providers single sign-on talks to, on loopback ports, speaking
//! the real protocols over real HTTP: a GitHub-like OAuth2 server (authorize, token endpoint
//! with PKCE, `/user`, `/user/emails`, `/user/orgs`) and a Google-like OpenID Connect server
//! (discovery, authorize, token endpoint issuing RS256-signed id_tokens, JWKS). And a
//! [`Browser`] that keeps cookies and follows redirects one hop at a time.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use aws_lc_rs::{
    encoding::AsDer,
    rsa::{KeyPair as RsaKeyPair, KeySize},
    signature::{Ed25519KeyPair, KeyPair},
};
use axum::{
    Form, Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine;
use hearth::Config;
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::{net::TcpListener, task::JoinHandle};

/// A signing key with its public half as a JWK (for a JWKS) and as PEM (for `[jwt]`).
#[derive(Clone)]
pub struct SigningKey {
    pub algorithm: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Jwk,
    pub public_pem: String,
    pub kid: String,
}

fn pem(der: &[u8], label: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> =
        b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
}

/// Reads one DER element at `at`: (tag, content start, content end).
fn der_element(der: &[u8], at: usize) -> (u8, usize, usize) {
    let tag = der[at];
    let first = der[at + 1];
    if first < 0x80 {
        return (tag, at + 2, at + 2 + usize::from(first));
    }
    let n = usize::from(first & 0x7f);
    let len = der[at + 2..at + 2 + n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    (tag, at + 2 + n, at + 2 + n + len)
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (what jsonwebtoken signs with).
fn pkcs1_of_pkcs8(pkcs8: &[u8]) -> Vec<u8> {
    let (_, body, _) = der_element(pkcs8, 0);
    let (_, _, version_end) = der_element(pkcs8, body);
    let (_, _, algorithm_end) = der_element(pkcs8, version_end);
    let (tag, start, end) = der_element(pkcs8, algorithm_end);
    assert_eq!(tag, 0x04, "an OCTET STRING holds the key");
    pkcs8[start..end].to_vec()
}

impl SigningKey {
    pub fn rsa(kid: &str) -> Self {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key");
        let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).expect("PKCS#8");
        let encoding = EncodingKey::from_rsa_der(&pkcs1_of_pkcs8(pkcs8.as_ref()));
        let spki = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(pair.public_key()).expect("SPKI");
        Self::finish(Algorithm::RS256, encoding, pem(spki.as_ref(), "PUBLIC KEY"), kid)
    }

    pub fn ed25519(kid: &str) -> Self {
        let pair = Ed25519KeyPair::generate().expect("Ed25519 key");
        let encoding = EncodingKey::from_ed_der(pair.to_pkcs8v1().expect("PKCS#8").as_ref());
        let spki = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(pair.public_key()).expect("SPKI");
        Self::finish(Algorithm::EdDSA, encoding, pem(spki.as_ref(), "PUBLIC KEY"), kid)
    }

    fn finish(algorithm: Algorithm, encoding: EncodingKey, public_pem: String, kid: &str) -> Self {
        let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).expect("JWK");
        jwk.common.key_id = Some(kid.to_owned());
        Self { algorithm, encoding, jwk, public_pem, kid: kid.to_owned() }
    }

    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Github,
    Google,
}

/// Ways the next id_token can be wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    WrongNonce,
    Expired,
    WrongAudience,
    WrongIssuer,
    /// Signed by a key that is not in the JWKS (under a kid that is).
    UnknownKey,
}

struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    user: Value,
}

struct Shared {
    kind: Kind,
    base_url: String,
    client_id: String,
    client_secret: String,
    /// Who signs in at the authorize endpoint next.
    user: Value,
    orgs: Vec<String>,
    tamper: Option<Tamper>,
    grants: HashMap<String, Grant>,
    access_tokens: HashMap<String, Value>,
    key: SigningKey,
    rogue_key: SigningKey,
}

type S = Arc<Mutex<Shared>>;

/// A running stand-in provider.
pub struct StandIn {
    pub base_url: String,
    pub client_id: String,
    pub client_secret: String,
    shared: S,
    task: JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn random(n: usize) -> String {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes).expect("random");
    hex::encode(bytes)
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs()
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, Json(json!({"error": error}))).into_response()
}

impl StandIn {
    pub async fn github(client_id: &str) -> Self {
        Self::start(Kind::Github, client_id).await
    }

    pub async fn google(client_id: &str) -> Self {
        Self::start(Kind::Google, client_id).await
    }

    async fn start(kind: Kind, client_id: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("addr"));
        let client_secret = random(16);
        let shared = Arc::new(Mutex::new(Shared {
            kind,
            base_url: base_url.clone(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.clone(),
            user: json!({}),
            orgs: Vec::new(),
            tamper: None,
            grants: HashMap::new(),
            access_tokens: HashMap::new(),
            key: SigningKey::rsa("key-1"),
            rogue_key: SigningKey::rsa("key-1"),
        }));
        let app = match kind {
            Kind::Github => Router::new()
                .route("/login/oauth/authorize", get(authorize))
                .route("/login/oauth/access_token", post(token))
                .route("/api/v3/user", get(github_user))
                .route("/api/v3/user/emails", get(github_emails))
                .route("/api/v3/user/orgs", get(github_orgs)),
            Kind::Google => Router::new()
                .route("/.well-known/openid-configuration", get(discovery))
                .route("/o/oauth2/v2/auth", get(authorize))
                .route("/token", post(token))
                .route("/jwks", get(jwks)),
        }
        .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base_url, client_id: client_id.to_owned(), client_secret, shared, task }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        f(&mut self.shared.lock().expect("lock"))
    }

    /// The identity the next sign-in at this provider is (a GitHub `/user` record, or the
    /// OpenID claims `sub`, `email`, `name`, `hd`...).
    pub fn sign_in_as(&self, user: Value) {
        self.with(|s| s.user = user);
    }

    pub fn set_orgs(&self, orgs: &[&str]) {
        self.with(|s| s.orgs = orgs.iter().map(|o| (*o).to_owned()).collect());
    }

    pub fn tamper(&self, tamper: Option<Tamper>) {
        self.with(|s| s.tamper = tamper);
    }

    /// The `[[sso.providers]]` entry that points Hearth at this stand-in.
    pub fn provider_config(&self, id: &str) -> hearth_core::config::SsoProviderConfig {
        let mut config = hearth_core::config::SsoProviderConfig {
            id: id.to_owned(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            ..Default::default()
        };
        match self.with(|s| s.kind) {
            Kind::Github => {
                config.kind = Some(hearth_core::config::ProviderKind::Github);
                config.authorization_endpoint = Some(format!("{}/login/oauth/authorize", self.base_url));
                config.token_endpoint = Some(format!("{}/login/oauth/access_token", self.base_url));
                config.userinfo_endpoint = Some(format!("{}/api/v3/user", self.base_url));
            }
            Kind::Google => {
                config.kind = Some(hearth_core::config::ProviderKind::Google);
                config.issuer = Some(self.base_url.clone());
            }
        }
        config
    }
}

/// Points a test server's `public_baseurl` at its own address.
pub fn own_baseurl(config: &mut Config, addr: std::net::SocketAddr) {
    config.public_baseurl = Some(format!("http://{addr}/"));
}

async fn authorize(State(s): State<S>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mut s = s.lock().expect("lock");
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("client_id") != s.client_id {
        return (StatusCode::BAD_REQUEST, "unknown client").into_response();
    }
    if get("code_challenge_method") != "S256" || get("code_challenge").is_empty() {
        return (StatusCode::BAD_REQUEST, "PKCE required").into_response();
    }
    if s.kind == Kind::Google && (get("response_type") != "code" || !get("scope").contains("openid")) {
        return (StatusCode::BAD_REQUEST, "an OpenID Connect code request is required").into_response();
    }
    let code = random(12);
    let grant = Grant {
        client_id: get("client_id"),
        redirect_uri: get("redirect_uri"),
        challenge: get("code_challenge"),
        nonce: q.get("nonce").cloned(),
        user: s.user.clone(),
    };
    s.grants.insert(code.clone(), grant);
    let mut target = reqwest::Url::parse(&get("redirect_uri")).expect("redirect_uri");
    target.query_pairs_mut().append_pair("code", &code).append_pair("state", &get("state"));
    (StatusCode::FOUND, [(header::LOCATION, target.to_string())]).into_response()
}

/// The client's credentials: HTTP Basic (OpenID Connect's default) or the form (GitHub).
fn client_credentials(headers: &HeaderMap, form: &HashMap<String, String>) -> (String, String) {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD.decode(basic).unwrap_or_default();
        let text = String::from_utf8(decoded).unwrap_or_default();
        let (id, secret) = text.split_once(':').unwrap_or_default();
        return (id.to_owned(), secret.to_owned());
    }
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    (get("client_id"), get("client_secret"))
}

async fn token(
    State(s): State<S>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut s = s.lock().expect("lock");
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let (client_id, secret) = client_credentials(&headers, &form);
    if client_id != s.client_id || secret != s.client_secret {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    // Codes work once.
    let Some(grant) = s.grants.remove(&get("code")) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    let verifier_hash = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(get("code_verifier").as_bytes()));
    if grant.client_id != client_id
        || grant.redirect_uri != get("redirect_uri")
        || verifier_hash != grant.challenge
    {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let access_token = random(16);
    s.access_tokens.insert(access_token.clone(), grant.user.clone());
    if s.kind == Kind::Github {
        return Json(
            json!({"access_token": access_token, "token_type": "bearer", "scope": "read:user,user:email"}),
        )
        .into_response();
    }
    let mut claims = grant.user.clone();
    let now = now();
    let fields = [
        ("iss", json!(s.base_url)),
        ("aud", json!(s.client_id)),
        ("iat", json!(now)),
        ("exp", json!(now + 600)),
        ("nonce", json!(grant.nonce)),
    ];
    for (k, v) in fields {
        claims[k] = v;
    }
    let mut key = &s.key;
    match s.tamper {
        Some(Tamper::WrongNonce) => claims["nonce"] = json!("not-the-nonce"),
        Some(Tamper::Expired) => {
            claims["iat"] = json!(now - 7200);
            claims["exp"] = json!(now - 3600);
        }
        Some(Tamper::WrongAudience) => claims["aud"] = json!("some-other-client"),
        Some(Tamper::WrongIssuer) => claims["iss"] = json!("https://accounts.elsewhere.example"),
        Some(Tamper::UnknownKey) => key = &s.rogue_key,
        None => {}
    }
    let id_token = key.sign(&claims);
    Json(json!({"access_token": access_token, "token_type": "Bearer", "expires_in": 3600, "id_token": id_token}))
        .into_response()
}

/// The user an API request's bearer token belongs to; GitHub also insists on a User-Agent.
fn api_user(s: &S, headers: &HeaderMap) -> Result<Value, (StatusCode, &'static str)> {
    if !headers.contains_key(header::USER_AGENT) {
        return Err((StatusCode::FORBIDDEN, "a User-Agent is required"));
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("token ")))
        .unwrap_or_default();
    s.lock()
        .expect("lock")
        .access_tokens
        .get(token)
        .cloned()
        .ok_or((StatusCode::UNAUTHORIZED, "Bad credentials"))
}

async fn github_user(State(s): State<S>, headers: HeaderMap) -> Response {
    match api_user(&s, &headers) {
        Ok(user) => {
            let mut public = user.clone();
            // The profile e-mail is private here; /user/emails has it.
            public["email"] = Value::Null;
            Json(public).into_response()
        }
        Err(r) => r.into_response(),
    }
}

async fn github_emails(State(s): State<S>, headers: HeaderMap) -> Response {
    match api_user(&s, &headers) {
        Ok(user) => Json(json!([
            {"email": "old@example.com", "primary": false, "verified": true},
            {"email": user["email"], "primary": true, "verified": true},
        ]))
        .into_response(),
        Err(r) => r.into_response(),
    }
}

async fn github_orgs(State(s): State<S>, headers: HeaderMap) -> Response {
    match api_user(&s, &headers) {
        Ok(_) => {
            let orgs = s.lock().expect("lock").orgs.clone();
            Json(orgs.iter().map(|o| json!({"login": o, "id": 1})).collect::<Vec<_>>()).into_response()
        }
        Err(r) => r.into_response(),
    }
}

async fn discovery(State(s): State<S>) -> Response {
    let base = s.lock().expect("lock").base_url.clone();
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/o/oauth2/v2/auth"),
        "token_endpoint": format!("{base}/token"),
        "jwks_uri": format!("{base}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    }))
    .into_response()
}

async fn jwks(State(s): State<S>) -> Response {
    let jwk = s.lock().expect("lock").key.jwk.clone();
    Json(json!({"keys": [jwk]})).into_response()
}

/// One response as a browser sees it.
#[derive(Debug, Clone)]
pub struct Hop {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl Hop {
    /// The Matrix errcode of an error page, if it is one.
    pub fn errcode(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v["errcode"].as_str().map(ToOwned::to_owned))
            .unwrap_or_default()
    }

    /// The `href` of the element with this id in an HTML page.
    pub fn link(&self, id_or_class: &str) -> Option<String> {
        let marker = self.body.find(&format!("=\"{id_or_class}\""))?;
        let rest = &self.body[marker..];
        let start = rest.find("href=\"")? + 6;
        let end = rest[start..].find('"')?;
        Some(rest[start..start + end].replace("&amp;", "&").replace("&quot;", "\"").replace("&#39;", "'"))
    }
}

/// A browser: keeps cookies (all sent to every loopback host, which is all it visits) and
/// follows redirects only when told to.
pub struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Self {
        let http =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Self { http, cookies: HashMap::new() }
    }

    pub async fn get(&mut self, url: &str) -> Hop {
        let mut request = self.http.get(url);
        if !self.cookies.is_empty() {
            let cookie: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            request = request.header(header::COOKIE, cookie.join("; "));
        }
        let response = request.send().await.expect("request sent");
        for set in response.headers().get_all(header::SET_COOKIE) {
            let text = set.to_str().expect("cookie");
            let pair = text.split(';').next().unwrap_or_default();
            let (name, value) = pair.split_once('=').unwrap_or_default();
            if value.is_empty() || text.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let status = response.status().as_u16();
        let location =
            response.headers().get(header::LOCATION).map(|v| v.to_str().expect("location").to_owned());
        let body = response.text().await.unwrap_or_default();
        Hop { status, location, body }
    }

    /// `GET /login/sso/redirect/{idp}?redirectUrl=...` on the homeserver.
    pub async fn start(&mut self, homeserver: &str, idp: &str, redirect_url: &str) -> Hop {
        let mut url =
            reqwest::Url::parse(&format!("{homeserver}/_matrix/client/v3/login/sso/redirect/{idp}"))
                .expect("url");
        url.query_pairs_mut().append_pair("redirectUrl", redirect_url);
        self.get(url.as_str()).await
    }

    /// Follows redirects (and the confirmation page's continue link) until the browser is sent
    /// to `until` or something else answers; returns that last hop.
    pub async fn follow(&mut self, mut hop: Hop, until: &str) -> Hop {
        for _ in 0..10 {
            let next = match (&hop.location, hop.link("continue")) {
                (Some(location), _) if location.starts_with(until) => return hop,
                (Some(location), _) if (300..400).contains(&hop.status) => location.clone(),
                (None, Some(link)) if hop.status == 200 => link,
                _ => return hop,
            };
            hop = self.get(&next).await;
        }
        panic!("too many redirects");
    }

    /// A whole sign-in: returns the login token the client's redirect URL receives, or the hop
    /// that ended it otherwise.
    pub async fn sign_in(&mut self, homeserver: &str, idp: &str, redirect_url: &str) -> Result<String, Hop> {
        let first = self.start(homeserver, idp, redirect_url).await;
        let last = self.follow(first, redirect_url).await;
        let token = last.location.as_deref().and_then(|l| {
            reqwest::Url::parse(l)
                .ok()?
                .query_pairs()
                .find(|(k, _)| k == "loginToken")
                .map(|(_, v)| v.into_owned())
        });
        token.ok_or(last)
    }
}
