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
    /// Registration needs a token: `token`, or one an admin issued through the admin API.
    pub requires_token: bool,
    pub allow_guests: bool,
    /// When set, `/_synapse/admin/v1/register` creates users (admins too) with an HMAC of it.
    pub shared_secret: Option<String>,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        // Open by default because the default listener is loopback only; the binary warns when
        // open registration meets a public listener.
        Self { enabled: true, token: None, requires_token: false, allow_guests: false, shared_secret: None }
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

/// How a thumbnail is made from its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThumbnailMethod {
    /// Exactly the requested size, cut from the middle of the image.
    Crop,
    /// Fits within the requested size, keeping the aspect ratio.
    Scale,
}

impl ThumbnailMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crop => "crop",
            Self::Scale => "scale",
        }
    }
}

/// One size thumbnails are offered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThumbnailSize {
    pub width: u32,
    pub height: u32,
    pub method: ThumbnailMethod,
}

/// `[media]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Directory of the media files; the binary defaults it to `media` inside `storage.path`.
    pub path: Option<std::path::PathBuf>,
    /// Largest upload accepted, in bytes; larger ones get 413 `M_TOO_LARGE`.
    pub max_upload_size: u64,
    /// Whether the deprecated unauthenticated `/_matrix/media/*/download|thumbnail` paths serve
    /// media. Off, they answer 404 `M_NOT_FOUND`, as Synapse does for media uploaded while its
    /// `enable_authenticated_media` is on.
    pub legacy_unauthenticated_download: bool,
    /// Asynchronous uploads (`/create`) a user may have reserved and not yet sent.
    pub max_pending_uploads: usize,
    /// How long an asynchronous upload reservation lasts, in seconds.
    pub pending_upload_lifetime_secs: u64,
    /// The sizes thumbnails come in; a request gets the closest one at least as large.
    pub thumbnail_sizes: Vec<ThumbnailSize>,
    /// Images with more pixels than this are not decoded for thumbnails.
    pub max_image_pixels: u64,
    /// Whether `/preview_url` fetches pages for link previews.
    pub url_preview_enabled: bool,
    /// Address ranges (CIDR) previews never fetch from.
    pub url_preview_ip_range_denylist: Vec<String>,
    /// Ranges fetched from even though the denylist contains them.
    pub url_preview_ip_range_allowlist: Vec<String>,
    /// Largest page or image a preview downloads, in bytes.
    pub url_preview_max_bytes: u64,
    /// Time limit of one preview download, redirects included, in seconds.
    pub url_preview_timeout_secs: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        let size = |width, height, method| ThumbnailSize { width, height, method };
        Self {
            path: None,
            max_upload_size: 50 * 1024 * 1024,
            legacy_unauthenticated_download: false,
            max_pending_uploads: 5,
            pending_upload_lifetime_secs: 24 * 3600,
            thumbnail_sizes: vec![
                size(32, 32, ThumbnailMethod::Crop),
                size(96, 96, ThumbnailMethod::Crop),
                size(320, 240, ThumbnailMethod::Scale),
                size(640, 480, ThumbnailMethod::Scale),
                size(800, 600, ThumbnailMethod::Scale),
            ],
            max_image_pixels: 32_000_000,
            url_preview_enabled: true,
            url_preview_ip_range_denylist: crate::media::DEFAULT_IP_DENYLIST
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            url_preview_ip_range_allowlist: Vec::new(),
            url_preview_max_bytes: 10 * 1024 * 1024,
            url_preview_timeout_secs: 10,
        }
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

/// `[passwords]` in the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    /// argon2id memory cost of new hashes, in KiB. Existing hashes keep the parameters they
    /// were made with (they are stored in the hash), so changing these needs no migration.
    pub memory_kib: u32,
    /// argon2id passes over that memory.
    pub iterations: u32,
    /// argon2id lanes.
    pub parallelism: u32,
    /// Hashes computed at once; 0 means the number of cores.
    pub max_concurrent: usize,
    /// How long a request may wait for a hashing slot before it is answered 429.
    pub queue_timeout_secs: u64,
}

impl Default for PasswordConfig {
    /// OWASP's first argon2id recommendation (m=19 MiB, t=2, p=1), which is also what every
    /// hash stored by earlier builds used: tens of milliseconds of one core per login.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
            max_concurrent: 0,
            queue_timeout_secs: 10,
        }
    }
}

impl PasswordConfig {
    /// The argon2 parameters, or a message naming what is wrong with them.
    pub fn params(&self) -> std::result::Result<argon2::Params, String> {
        argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| format!("passwords: invalid argon2 parameters: {e}"))
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

/// A notary this server asks for another server's keys when that server cannot be reached,
/// and the keys its answers must be signed with (Synapse's `trusted_key_servers`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustedKeyServer {
    pub server_name: String,
    /// Key ID (`ed25519:...`) -> unpadded base64 public key.
    pub verify_keys: std::collections::BTreeMap<String, String>,
}

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS at all: only for a relay on the same machine.
    None,
}

/// `[email]`: notification e-mails (pushers of kind `email`). Off until `smtp_host` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    pub tls: SmtpTls,
    /// A PEM certificate to trust for the SMTP server besides the usual roots (an internal CA,
    /// or the server's own self-signed certificate).
    pub ca_file: Option<std::path::PathBuf>,
    pub smtp_user: Option<String>,
    pub smtp_password: Option<String>,
    /// The sender, e.g. `Hearth <noreply@example.org>`.
    pub from: String,
    /// How long a notification waits unread before it is mailed: read within this time, it
    /// sends nothing. Everything unread by then goes in one mail.
    pub notif_delay_secs: u64,
    /// The name mails give the service.
    pub app_name: String,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            smtp_host: None,
            smtp_port: 587,
            tls: SmtpTls::Starttls,
            ca_file: None,
            smtp_user: None,
            smtp_password: None,
            from: "Hearth <noreply@localhost>".to_owned(),
            notif_delay_secs: 600,
            app_name: "Hearth".to_owned(),
        }
    }
}

/// `[sms]`: text messages for highlights (pushers of kind `io.hearth.sms`), sent through an
/// SMS gateway speaking Twilio's Messages API. Off until `api_url` is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// The API's base URL, e.g. `https://api.twilio.com`.
    pub api_url: Option<String>,
    pub account_sid: String,
    pub auth_token: String,
    /// The sending number (E.164) or sender ID.
    pub from: String,
}

/// `[calls]`: what voice and video calls in Element (MatrixRTC) need from the homeserver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallsConfig {
    /// The longest delay a delayed event (MSC4140) may ask for, in ms; 0 turns delayed events
    /// off.
    pub max_delay_ms: u64,
    /// How many delayed events one user may have scheduled at once.
    pub max_delayed_per_user: usize,
    /// The media servers (MatrixRTC transports, MSC4143) clients should use for calls, e.g.
    /// `{ type = "livekit", livekit_service_url = "https://livekit-jwt.example.org" }`: served at
    /// `/rtc/transports` and in `/.well-known/matrix/client`.
    pub rtc_transports: Vec<ruma::api::client::rtc::RtcTransport>,
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self { max_delay_ms: 24 * 60 * 60 * 1000, max_delayed_per_user: 100, rtc_transports: Vec::new() }
    }
}

/// `[search]`: server-side search of room events (`POST /search`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// Off, `/search` answers 400 and nothing is indexed.
    pub enabled: bool,
    /// The language whose word endings are ignored when matching (`english`, `french`,
    /// `german`, ... or `none`). Words are split the same way for every language.
    pub language: String,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self { enabled: true, language: "english".to_owned() }
    }
}

/// `[server_notices]`: messages from the server's admins to a user, in a room of their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerNoticesConfig {
    /// The localpart of the user notices come from; unset, notices are off.
    pub system_user_localpart: Option<String>,
    pub system_user_displayname: Option<String>,
    /// The name of the notices room.
    pub room_name: String,
}

impl Default for ServerNoticesConfig {
    fn default() -> Self {
        Self {
            system_user_localpart: None,
            system_user_displayname: None,
            room_name: "Server Notices".to_owned(),
        }
    }
}

/// `[appservice]`: application services (bridges and bots).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppserviceConfig {
    /// The registration files (YAML, as the bridge generates them), each read at start-up; a
    /// file that is missing or wrong stops the server.
    pub registration_files: Vec<std::path::PathBuf>,
}

/// One per-action limit: `burst_count` actions at once, then `per_second` on average.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst_count: u32,
}

impl RateLimit {
    const fn new(per_second: f64, burst_count: u32) -> Self {
        Self { per_second, burst_count }
    }
}

/// `[rate_limits]`: per-action limits, each a token bucket per user, client address or remote
/// server. The defaults are Synapse's. Over a limit a request is answered 429
/// `M_LIMIT_EXCEEDED` with `retry_after_ms`. With Redis configured, processes share the buckets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Off switches every limit off (test harnesses, benchmarks).
    pub enabled: bool,
    /// Events a user sends (messages, state, redactions) and rooms they create.
    pub message: RateLimit,
    /// Registrations from one client address.
    pub registration: RateLimit,
    /// Login attempts from one client address.
    pub login_address: RateLimit,
    /// Logins into one account.
    pub login_account: RateLimit,
    /// Failed login attempts on one account.
    pub login_failed: RateLimit,
    /// Rooms a user joins.
    pub join: RateLimit,
    /// Invites a user sends.
    pub invite: RateLimit,
    /// Media a user uploads or reserves.
    pub media_upload: RateLimit,
    /// Password changes of one account.
    pub password_change: RateLimit,
    /// Requests one remote server makes to the federation API.
    pub federation: RateLimit,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            message: RateLimit::new(0.2, 10),
            registration: RateLimit::new(0.17, 3),
            login_address: RateLimit::new(0.003, 5),
            login_account: RateLimit::new(0.003, 5),
            login_failed: RateLimit::new(0.17, 3),
            join: RateLimit::new(0.1, 10),
            invite: RateLimit::new(0.3, 10),
            media_upload: RateLimit::new(10.0, 50),
            password_change: RateLimit::new(0.003, 5),
            federation: RateLimit::new(50.0, 200),
        }
    }
}

impl RateLimitConfig {
    /// Everything off, for tests that are not about limits.
    pub fn disabled() -> Self {
        Self { enabled: false, ..Self::default() }
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
    pub media: MediaConfig,
    pub session: SessionConfig,
    pub passwords: PasswordConfig,
    pub sso: SsoConfig,
    pub jwt: JwtConfig,
    pub trusted_key_servers: Vec<TrustedKeyServer>,
    pub email: EmailConfig,
    pub sms: SmsConfig,
    pub search: SearchConfig,
    pub calls: CallsConfig,
    pub appservice: AppserviceConfig,
    pub rate_limits: RateLimitConfig,
    pub server_notices: ServerNoticesConfig,
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
            media: MediaConfig {
                // Each test homeserver gets its own media directory.
                path: Some(
                    std::env::temp_dir().join(format!("hearth-media-{}", crate::util::random_string(12))),
                ),
                ..MediaConfig::default()
            },
            session: SessionConfig::default(),
            passwords: PasswordConfig::default(),
            sso: SsoConfig::default(),
            jwt: JwtConfig::default(),
            trusted_key_servers: Vec::new(),
            email: EmailConfig::default(),
            sms: SmsConfig::default(),
            search: SearchConfig::default(),
            calls: CallsConfig::default(),
            appservice: AppserviceConfig::default(),
            rate_limits: RateLimitConfig::disabled(),
            server_notices: ServerNoticesConfig::default(),
        }
    }
}
