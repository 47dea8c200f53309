//! Single sign-on with OAuth2 / OpenID Connect identity providers (GitHub, Google, others).
//!
//! A sign-in is an attempt kept in the ephemeral store under its `state`: which provider, what
//! the callback must check (the browser that started it, the PKCE verifier, the OpenID nonce)
//! and what it is for (a login that ends at the client's redirect URL with a login token, or a
//! user-interactive auth session waiting for its `m.login.sso` stage). The callback redeems the
//! attempt once, and only from the browser that started it.

mod provider;

use crate::ephemeral::spaces::{Json, SsoAttempts};
use std::{sync::Arc, time::Duration};

use ruma::{OwnedUserId, api::client::uiaa::AuthType};
use serde::{Deserialize, Serialize};

use self::provider::Provider;
pub use self::provider::{Identity, kind_of, render};
use crate::{
    Error, Result,
    auth::{http::HttpClient, uiaa::Uiaa},
    config::{ProviderKind, SsoConfig},
    ephemeral::EphemeralStore,
    users::Users,
    util,
};

/// Where providers send the browser back to; `{idp_id}` is the provider's id.
pub const CALLBACK_PATH: &str = "/_matrix/client/unstable/io.hearth/sso/callback/{idp_id}";
/// The page that asks before a login token goes to a redirect URL outside the allowlist.
pub const CONFIRM_PATH: &str = "/_matrix/client/unstable/io.hearth/sso/confirm";
/// The cookie that binds a sign-in to the browser that started it.
pub const COOKIE_NAME: &str = "hearth_sso";

/// How long a sign-in may take from the redirect to the callback.
pub(crate) const ATTEMPT_TTL: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "for", rename_all = "snake_case")]
enum Purpose {
    /// Ends at `redirect_url` with a login token; only the browser holding the cookie whose
    /// hash this is may finish it.
    Login { redirect_url: String, browser_hash: String },
    /// Completes `m.login.sso` for this UIA session (bound by the session's own secret ID).
    Uia { session: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Attempt {
    idp_id: String,
    purpose: Purpose,
    pkce_verifier: String,
    nonce: String,
    authorize_url: String,
}

/// A provider as `GET /login` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInfo {
    pub id: String,
    pub name: String,
    pub brand: Option<String>,
    pub icon: Option<String>,
}

/// The answer to `GET /login/sso/redirect`: where to send the browser, and the cookie value
/// that must come back with the callback.
#[derive(Debug, Clone)]
pub struct StartedLogin {
    pub location: String,
    pub browser_secret: String,
}

/// What the confirmation page shows.
#[derive(Debug, Clone)]
pub struct Confirmation {
    pub provider_name: String,
    pub redirect_url: String,
    pub authorize_url: String,
}

/// How a callback ended.
#[derive(Debug, Clone)]
pub enum Finished {
    /// Send the browser here: the client's redirect URL with `loginToken`.
    Login { location: String, user_id: OwnedUserId },
    /// The UIA stage is done; the page tells the client to continue.
    Uia { session: String },
}

/// What a callback received.
#[derive(Debug, Clone, Default)]
pub struct Callback {
    pub idp_id: String,
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
    /// The value of [`COOKIE_NAME`] the browser sent.
    pub browser_secret: Option<String>,
}

#[derive(Clone)]
pub struct Sso {
    inner: Arc<Inner>,
}

struct Inner {
    providers: Vec<Provider>,
    allowlist: Vec<String>,
    public_baseurl: String,
    http: Arc<dyn HttpClient>,
    ephemeral: Arc<dyn EphemeralStore>,
    users: Users,
    uiaa: Uiaa,
}

impl std::fmt::Debug for Sso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sso").field("providers", &self.inner.providers).finish_non_exhaustive()
    }
}

/// Schemes a login token must never be handed to.
fn is_safe_redirect(url: &str) -> bool {
    match oauth2::url::Url::parse(url) {
        Ok(parsed) => !matches!(parsed.scheme(), "javascript" | "data" | "vbscript" | "file" | "blob"),
        Err(_) => false,
    }
}

fn with_query(url: &str, name: &str, value: &str) -> Result<String> {
    let mut parsed =
        oauth2::url::Url::parse(url).map_err(|e| Error::invalid_param(format!("redirectUrl: {e}")))?;
    parsed.query_pairs_mut().append_pair(name, value);
    Ok(parsed.to_string())
}

/// Checks `[sso]`; `Err` names the problem.
pub fn check_config(config: &SsoConfig) -> Result<(), String> {
    providers_from(config).map(drop)
}

fn providers_from(config: &SsoConfig) -> Result<Vec<Provider>, String> {
    let mut providers: Vec<Provider> = Vec::new();
    for p in &config.providers {
        let valid_id = !p.id.is_empty()
            && p.id.len() <= 255
            && p.id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-'));
        if !valid_id {
            return Err(format!(
                "sso provider id {:?} must be 1-255 characters of A-Z a-z 0-9 . _ ~ -",
                p.id
            ));
        }
        if providers.iter().any(|q| q.config.id == p.id) {
            return Err(format!("sso provider id {:?} appears twice", p.id));
        }
        if p.client_id.is_empty() {
            return Err(format!("sso provider {:?}: client_id is required", p.id));
        }
        providers.push(Provider::new(p.clone())?);
    }
    Ok(providers)
}

impl Sso {
    /// Checks the providers' configuration; `Err` names the problem.
    pub fn new(
        config: &SsoConfig,
        public_baseurl: String,
        http: Arc<dyn HttpClient>,
        ephemeral: Arc<dyn EphemeralStore>,
        users: Users,
        uiaa: Uiaa,
    ) -> Result<Self, String> {
        let providers = providers_from(config)?;
        let inner = Inner {
            providers,
            allowlist: config.client_allowlist.clone(),
            public_baseurl,
            http,
            ephemeral,
            users,
            uiaa,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    pub fn enabled(&self) -> bool {
        !self.inner.providers.is_empty()
    }

    pub fn providers(&self) -> Vec<ProviderInfo> {
        self.inner.providers.iter().map(|p| self.info(p)).collect()
    }

    fn info(&self, p: &Provider) -> ProviderInfo {
        let c = &p.config;
        ProviderInfo {
            id: c.id.clone(),
            name: c.name.clone().unwrap_or_else(|| c.id.clone()),
            brand: c.brand.clone().or_else(|| match p.kind {
                ProviderKind::Github => Some("github".to_owned()),
                ProviderKind::Google => Some("google".to_owned()),
                ProviderKind::Oidc => None,
            }),
            icon: c.icon.clone(),
        }
    }

    fn provider(&self, idp_id: Option<&str>) -> Result<&Provider> {
        let providers = &self.inner.providers;
        let found = match idp_id {
            Some(id) => providers.iter().find(|p| p.config.id == id),
            // Without a choice the first configured provider is used.
            None => providers.first(),
        };
        found.ok_or_else(|| match idp_id {
            Some(id) => Error::not_found(format!("Unknown identity provider {id}")),
            None => Error::not_found("Single sign-on is not configured"),
        })
    }

    fn callback_url(&self, idp_id: &str) -> String {
        let base = self.inner.public_baseurl.trim_end_matches('/');
        format!("{base}{}", CALLBACK_PATH.replace("{idp_id}", idp_id))
    }

    fn allowlisted(&self, redirect_url: &str) -> bool {
        self.inner
            .allowlist
            .iter()
            .any(|prefix| !prefix.is_empty() && redirect_url.starts_with(prefix.as_str()))
    }

    async fn begin(&self, provider: &Provider, purpose: Purpose) -> Result<String> {
        let callback = self.callback_url(&provider.config.id);
        let auth = provider.authorize(self.inner.http.as_ref(), &callback).await?;
        let attempt = Attempt {
            idp_id: provider.config.id.clone(),
            purpose,
            pkce_verifier: auth.pkce_verifier,
            nonce: auth.nonce,
            authorize_url: auth.url,
        };
        self.inner.ephemeral.put_in::<SsoAttempts>(&auth.state, &Json(attempt)).await?;
        Ok(auth.state)
    }

    /// Starts a login: the browser goes to the provider, or first to the confirmation page
    /// when the redirect URL is not on the allowlist.
    pub async fn start_login(&self, idp_id: Option<&str>, redirect_url: &str) -> Result<StartedLogin> {
        if !is_safe_redirect(redirect_url) {
            return Err(Error::invalid_param("redirectUrl must be an absolute URL"));
        }
        let provider = self.provider(idp_id)?;
        let browser_secret = util::random_string(32);
        let purpose = Purpose::Login {
            redirect_url: redirect_url.to_owned(),
            browser_hash: hex::encode(util::sha256(browser_secret.as_bytes())),
        };
        let state = self.begin(provider, purpose).await?;
        let location = if self.allowlisted(redirect_url) {
            self.attempt(&state).await?.authorize_url
        } else {
            let base = self.inner.public_baseurl.trim_end_matches('/');
            with_query(&format!("{base}{CONFIRM_PATH}"), "state", &state)?
        };
        Ok(StartedLogin { location, browser_secret })
    }

    async fn attempt(&self, state: &str) -> Result<Attempt> {
        let attempt = self.inner.ephemeral.get_in::<SsoAttempts>(state).await?;
        attempt
            .map(|Json(a)| a)
            .ok_or_else(|| Error::forbidden("Unknown, expired or already used single sign-on state"))
    }

    fn check_browser(attempt: &Attempt, browser_secret: Option<&str>) -> Result<()> {
        if let Purpose::Login { browser_hash, .. } = &attempt.purpose {
            let given = browser_secret.map(|s| hex::encode(util::sha256(s.as_bytes()))).unwrap_or_default();
            if !util::constant_time_eq(given.as_bytes(), browser_hash.as_bytes()) {
                return Err(Error::forbidden("This sign-in was started in another browser"));
            }
        }
        Ok(())
    }

    /// What the confirmation page of a login shows; only the browser that started it sees it.
    pub async fn confirmation(&self, state: &str, browser_secret: Option<&str>) -> Result<Confirmation> {
        let attempt = self.attempt(state).await?;
        Self::check_browser(&attempt, browser_secret)?;
        let Purpose::Login { redirect_url, .. } = &attempt.purpose else {
            return Err(Error::forbidden("This sign-in has nothing to confirm"));
        };
        let provider = self.provider(Some(&attempt.idp_id))?;
        Ok(Confirmation {
            provider_name: self.info(provider).name,
            redirect_url: redirect_url.clone(),
            authorize_url: attempt.authorize_url,
        })
    }

    /// Finishes a sign-in at the callback. Nothing is created or linked unless the attempt is
    /// known, unused, for this provider and this browser, and the provider vouches for the
    /// identity.
    pub async fn finish(&self, callback: Callback) -> Result<Finished> {
        let state = callback
            .state
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::missing_param("Missing state"))?;
        let attempt = self.attempt(state).await?;
        if attempt.idp_id != callback.idp_id {
            return Err(Error::forbidden("This sign-in was started with another identity provider"));
        }
        Self::check_browser(&attempt, callback.browser_secret.as_deref())?;
        // Redeemed once: a second callback with this state (a replay) finds nothing.
        if self.inner.ephemeral.take_in::<SsoAttempts>(state).await?.is_none() {
            return Err(Error::forbidden("Unknown, expired or already used single sign-on state"));
        }
        if let Some(error) = &callback.error {
            let detail = callback.error_description.as_deref().unwrap_or("");
            return Err(Error::forbidden(format!(
                "The identity provider refused the sign-in: {error} {detail}"
            )));
        }
        let code = callback
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| Error::missing_param("Missing code"))?;
        let provider = self.provider(Some(&attempt.idp_id))?;
        let callback_url = self.callback_url(&attempt.idp_id);
        let identity = provider
            .identify(&self.inner.http, &callback_url, code, &attempt.pkce_verifier, &attempt.nonce)
            .await?;
        match attempt.purpose {
            Purpose::Login { redirect_url, .. } => {
                let (wanted, displayname) = Self::mapping(provider, &identity);
                let account = self
                    .inner
                    .users
                    .sso_find_or_create(&attempt.idp_id, &identity.subject, &wanted, displayname)
                    .await?;
                let user_id = account.user_id;
                if self.inner.users.account(&user_id)?.is_some_and(|r| r.deactivated) {
                    return Err(Error::user_deactivated("This account has been deactivated"));
                }
                let token = self.inner.users.issue_login_token(&user_id).await?;
                tracing::info!(%user_id, idp_id = %attempt.idp_id, "single sign-on succeeded");
                Ok(Finished::Login { location: with_query(&redirect_url, "loginToken", &token)?, user_id })
            }
            Purpose::Uia { session } => {
                let linked = self.inner.users.sso_user(&attempt.idp_id, &identity.subject)?;
                let (_, user) = self.inner.uiaa.session_info(&session).await?.ok_or_else(|| {
                    Error::forbidden("The operation to confirm has expired; start it again")
                })?;
                match (linked, user) {
                    (Some(linked), Some(user)) if linked == user => {
                        self.inner.uiaa.complete_stage(&session, &AuthType::Sso, &user).await?;
                        Ok(Finished::Uia { session })
                    }
                    _ => Err(Error::forbidden("This identity is not the account that started the operation")),
                }
            }
        }
    }

    /// The localpart wanted for a new account, and its display name, from the templates.
    fn mapping(provider: &Provider, identity: &Identity) -> (String, Option<String>) {
        let c = &provider.config;
        let default_localpart = match provider.kind {
            ProviderKind::Github => "{login}",
            ProviderKind::Google => "{email_localpart}",
            ProviderKind::Oidc => "{preferred_username}",
        };
        let mut wanted =
            render(c.localpart_template.as_deref().unwrap_or(default_localpart), &identity.attributes);
        if wanted.trim().is_empty() {
            wanted = format!("{}-{}", c.id, identity.subject);
        }
        let displayname =
            render(c.display_name_template.as_deref().unwrap_or("{name}"), &identity.attributes);
        (wanted, Some(displayname).filter(|d| !d.trim().is_empty()))
    }

    /// The providers a user can re-authenticate with, for UIA: those they are linked to.
    pub fn reauth_providers(&self, user_id: &ruma::UserId) -> Result<Vec<ProviderInfo>> {
        let linked = self.inner.users.sso_providers_of(user_id)?;
        Ok(self
            .inner
            .providers
            .iter()
            .filter(|p| linked.contains(&p.config.id))
            .map(|p| self.info(p))
            .collect())
    }

    /// Starts a re-authentication for a UIA session's `m.login.sso` stage: one authorization URL
    /// per provider the session's user is linked to, with what the page must say.
    pub async fn start_uia(&self, session: &str) -> Result<(String, Vec<(ProviderInfo, String)>)> {
        let (operation, user) = self
            .inner
            .uiaa
            .session_info(session)
            .await?
            .ok_or_else(|| Error::not_found("Unknown or expired session"))?;
        let user = user.ok_or_else(|| Error::forbidden("This session has no user to re-authenticate"))?;
        let mut links = Vec::new();
        for info in self.reauth_providers(&user)? {
            let provider = self.provider(Some(&info.id))?;
            let state = self.begin(provider, Purpose::Uia { session: session.to_owned() }).await?;
            links.push((info, self.attempt(&state).await?.authorize_url));
        }
        if links.is_empty() {
            return Err(Error::forbidden("This account has no single sign-on provider to confirm with"));
        }
        Ok((operation, links))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{auth::http::no_http, config::SsoProviderConfig, ephemeral::LocalEphemeral};

    fn sso(allowlist: &[&str]) -> Sso {
        let users = crate::users::test_users();
        let ephemeral: Arc<dyn EphemeralStore> = Arc::new(LocalEphemeral::new());
        let tokens =
            crate::auth::registration_tokens::RegistrationTokens::new(hearth_storage::Db::in_memory());
        let uiaa = Uiaa::new(ephemeral.clone(), users.clone(), None, tokens);
        let config = SsoConfig {
            providers: vec![SsoProviderConfig {
                id: "github".into(),
                client_id: "cid".into(),
                client_secret: "secret".into(),
                authorization_endpoint: Some("http://127.0.0.1:9/authorize".into()),
                ..Default::default()
            }],
            client_allowlist: allowlist.iter().map(|s| (*s).to_owned()).collect(),
        };
        Sso::new(&config, "https://hs.example/".into(), no_http(), ephemeral, users, uiaa).unwrap()
    }

    #[tokio::test]
    async fn login_starts_with_state_pkce_and_a_browser_binding() {
        let sso = sso(&["https://app.example/"]);
        let started = sso.start_login(Some("github"), "https://app.example/done").await.unwrap();
        let url = oauth2::url::Url::parse(&started.location).unwrap();
        assert!(started.location.starts_with("http://127.0.0.1:9/authorize?"));
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["client_id"], "cid");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(
            q["redirect_uri"],
            "https://hs.example/_matrix/client/unstable/io.hearth/sso/callback/github"
        );
        let state = &q["state"];
        sso.confirmation(state, Some(&started.browser_secret)).await.unwrap();
        assert!(sso.confirmation(state, Some("another browser")).await.is_err());
        assert!(sso.confirmation(state, None).await.is_err());

        // Outside the allowlist the browser sees the confirmation page first.
        let other = sso.start_login(None, "https://evil.example/").await.unwrap();
        assert!(
            other
                .location
                .starts_with("https://hs.example/_matrix/client/unstable/io.hearth/sso/confirm?state=")
        );
        assert!(sso.start_login(Some("nope"), "https://app.example/").await.is_err());
        assert!(sso.start_login(None, "javascript:alert(1)").await.is_err());
        assert!(sso.start_login(None, "/relative").await.is_err());
    }

    #[tokio::test]
    async fn callbacks_with_bad_state_are_refused_before_any_exchange() {
        let sso = sso(&["https://app.example/"]);
        let started = sso.start_login(Some("github"), "https://app.example/").await.unwrap();
        let state = oauth2::url::Url::parse(&started.location)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .into_owned();
        let callback = |state: &str, secret: Option<&str>, idp: &str| Callback {
            idp_id: idp.into(),
            state: Some(state.into()),
            code: Some("c".into()),
            browser_secret: secret.map(Into::into),
            ..Default::default()
        };
        for (cb, why) in [
            (callback("made-up", Some(&started.browser_secret), "github"), "unknown"),
            (callback(&state, Some("other"), "github"), "another browser"),
            (callback(&state, Some(&started.browser_secret), "google"), "another provider"),
        ] {
            let err = sso.finish(cb).await.unwrap_err();
            assert!(matches!(err, Error::Matrix { code: crate::ErrorCode::Forbidden, .. }), "{why}: {err:?}");
        }
        // The right browser gets as far as the code exchange (which cannot reach anything here)...
        let err = sso.finish(callback(&state, Some(&started.browser_secret), "github")).await.unwrap_err();
        assert!(matches!(err, Error::Matrix { code: crate::ErrorCode::BadGateway, .. }), "{err:?}");
        // ...and has used the state up.
        let err = sso.finish(callback(&state, Some(&started.browser_secret), "github")).await.unwrap_err();
        assert!(matches!(err, Error::Matrix { code: crate::ErrorCode::Forbidden, .. }));
    }
}
/// Handlers run these futures on a multi-threaded runtime, so they must be `Send`; a closure
/// with a borrowed argument held across an await once made them not, which only showed in
/// client-api. This fails to compile here instead.
#[cfg(test)]
mod send_probe {
    use super::*;
    fn assert_send<T: Send>(_: T) {}
    #[allow(dead_code)]
    fn probe(sso: &Sso, p: &Provider, http: &Arc<dyn HttpClient>) {
        assert_send(sso.finish(Callback::default()));
        assert_send(p.identify(http, "", "", "", ""));
        assert_send(p.authorize(http.as_ref(), ""));
        assert_send(sso.start_login(None, ""));
    }
}
