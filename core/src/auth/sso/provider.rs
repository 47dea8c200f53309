//! The two protocols an identity provider speaks here: GitHub's OAuth2 with its REST API, and
//! OpenID Connect (Google and others) with an `id_token` verified against the provider's JWKS.

use std::{collections::BTreeMap, sync::Arc};

use http::{Method, Request, header};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenResponse, TokenUrl,
    basic::{
        BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse, BasicTokenType,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::{Mutex, OnceCell};

use crate::{
    Error, Result,
    auth::http::{HttpClient, HttpError, HttpResponse},
    config::{ProviderKind, SsoProviderConfig},
    util,
};

const GITHUB_AUTHORIZE: &str = "https://github.com/login/oauth/authorize";
const GITHUB_TOKEN: &str = "https://github.com/login/oauth/access_token";
const GITHUB_USER: &str = "https://api.github.com/user";
const GOOGLE_ISSUER: &str = "https://accounts.google.com";
const GOOGLE_AUTHORIZE: &str = "https://accounts.google.com/o/oauth2/v2/auth";
const GOOGLE_TOKEN: &str = "https://oauth2.googleapis.com/token";
const GOOGLE_USERINFO: &str = "https://openidconnect.googleapis.com/v1/userinfo";
const GOOGLE_JWKS: &str = "https://www.googleapis.com/oauth2/v3/certs";

/// The largest provider response read (discovery documents, key sets, user records).
const MAX_BODY: usize = 1024 * 1024;

/// Who signed in, as the provider says: a stable subject and attributes for the templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub subject: String,
    pub attributes: BTreeMap<String, String>,
}

/// The endpoints of a provider once defaults and discovery are applied.
#[derive(Debug, Clone)]
struct Endpoints {
    issuer: Option<String>,
    authorization: String,
    token: String,
    userinfo: Option<String>,
    jwks: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    jwks_uri: String,
}

/// The OpenID Connect field of a token response that OAuth2 does not know.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct IdTokenField {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

impl ExtraTokenFields for IdTokenField {}

type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    StandardTokenResponse<IdTokenField, BasicTokenType>,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// oauth2's HTTP client seam over ours.
struct OAuthHttp<'a>(&'a dyn HttpClient);

impl<'c> oauth2::AsyncHttpClient<'c> for OAuthHttp<'_> {
    type Error = HttpError;
    type Future = crate::ephemeral::BoxFuture<'c, Result<HttpResponse, HttpError>>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        self.0.send(request)
    }
}

/// What the browser is sent to the provider with, and what the callback needs to finish.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub url: String,
    pub state: String,
    pub pkce_verifier: String,
    pub nonce: String,
}

pub struct Provider {
    pub config: SsoProviderConfig,
    pub kind: ProviderKind,
    endpoints: OnceCell<Endpoints>,
    jwks: Mutex<Option<JwkSet>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("id", &self.config.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The provider kind a config names, or why it names none.
pub fn kind_of(config: &SsoProviderConfig) -> Result<ProviderKind, String> {
    match (config.kind, config.id.as_str()) {
        (Some(ProviderKind::Oidc), _) if config.issuer.is_none() => {
            Err(format!("sso provider {:?}: kind \"oidc\" needs an issuer", config.id))
        }
        (Some(kind), _) => Ok(kind),
        (None, "github") => Ok(ProviderKind::Github),
        (None, "google") => Ok(ProviderKind::Google),
        (None, id) => Err(format!("sso provider {id:?}: set kind to \"github\", \"google\" or \"oidc\"")),
    }
}

fn upstream(what: &str, e: impl std::fmt::Display) -> Error {
    Error::bad_gateway(format!("The identity provider failed ({what}): {e}"))
}

impl Provider {
    pub fn new(config: SsoProviderConfig) -> Result<Self, String> {
        let kind = kind_of(&config)?;
        Ok(Self { config, kind, endpoints: OnceCell::new(), jwks: Mutex::new(None) })
    }

    pub fn is_oidc(&self) -> bool {
        self.kind != ProviderKind::Github
    }

    /// Defaults, overrides and, for OpenID Connect with an issuer, discovery (once).
    async fn endpoints(&self, http: &dyn HttpClient) -> Result<&Endpoints> {
        self.endpoints.get_or_try_init(|| self.resolve_endpoints(http)).await
    }

    async fn resolve_endpoints(&self, http: &dyn HttpClient) -> Result<Endpoints> {
        let c = &self.config;
        let overridden = Endpoints {
            issuer: c.issuer.clone(),
            authorization: c.authorization_endpoint.clone().unwrap_or_default(),
            token: c.token_endpoint.clone().unwrap_or_default(),
            userinfo: c.userinfo_endpoint.clone(),
            jwks: c.jwks_uri.clone(),
        };
        let or = |value: String, default: &str| if value.is_empty() { default.to_owned() } else { value };
        match (self.kind, &c.issuer) {
            (ProviderKind::Github, _) => Ok(Endpoints {
                authorization: or(overridden.authorization, GITHUB_AUTHORIZE),
                token: or(overridden.token, GITHUB_TOKEN),
                userinfo: Some(overridden.userinfo.unwrap_or_else(|| GITHUB_USER.to_owned())),
                ..overridden
            }),
            (ProviderKind::Google, None) => Ok(Endpoints {
                issuer: Some(GOOGLE_ISSUER.to_owned()),
                authorization: or(overridden.authorization, GOOGLE_AUTHORIZE),
                token: or(overridden.token, GOOGLE_TOKEN),
                userinfo: Some(overridden.userinfo.unwrap_or_else(|| GOOGLE_USERINFO.to_owned())),
                jwks: Some(overridden.jwks.unwrap_or_else(|| GOOGLE_JWKS.to_owned())),
            }),
            (_, Some(issuer)) => {
                if !overridden.authorization.is_empty()
                    && !overridden.token.is_empty()
                    && overridden.jwks.is_some()
                {
                    return Ok(overridden);
                }
                let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
                let doc: Discovery = serde_json::from_value(get_json(http, &url, None).await?)
                    .map_err(|e| upstream("discovery document", e))?;
                if doc.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
                    return Err(upstream("discovery document", format!("it names issuer {}", doc.issuer)));
                }
                Ok(Endpoints {
                    issuer: Some(doc.issuer),
                    authorization: or(overridden.authorization, &doc.authorization_endpoint),
                    token: or(overridden.token, &doc.token_endpoint),
                    userinfo: overridden.userinfo.or(doc.userinfo_endpoint),
                    jwks: Some(overridden.jwks.unwrap_or(doc.jwks_uri)),
                })
            }
            (ProviderKind::Oidc, None) => Err(Error::internal("an oidc provider without an issuer")),
        }
    }

    async fn client(&self, http: &dyn HttpClient, redirect_uri: &str) -> Result<OAuthClient> {
        let endpoints = self.endpoints(http).await?;
        let bad = |what: &str, e: oauth2::url::ParseError| Error::internal(format!("sso {what} URL: {e}"));
        Ok(oauth2::Client::new(ClientId::new(self.config.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.config.client_secret.clone()))
            .set_auth_uri(AuthUrl::new(endpoints.authorization.clone()).map_err(|e| bad("authorization", e))?)
            .set_token_uri(TokenUrl::new(endpoints.token.clone()).map_err(|e| bad("token", e))?)
            .set_redirect_uri(RedirectUrl::new(redirect_uri.to_owned()).map_err(|e| bad("callback", e))?)
            // GitHub reads the client's credentials from the form; OpenID Connect's default
            // is HTTP Basic.
            .set_auth_type(if self.is_oidc() { AuthType::BasicAuth } else { AuthType::RequestBody }))
    }

    fn scopes(&self) -> Vec<String> {
        if let Some(scopes) = &self.config.scopes {
            return scopes.clone();
        }
        match self.kind {
            ProviderKind::Github if self.config.organization.is_some() => {
                vec!["read:user".into(), "user:email".into(), "read:org".into()]
            }
            ProviderKind::Github => vec!["read:user".into(), "user:email".into()],
            ProviderKind::Google | ProviderKind::Oidc => {
                vec!["openid".into(), "profile".into(), "email".into()]
            }
        }
    }

    /// The provider's authorization URL for a new attempt, with a fresh state, PKCE challenge
    /// and (OpenID Connect) nonce.
    pub async fn authorize(&self, http: &dyn HttpClient, redirect_uri: &str) -> Result<Authorization> {
        let client = self.client(http, redirect_uri).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = util::random_string(32);
        let mut request = client
            .authorize_url(CsrfToken::new_random)
            .add_scopes(self.scopes().into_iter().map(Scope::new))
            .set_pkce_challenge(challenge);
        if self.is_oidc() {
            request = request.add_extra_param("nonce", nonce.clone());
        }
        if let Some(hd) = &self.config.hosted_domain {
            request = request.add_extra_param("hd", hd.clone());
        }
        let (url, state) = request.url();
        Ok(Authorization {
            url: url.to_string(),
            state: state.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            nonce,
        })
    }

    /// Trades the callback's code for tokens and reads who signed in.
    pub async fn identify(
        &self,
        http: &Arc<dyn HttpClient>,
        redirect_uri: &str,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<Identity> {
        let client = self.client(http.as_ref(), redirect_uri).await?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&OAuthHttp(http.as_ref()))
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(e) => {
                    Error::forbidden(format!("The identity provider refused the code: {e}"))
                }
                other => upstream("token endpoint", other),
            })?;
        let identity = if self.is_oidc() {
            let id_token = tokens
                .extra_fields()
                .id_token
                .as_deref()
                .ok_or_else(|| upstream("token endpoint", "no id_token in the response"))?;
            self.verify_id_token(http.as_ref(), id_token, nonce).await?
        } else {
            self.github_identity(http.as_ref(), tokens.access_token().secret()).await?
        };
        Ok(identity)
    }

    async fn github_identity(&self, http: &dyn HttpClient, access_token: &str) -> Result<Identity> {
        let endpoints = self.endpoints(http).await?;
        let user_url = endpoints.userinfo.as_deref().unwrap_or(GITHUB_USER);
        let user = get_json(http, user_url, Some(access_token)).await?;
        let subject = match &user["id"] {
            Value::Number(n) => n.to_string(),
            Value::String(s) if !s.is_empty() => s.clone(),
            _ => return Err(upstream("user record", "no id")),
        };
        let mut attributes = BTreeMap::new();
        attributes.insert("id".to_owned(), subject.clone());
        for field in ["login", "name", "email"] {
            if let Some(value) = user[field].as_str() {
                attributes.insert(field.to_owned(), value.to_owned());
            }
        }
        // The public profile e-mail may be unset; the primary verified address is the one to use.
        match get_json(http, &format!("{user_url}/emails"), Some(access_token)).await {
            Ok(Value::Array(emails)) => {
                let primary = emails.iter().find(|e| e["primary"] == true && e["verified"] == true);
                if let Some(email) = primary.and_then(|e| e["email"].as_str()) {
                    attributes.insert("email".to_owned(), email.to_owned());
                }
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "could not read the GitHub user's e-mail addresses"),
        }
        if let Some(org) = &self.config.organization {
            let orgs = get_json(http, &format!("{user_url}/orgs"), Some(access_token)).await?;
            let member = orgs.as_array().is_some_and(|list| {
                list.iter().any(|o| o["login"].as_str().is_some_and(|l| l.eq_ignore_ascii_case(org)))
            });
            if !member {
                return Err(Error::forbidden(format!(
                    "Only members of the {org} organisation may sign in here"
                )));
            }
        }
        Ok(Identity { subject, attributes: with_email_localpart(attributes) })
    }

    /// Checks an OpenID Connect `id_token`: signature by a key of the provider's JWKS, issuer,
    /// audience (this client), expiry, and the nonce of this attempt.
    async fn verify_id_token(&self, http: &dyn HttpClient, id_token: &str, nonce: &str) -> Result<Identity> {
        let invalid = |e: &dyn std::fmt::Display| {
            Error::forbidden(format!("The identity provider's id_token is invalid: {e}"))
        };
        let header = jsonwebtoken::decode_header(id_token).map_err(|e| invalid(&e))?;
        let asymmetric = matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        );
        if !asymmetric {
            return Err(invalid(&format!("{:?} is not an accepted signature algorithm", header.alg)));
        }
        let key = self.signing_key(http, header.kid.as_deref()).await?;
        let endpoints = self.endpoints(http).await?;
        let issuer =
            endpoints.issuer.clone().ok_or_else(|| Error::internal("an OpenID provider without issuer"))?;
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&self.config.client_id]);
        // Google's tokens name their issuer with or without the scheme.
        let mut issuers = vec![issuer.clone()];
        if issuer == GOOGLE_ISSUER {
            issuers.push("accounts.google.com".to_owned());
        }
        validation.set_issuer(&issuers);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(id_token, &key, &validation)
            .map_err(|e| invalid(&e))?
            .claims;
        let given = claims.get("nonce").and_then(Value::as_str).unwrap_or_default();
        if !util::constant_time_eq(given.as_bytes(), nonce.as_bytes()) {
            return Err(invalid(&"the nonce is not the one this sign-in sent"));
        }
        if let Some(hd) = &self.config.hosted_domain
            && claims.get("hd").and_then(Value::as_str) != Some(hd.as_str())
        {
            return Err(Error::forbidden(format!("Only accounts of {hd} may sign in here")));
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid(&"no subject"))?
            .to_owned();
        let mut attributes = BTreeMap::new();
        for field in ["sub", "email", "name", "preferred_username", "given_name", "family_name"] {
            if let Some(value) = claims.get(field).and_then(Value::as_str) {
                attributes.insert(field.to_owned(), value.to_owned());
            }
        }
        Ok(Identity { subject, attributes: with_email_localpart(attributes) })
    }

    /// The key with this id from the provider's JWKS, fetched again when it is not known
    /// (providers rotate their keys).
    async fn signing_key(&self, http: &dyn HttpClient, kid: Option<&str>) -> Result<DecodingKey> {
        let mut cached = self.jwks.lock().await;
        for attempt in 0..2 {
            if attempt == 1 || cached.is_none() {
                let endpoints = self.endpoints(http).await?;
                let url = endpoints.jwks.as_deref().ok_or_else(|| Error::internal("no jwks_uri"))?;
                let set: JwkSet = serde_json::from_value(get_json(http, url, None).await?)
                    .map_err(|e| upstream("JWKS", e))?;
                *cached = Some(set);
            }
            let found = cached.as_ref().and_then(|set| match kid {
                Some(kid) => set.find(kid).cloned(),
                None if set.keys.len() == 1 => set.keys.first().cloned(),
                None => None,
            });
            if let Some(jwk) = found {
                return DecodingKey::from_jwk(&jwk).map_err(|e| upstream("JWKS", e));
            }
        }
        Err(Error::forbidden("The identity provider's id_token is invalid: signed with an unknown key"))
    }
}

fn with_email_localpart(mut attributes: BTreeMap<String, String>) -> BTreeMap<String, String> {
    if let Some((local, _)) = attributes.get("email").and_then(|e| e.split_once('@')) {
        let local = local.to_owned();
        attributes.insert("email_localpart".to_owned(), local);
    }
    attributes
}

/// Fills `{attribute}` placeholders; unknown attributes become empty.
pub fn render(template: &str, attributes: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        out.push_str(attributes.get(after[..end].trim()).map_or("", String::as_str));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

async fn get_json(http: &dyn HttpClient, url: &str, bearer: Option<&str>) -> Result<Value> {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(url)
        .header(header::ACCEPT, "application/json")
        // GitHub's API refuses requests without a User-Agent.
        .header(header::USER_AGENT, concat!("Hearth/", env!("CARGO_PKG_VERSION")));
    if let Some(token) = bearer {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request =
        request.body(Vec::new()).map_err(|e| Error::internal(format!("building a request to {url}: {e}")))?;
    let response: HttpResponse = http.send(request).await.map_err(|HttpError(e)| upstream(url, e))?;
    if !response.status().is_success() {
        return Err(upstream(url, format!("HTTP {}", response.status())));
    }
    if response.body().len() > MAX_BODY {
        return Err(upstream(url, "response too large"));
    }
    serde_json::from_slice(response.body()).map_err(|e| upstream(url, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_and_kinds() {
        let attrs: BTreeMap<String, String> =
            [("login".to_owned(), "octo".to_owned()), ("id".to_owned(), "7".to_owned())].into();
        assert_eq!(render("{login}", &attrs), "octo");
        assert_eq!(render("gh-{ login }-{id}", &attrs), "gh-octo-7");
        assert_eq!(render("{missing}x", &attrs), "x");
        assert_eq!(render("a{b", &attrs), "a{b");
        let config = |id: &str, kind| SsoProviderConfig { id: id.into(), kind, ..Default::default() };
        assert_eq!(kind_of(&config("github", None)), Ok(ProviderKind::Github));
        assert_eq!(kind_of(&config("google", None)), Ok(ProviderKind::Google));
        assert!(kind_of(&config("corp", None)).is_err());
        assert!(kind_of(&config("corp", Some(ProviderKind::Oidc))).is_err(), "oidc needs an issuer");
    }
}
