//! The configuration file: built-in defaults, then the TOML file, then `HEARTH_*` environment
//! variables (`__` between levels). Each crate owns its own section's type; this composes them.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use hearth_client_api::ClientApiConfig;
use hearth_core::config::{
    AppserviceConfig, CallsConfig, EmailConfig, HomeserverConfig, JwtConfig, MediaConfig, PasswordConfig,
    PresenceConfig, RateLimitConfig, RegistrationConfig, RoomsConfig, SearchConfig, ServerNoticesConfig,
    SessionConfig, SmsConfig, SsoConfig, VoipConfig,
};
use hearth_federation::FederationConfig;
use hearth_storage::StorageConfig;
use ruma::OwnedServerName;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The domain in user IDs (`@alice:server_name`). Cannot change once users exist.
    pub server_name: OwnedServerName,
    /// Where clients reach this server; defaults to `http://` + `listen.client` + `/`.
    pub public_baseurl: Option<String>,
    pub listen: ListenConfig,
    pub connections: ConnectionConfig,
    pub storage: StorageConfig,
    pub registration: RegistrationConfig,
    pub rooms: RoomsConfig,
    pub voip: VoipConfig,
    pub presence: PresenceConfig,
    pub media: MediaConfig,
    pub session: SessionConfig,
    pub passwords: PasswordConfig,
    pub sso: SsoConfig,
    pub jwt: JwtConfig,
    pub email: EmailConfig,
    pub sms: SmsConfig,
    pub search: SearchConfig,
    pub calls: CallsConfig,
    pub appservice: AppserviceConfig,
    pub rate_limits: RateLimitConfig,
    pub server_notices: ServerNoticesConfig,
    pub redis: RedisConfig,
    pub client_api: ClientApiConfig,
    pub federation: FederationConfig,
    pub web_client: WebClientConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Address of the Client-Server API (plain HTTP; put TLS in front of it in production).
    pub client: SocketAddr,
    /// Address of the Server-Server API (HTTPS), e.g. `0.0.0.0:8448`. Unset: federation is
    /// off, in both directions.
    pub federation: Option<SocketAddr>,
    /// Address of the Prometheus metrics (`GET /metrics`, plain HTTP). Unset: no metrics.
    pub metrics: Option<SocketAddr>,
}

/// `[connections]`: what one connection may cost, on both listeners. The defaults suit a public
/// server; behind a reverse proxy, list the proxy's address in `uncapped_addresses`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionConfig {
    /// Time a client has to send a request's headers, and to start the next request on a
    /// kept-alive connection.
    pub header_timeout_secs: u64,
    /// Time a request body may go without any data.
    pub body_idle_timeout_secs: u64,
    /// Slowest average rate a request body may arrive at, once it has been arriving for 10 s.
    /// 0 turns the check off.
    pub min_body_bytes_per_sec: u64,
    /// Open connections at most, on each listener (lowered to fit the open-file limit).
    pub max_connections: usize,
    /// Open connections at most from one client address.
    pub max_connections_per_ip: usize,
    /// Addresses or CIDR ranges the per-address cap does not apply to: reverse proxies, which
    /// carry many clients' connections. Loopback by default.
    pub uncapped_addresses: Vec<String>,
    /// Header fields one request may carry.
    pub max_header_count: usize,
    /// Bytes the request line and headers may take together.
    pub max_header_bytes: usize,
    /// On SIGTERM/SIGINT: how long in-flight requests may take to finish before they are cut.
    pub shutdown_grace_secs: u64,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            header_timeout_secs: 30,
            body_idle_timeout_secs: 30,
            min_body_bytes_per_sec: 1024,
            max_connections: 20_000,
            max_connections_per_ip: 500,
            uncapped_addresses: vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()],
            max_header_count: 100,
            max_header_bytes: 64 * 1024,
            shutdown_grace_secs: 10,
        }
    }
}

/// `[redis]`: optional; without a URL everything stays in this process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// e.g. `redis://127.0.0.1:6379/0`
    pub url: Option<String>,
    /// Prefix of every key Hearth writes, so several servers can share one Redis.
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: None, key_prefix: "hearth:".to_owned() }
    }
}

/// `[web_client]`: the browser app (`web/dist`, built into the binary) served at `/` of the
/// client listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebClientConfig {
    /// Serve the app. Off, `/` answers as any path the server does not know.
    pub enabled: bool,
    /// Serve the app from this folder (a build of `web/`) instead of the copy in the binary,
    /// read again on every request so that a rebuild shows without a restart: for developing
    /// the app.
    pub dir: Option<PathBuf>,
}

impl Default for WebClientConfig {
    fn default() -> Self {
        Self { enabled: true, dir: None }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter, e.g. `info` or `hearth=debug,info`. `RUST_LOG` wins when set.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server_name: ruma::owned_server_name!("localhost"),
            public_baseurl: None,
            listen: ListenConfig::default(),
            connections: ConnectionConfig::default(),
            storage: StorageConfig::default(),
            registration: RegistrationConfig::default(),
            rooms: RoomsConfig::default(),
            voip: VoipConfig::default(),
            presence: PresenceConfig::default(),
            media: MediaConfig::default(),
            session: SessionConfig::default(),
            passwords: PasswordConfig::default(),
            sso: SsoConfig::default(),
            jwt: JwtConfig::default(),
            email: EmailConfig::default(),
            sms: SmsConfig::default(),
            search: SearchConfig::default(),
            calls: CallsConfig::default(),
            appservice: AppserviceConfig::default(),
            rate_limits: RateLimitConfig::default(),
            server_notices: ServerNoticesConfig::default(),
            redis: RedisConfig::default(),
            client_api: ClientApiConfig::default(),
            federation: FederationConfig::default(),
            web_client: WebClientConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self { client: SocketAddr::from(([127, 0, 0, 1], 8008)), federation: None, metrics: None }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".to_owned(), format: LogFormat::Pretty }
    }
}

/// Environment variables that configure start-up itself rather than a config key.
const NOT_KEYS: &[&str] = &["config"];

impl Config {
    /// Loads the config: defaults, then `file` (which must exist when given), then the
    /// environment. Errors name the offending key.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Self::default()));
        if let Some(path) = file {
            if !path.is_file() {
                bail!("config file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("HEARTH_").split("__").ignore(NOT_KEYS));
        let config: Self = figment.extract().map_err(|e| {
            // figment reports every problem with the key it concerns; keep them all.
            anyhow::anyhow!(
                "invalid configuration: {}",
                e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.public_baseurl
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!("invalid configuration: public_baseurl must start with http:// or https://, got {url:?}");
        }
        if self.client_api.max_request_bytes < 1024 {
            bail!("invalid configuration: client_api.max_request_bytes must be at least 1024");
        }
        if self.registration.token.as_deref() == Some("") {
            bail!("invalid configuration: registration.token must not be empty (leave it out instead)");
        }
        if self.registration.shared_secret.as_deref() == Some("") {
            bail!(
                "invalid configuration: registration.shared_secret must not be empty (leave it out instead)"
            );
        }
        if !hearth_core::rooms::CREATABLE_VERSIONS.contains(&self.rooms.default_version) {
            bail!(
                "invalid configuration: rooms.default_version {} is not one this server creates (1 to 12)",
                self.rooms.default_version
            );
        }
        self.validate_media()?;
        if self.email.smtp_host.is_some() && self.email.from.parse::<lettre::message::Mailbox>().is_err() {
            bail!("invalid configuration: email.from is not a mailbox: {:?}", self.email.from);
        }
        if let Some(url) = &self.sms.api_url
            && url::Url::parse(url).is_err()
        {
            bail!("invalid configuration: sms.api_url is not a URL: {url:?}");
        }
        if hearth_storage::search::stemming_language(&self.search.language).is_none() {
            bail!(
                "invalid configuration: search.language {:?} is not a stemming language this server knows \
                 (english, french, german, ... or none)",
                self.search.language
            );
        }
        if self.session.refreshable_access_token_lifetime_secs == 0 {
            bail!("invalid configuration: session.refreshable_access_token_lifetime_secs must be at least 1");
        }
        self.passwords.params().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        hearth_core::appservice::registration::load(&self.appservice.registration_files, &self.server_name)
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        hearth_core::auth::sso::check_config(&self.sso)
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        hearth_core::auth::jwt::JwtLogin::from_config(&self.jwt)
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .with_context(|| format!("invalid configuration: log.level {:?}", self.log.level))?;
        Ok(())
    }

    fn validate_media(&self) -> anyhow::Result<()> {
        let media = &self.media;
        if media.max_upload_size == 0 {
            bail!("invalid configuration: media.max_upload_size must be positive");
        }
        if media.thumbnail_sizes.iter().any(|s| s.width == 0 || s.height == 0) {
            bail!("invalid configuration: media.thumbnail_sizes must have positive widths and heights");
        }
        if media.url_preview_timeout_secs == 0 {
            bail!("invalid configuration: media.url_preview_timeout_secs must be positive");
        }
        hearth_core::media::IpPolicy::new(
            &media.url_preview_ip_range_denylist,
            &media.url_preview_ip_range_allowlist,
        )
        .map_err(|e| anyhow::anyhow!("invalid configuration: media.url_preview_ip_range_*: {e}"))?;
        Ok(())
    }

    /// Where media files live: `media.path`, or `media` inside the database directory, so that
    /// one data directory holds everything to back up.
    pub fn media_path(&self) -> std::path::PathBuf {
        self.media.path.clone().unwrap_or_else(|| self.storage.path.join("media"))
    }

    pub fn public_baseurl(&self) -> String {
        let url = self.public_baseurl.clone().unwrap_or_else(|| format!("http://{}/", self.listen.client));
        if url.ends_with('/') { url } else { format!("{url}/") }
    }

    /// `[sso]`, with the server's own web client on the allowlist while it is served: a login
    /// token sent there lands in the browser that asked for it, at this server's address, so
    /// the page asking whether to trust the application would only be in the way. Only the
    /// app's own return address (its root with `?via=sso`), not every path of the server.
    pub fn sso_with_web_client(&self) -> SsoConfig {
        let mut sso = self.sso.clone();
        if self.web_client.enabled {
            sso.client_allowlist.push(format!("{}{}", self.public_baseurl(), crate::web_client::SSO_RETURN));
        }
        sso
    }

    pub fn homeserver(&self) -> HomeserverConfig {
        HomeserverConfig {
            server_name: self.server_name.clone(),
            public_baseurl: self.public_baseurl(),
            registration: self.registration.clone(),
            rooms: self.rooms.clone(),
            voip: self.voip.clone(),
            presence: self.presence.clone(),
            media: MediaConfig { path: Some(self.media_path()), ..self.media.clone() },
            session: self.session.clone(),
            passwords: self.passwords.clone(),
            sso: self.sso_with_web_client(),
            jwt: self.jwt.clone(),
            trusted_key_servers: self.federation.trusted_key_servers.clone(),
            email: self.email.clone(),
            sms: self.sms.clone(),
            search: self.search.clone(),
            calls: self.calls.clone(),
            appservice: self.appservice.clone(),
            rate_limits: self.rate_limits.clone(),
            server_notices: self.server_notices.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
