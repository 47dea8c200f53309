//! The parts of the configuration the homeserver logic reads. `src/config.rs` in the binary
//! composes them with the sections other crates own.

use serde::{Deserialize, Serialize};

/// `[registration]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationConfig {
    /// Whether anyone may register through `POST /register`.
    pub enabled: bool,
    /// When set, registration needs this token (the `m.login.registration_token` stage).
    pub token: Option<String>,
    pub allow_guests: bool,
    /// When set, `/_synapse/admin/v1/register` creates users (admins too) with an HMAC of it.
    pub shared_secret: Option<String>,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        // Open by default because the default listener is loopback only; the binary warns when
        // open registration meets a public listener.
        Self { enabled: true, token: None, allow_guests: false, shared_secret: None }
    }
}

/// `[rooms]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    /// Room version of new rooms when the client does not ask for one.
    pub default_version: ruma::RoomVersionId,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self { default_version: ruma::RoomVersionId::V12 }
    }
}

/// `[voip]`: TURN servers handed to clients for calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VoipConfig {
    /// `turn:` / `turns:` URIs; empty means no TURN server is offered.
    pub turn_uris: Vec<String>,
    /// Shared secret of the TURN server's REST API (coturn's `static-auth-secret`).
    pub turn_shared_secret: Option<String>,
    /// Fixed credentials, used when there is no shared secret.
    pub turn_username: Option<String>,
    pub turn_password: Option<String>,
    /// How long generated credentials stay valid, in seconds.
    pub turn_user_lifetime_secs: u64,
}

impl Default for VoipConfig {
    fn default() -> Self {
        Self {
            turn_uris: Vec::new(),
            turn_shared_secret: None,
            turn_username: None,
            turn_password: None,
            turn_user_lifetime_secs: 86_400,
        }
    }
}

/// `[presence]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    pub enabled: bool,
    /// Seconds without activity after which an online user shows as unavailable.
    pub idle_timeout_secs: u64,
    /// Seconds after a user's last sync or connection ends before they show as offline.
    pub offline_grace_secs: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self { enabled: true, idle_timeout_secs: 300, offline_grace_secs: 30 }
    }
}

/// `[session]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Lifetime of an access token issued together with a refresh token (a client that sent
    /// `refresh_token: true`), in seconds. Tokens of clients that did not ask never expire.
    pub refreshable_access_token_lifetime_secs: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self { refreshable_access_token_lifetime_secs: 300 }
    }
}

/// `[sso]`: single sign-on through OAuth2 / OpenID Connect identity providers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SsoConfig {
    /// One `[[sso.providers]]` table per identity provider; empty turns SSO off.
    pub providers: Vec<SsoProviderConfig>,
    /// Prefixes of client redirect URLs that receive a login token without a confirmation page.
    pub client_allowlist: Vec<String>,
}

/// The protocol an identity provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// GitHub's OAuth2 and REST API (`/user`, `/user/emails`, `/user/orgs`).
    Github,
    /// OpenID Connect with Google's endpoints as defaults.
    Google,
    /// Any other OpenID Connect provider (needs `issuer`).
    Oidc,
}

/// One `[[sso.providers]]` entry. Endpoint names follow Synapse's `oidc_providers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SsoProviderConfig {
    /// The `idp_id` clients see, e.g. `github` or `google`.
    pub id: String,
    /// Shown by clients on the sign-in button; defaults to the id.
    pub name: Option<String>,
    /// `github`, `google`, ... (the spec's `brand`), a hint for clients' button styles.
    pub brand: Option<String>,
    /// An `mxc://` URI of the provider's logo.
    pub icon: Option<String>,
    /// `github`, `google` or `oidc`; defaults to the id when that is `github` or `google`.
    pub kind: Option<ProviderKind>,
    pub client_id: String,
    pub client_secret: String,
    /// Scopes asked for; defaults: GitHub `read:user user:email` (+ `read:org` with an
    /// organisation), OpenID Connect `openid profile email`.
    pub scopes: Option<Vec<String>>,
    /// OpenID Connect issuer; the other endpoints are discovered from
    /// `issuer/.well-known/openid-configuration` unless set below.
    pub issuer: Option<String>,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub userinfo_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    /// Localpart of new accounts, with `{attribute}` placeholders: GitHub `{login}`, `{id}`,
    /// `{name}`, `{email}`, `{email_localpart}`; OpenID Connect `{sub}`, `{preferred_username}`,
    /// `{name}`, `{email}`, `{email_localpart}`.
    pub localpart_template: Option<String>,
    /// Display name of new accounts, same placeholders; default `{name}`.
    pub display_name_template: Option<String>,
    /// Google: only accounts of this Workspace domain (the `hd` claim) may sign in.
    pub hosted_domain: Option<String>,
    /// GitHub: only members of this organisation (its login) may sign in.
    pub organization: Option<String>,
}

/// `[jwt]`: log in with a JSON Web Token (`org.matrix.login.jwt`), like Synapse's `jwt_config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    pub enabled: bool,
    /// `HS256`, `RS256` or `EdDSA`.
    pub algorithm: String,
    /// The HMAC secret for HS256; the PEM public key (`BEGIN PUBLIC KEY`) for RS256 and EdDSA.
    pub secret: Option<String>,
    /// When set, the `iss` claim must equal it.
    pub issuer: Option<String>,
    /// When non-empty, the `aud` claim must name one of these.
    pub audiences: Vec<String>,
    /// The claim that holds the localpart (or full user ID).
    pub subject_claim: String,
    /// Whether a token for an unknown user creates the account.
    pub create_accounts: bool,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            algorithm: "HS256".to_owned(),
            secret: None,
            issuer: None,
            audiences: Vec::new(),
            subject_claim: "sub".to_owned(),
            create_accounts: true,
        }
    }
}

/// What [`crate::Homeserver`] needs to start.
#[derive(Debug, Clone)]
pub struct HomeserverConfig {
    pub server_name: ruma::OwnedServerName,
    /// The URL clients reach the client API at, with a trailing slash.
    pub public_baseurl: String,
    pub registration: RegistrationConfig,
    pub rooms: RoomsConfig,
    pub voip: VoipConfig,
    pub presence: PresenceConfig,
    pub session: SessionConfig,
    pub sso: SsoConfig,
    pub jwt: JwtConfig,
}

impl HomeserverConfig {
    pub fn for_tests() -> Self {
        Self {
            server_name: ruma::owned_server_name!("localhost"),
            public_baseurl: "http://localhost:8008/".to_owned(),
            registration: RegistrationConfig::default(),
            rooms: RoomsConfig::default(),
            voip: VoipConfig::default(),
            presence: PresenceConfig::default(),
            session: SessionConfig::default(),
            sso: SsoConfig::default(),
            jwt: JwtConfig::default(),
        }
    }
}
