//! Outbound HTTP for URL previews, behind core's [`UrlFetcher`]. Every connection goes only to
//! addresses the [`IpPolicy`] allows: host names through a resolver that drops denied
//! addresses (so the address checked is the address connected to, whatever DNS says next),
//! literal addresses before each request, and redirects one hop at a time through both.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hearth_core::media::{FetchError, FetchedUrl, IpPolicy, UrlFetcher};
use reqwest::{
    dns::{Addrs, Name, Resolve, Resolving},
    header,
};
use tokio::time::Instant;

const MAX_REDIRECTS: usize = 5;

#[derive(Debug)]
struct Blocked(String);

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} resolves only to addresses previews may not fetch from", self.0)
    }
}

impl std::error::Error for Blocked {}

struct PolicyResolver {
    policy: IpPolicy,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs.into_iter().filter(|a| policy.allows(a.ip())).collect();
            if allowed.is_empty() {
                return Err(Box::new(Blocked(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Fetches pages and images for previews with reqwest.
pub struct PreviewFetcher {
    client: reqwest::Client,
    policy: IpPolicy,
}

impl PreviewFetcher {
    pub fn new(policy: IpPolicy) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(PolicyResolver { policy: policy.clone() }))
            // A proxy would resolve and connect on our behalf, past the policy.
            .no_proxy()
            // Redirects are followed by hand, so that each hop is checked.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Hearth/", env!("CARGO_PKG_VERSION"), " (link preview)"))
            .build()?;
        Ok(Self { client, policy })
    }

    fn check_literal(&self, url: &url::Url) -> Result<(), FetchError> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => std::net::IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => std::net::IpAddr::V6(ip),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(FetchError::Failed("the URL has no host".to_owned())),
        };
        if self.policy.allows(ip) {
            Ok(())
        } else {
            Err(FetchError::Blocked(format!(
                "Previews of {ip} are not allowed (media.url_preview_ip_range_denylist)"
            )))
        }
    }

    async fn fetch_inner(&self, start: &url::Url, max_bytes: u64) -> Result<FetchedUrl, FetchError> {
        let mut url = start.clone();
        for _ in 0..=MAX_REDIRECTS {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(FetchError::Failed(format!("cannot fetch a {} URL", url.scheme())));
            }
            self.check_literal(&url)?;
            let mut response = self.client.get(url.clone()).send().await.map_err(classify)?;
            let status = response.status();
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| FetchError::Failed(format!("a {status} without a location")))?;
                url = url.join(location).map_err(|e| FetchError::Failed(format!("bad redirect: {e}")))?;
                continue;
            }
            if !status.is_success() {
                return Err(FetchError::Failed(format!("the server answered {status}")));
            }
            if response.content_length().is_some_and(|len| len > max_bytes) {
                return Err(FetchError::TooLarge);
            }
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(ToOwned::to_owned);
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(classify)? {
                if (body.len() + chunk.len()) as u64 > max_bytes {
                    return Err(FetchError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            return Ok(FetchedUrl { url, content_type, body });
        }
        Err(FetchError::Failed("too many redirects".to_owned()))
    }
}

/// A connection the resolver refused is `Blocked`; anything else a plain failure.
fn classify(error: reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(blocked) = e.downcast_ref::<Blocked>() {
            return FetchError::Blocked(blocked.to_string());
        }
        source = e.source();
    }
    FetchError::Failed(error.without_url().to_string())
}

impl UrlFetcher for PreviewFetcher {
    fn fetch<'a>(
        &'a self,
        url: &'a url::Url,
        max_bytes: u64,
        timeout: Duration,
    ) -> hearth_core::ephemeral::BoxFuture<'a, Result<FetchedUrl, FetchError>> {
        Box::pin(async move {
            let deadline = Instant::now() + timeout;
            tokio::time::timeout_at(deadline, self.fetch_inner(url, max_bytes)).await.unwrap_or_else(|_| {
                Err(FetchError::Failed(format!("no answer within {} s", timeout.as_secs())))
            })
        })
    }
}
