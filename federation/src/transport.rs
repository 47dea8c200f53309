//! How a request reaches another server: resolve its name (overrides, IP literals, explicit
//! ports, `/.well-known/matrix/server`, then port 8448), refuse private addresses unless allowed,
//! and carry the already-signed request over HTTPS.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use hearth_core::{Error, ErrorCode, Result, ephemeral::BoxFuture, federation::Transport};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use ruma::ServerName;

use crate::FederationConfig;

const DEFAULT_PORT: u16 = 8448;
const WELL_KNOWN_TTL: Duration = Duration::from_secs(3600);
const WELL_KNOWN_FAILURE_TTL: Duration = Duration::from_secs(600);

/// Addresses a server name must never lead to unless the operator allows it: this machine,
/// its private networks, link-local and other non-public ranges.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // 100.64/10, carrier NAT
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link-local
                || v6.to_ipv4_mapped().is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
}

fn refused(what: &str) -> Error {
    Error::new(ErrorCode::RemoteUnavailable, format!("refusing to connect to {what}: a private address"))
}

/// reqwest's resolver: overrides first, then the system's, then the private-address guard.
struct Resolver {
    overrides: BTreeMap<String, String>,
    allow_private: bool,
}

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let target = self.overrides.get(&host).cloned();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let lookup = target.unwrap_or_else(|| format!("{host}:0"));
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(lookup).await?.collect();
            let allowed: Vec<SocketAddr> =
                addrs.into_iter().filter(|a| allow_private || !is_private(a.ip())).collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves to no allowed address").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

pub struct HttpTransport {
    client: reqwest::Client,
    overrides: BTreeMap<String, String>,
    allow_private: bool,
    /// Delegations from `/.well-known/matrix/server` (or their absence), with their expiry.
    well_known: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

impl std::fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTransport").field("overrides", &self.overrides).finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// Builds the client; the error names the setting at fault.
    pub fn new(config: &FederationConfig) -> std::result::Result<Self, String> {
        let resolver = Resolver {
            overrides: config.resolve_overrides.clone(),
            allow_private: config.allow_private_addresses,
        };
        let mut builder = reqwest::Client::builder()
            .dns_resolver(Arc::new(resolver))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .danger_accept_invalid_certs(!config.verify_tls);
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| format!("reading federation.ca_file: {e}"))?;
            for cert in
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("federation.ca_file: {e}"))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| format!("building the federation client: {e}"))?;
        Ok(Self {
            client,
            overrides: config.resolve_overrides.clone(),
            allow_private: config.allow_private_addresses,
            well_known: Mutex::default(),
        })
    }

    /// The `host[:port]` to put in the URL for `server` (the spec's resolution steps; SRV
    /// records are not consulted).
    async fn authority(&self, server: &ServerName) -> Result<String> {
        if self.overrides.contains_key(server.as_str()) {
            return Ok(server.to_string());
        }
        if let Some(authority) = self.literal_or_port(server.as_str())? {
            return Ok(authority);
        }
        if let Some(delegated) = self.delegation(server.as_str()).await {
            if self.overrides.contains_key(&delegated) {
                return Ok(delegated);
            }
            if let Some(authority) = self.literal_or_port(&delegated)? {
                return Ok(authority);
            }
            return Ok(format!("{delegated}:{DEFAULT_PORT}"));
        }
        Ok(format!("{}:{DEFAULT_PORT}", server.host()))
    }

    /// IP literals and names with an explicit port are used as they are.
    fn literal_or_port(&self, name: &str) -> Result<Option<String>> {
        let (host, port) = match name.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') && p.chars().all(|c| c.is_ascii_digit()) && !h.is_empty() => {
                (h, p.parse::<u16>().ok())
            }
            _ => (name, None),
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            if !self.allow_private && is_private(ip) {
                return Err(refused(name));
            }
            return Ok(Some(format!("{host}:{}", port.unwrap_or(DEFAULT_PORT))));
        }
        Ok(port.map(|p| format!("{host}:{p}")))
    }

    async fn delegation(&self, host: &str) -> Option<String> {
        if let Some((delegated, expires)) =
            self.well_known.lock().unwrap_or_else(PoisonError::into_inner).get(host).cloned()
            && expires > Instant::now()
        {
            return delegated;
        }
        let fetched = async {
            let response =
                self.client.get(format!("https://{host}/.well-known/matrix/server")).send().await.ok()?;
            if !response.status().is_success() {
                return None;
            }
            let body: serde_json::Value = response.json().await.ok()?;
            body["m.server"].as_str().filter(|s| ServerName::parse(s).is_ok()).map(ToOwned::to_owned)
        }
        .await;
        let ttl = if fetched.is_some() { WELL_KNOWN_TTL } else { WELL_KNOWN_FAILURE_TTL };
        self.well_known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(host.to_owned(), (fetched.clone(), Instant::now() + ttl));
        fetched
    }

    async fn carry(
        &self,
        destination: &ServerName,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>> {
        let authority = self.authority(destination).await?;
        let path = request.uri().path_and_query().map_or("/", http::uri::PathAndQuery::as_str);
        let url = format!("https://{authority}{path}");
        let (parts, body) = request.into_parts();
        let response =
            self.client.request(parts.method, url).headers(parts.headers).body(body).send().await.map_err(
                |e| Error::new(ErrorCode::RemoteUnavailable, format!("{destination} is unreachable: {e}")),
            )?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Error::new(ErrorCode::RemoteUnavailable, format!("{destination}: {e}")))?;
        let mut out = http::Response::new(bytes.to_vec());
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

impl HttpTransport {
    /// Downloads a plain URL another server pointed us to (a media `Location`), through the
    /// same address guard: names are checked when resolved, literal addresses here.
    pub async fn fetch_url(&self, url: &str) -> Result<(Option<String>, Vec<u8>)> {
        let unreachable = |e: String| Error::new(ErrorCode::RemoteUnavailable, format!("{url}: {e}"));
        let parsed = reqwest::Url::parse(url).map_err(|e| unreachable(e.to_string()))?;
        if !matches!(parsed.scheme(), "https" | "http") {
            return Err(unreachable("not an HTTP URL".to_owned()));
        }
        let host = parsed.host_str().unwrap_or_default();
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        if literal.is_some_and(|ip| !self.allow_private && is_private(ip)) {
            return Err(refused(url));
        }
        let response = self.client.get(parsed).send().await.map_err(|e| unreachable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unreachable(response.status().to_string()));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(ToOwned::to_owned);
        let body = response.bytes().await.map_err(|e| unreachable(e.to_string()))?;
        Ok((content_type, body.to_vec()))
    }
}

impl Transport for HttpTransport {
    fn send(
        &self,
        destination: &ServerName,
        request: http::Request<Vec<u8>>,
    ) -> BoxFuture<'_, Result<http::Response<Vec<u8>>>> {
        let destination = destination.to_owned();
        Box::pin(async move { self.carry(&destination, request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(allow_private: bool) -> HttpTransport {
        let config =
            FederationConfig { allow_private_addresses: allow_private, ..FederationConfig::default() };
        HttpTransport::new(&config).unwrap()
    }

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2001:4860::8888", "100.128.0.1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn literals_and_ports_skip_discovery_and_the_guard_holds() {
        let open = transport(true);
        let name = |s: &str| ServerName::parse(s).unwrap();
        assert_eq!(open.authority(&name("127.0.0.1")).await.unwrap(), "127.0.0.1:8448");
        assert_eq!(open.authority(&name("127.0.0.2:9000")).await.unwrap(), "127.0.0.2:9000");
        assert_eq!(open.authority(&name("[::1]:9000")).await.unwrap(), "[::1]:9000");
        assert_eq!(open.authority(&name("example.org:8449")).await.unwrap(), "example.org:8449");
        let guarded = transport(false);
        assert!(guarded.authority(&name("127.0.0.1:9000")).await.is_err());
        assert!(guarded.authority(&name("[::1]")).await.is_err());
    }
}
