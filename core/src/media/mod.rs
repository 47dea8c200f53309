//! The media repository: uploads (direct and asynchronous), downloads, thumbnails and URL
//! previews. Bytes live in [`store::FileStore`] under the media directory, named by their
//! SHA-256; what each media ID means (type, name, uploader, which content) lives in the `media`
//! table.
//!
//! Two things reach outside the process and plug in through traits the binary wires, because
//! core does no networking itself: [`UrlFetcher`] downloads pages for previews, and
//! [`RemoteMediaFetcher`] fetches media of other servers. Until federation is wired, the latter
//! is [`NoFederation`], which answers 404 `M_NOT_FOUND`. The other half of federation, serving
//! this server's media to others, needs nothing new: [`Media::content`] and
//! [`Media::thumbnail`] with this server's name are exactly what its endpoints will call.

pub mod admin;
mod ip;
pub mod preview;
pub mod store;
pub mod thumbnail;

use crate::ephemeral::spaces::{Json, UrlPreviews};
use std::{sync::Arc, time::Duration};

use hearth_storage::{
    Batch, Db,
    records::{MediaRecord, ThumbnailRecord},
    schema::{Media as MediaTable, MediaReservations, MediaThumbnails},
};
pub use ip::{DEFAULT_IP_DENYLIST, IpPolicy};
use ruma::{OwnedMxcUri, OwnedServerName, ServerName, UserId};
use serde_json::{Map, Value};
use tokio::sync::{Notify, Semaphore};

use self::store::{FileStore, PendingFile};
use crate::{
    Error, ErrorCode, Result,
    config::{MediaConfig, ThumbnailMethod},
    ephemeral::{BoxFuture, EphemeralStore},
    users::blocking,
    util::now_ms,
};

/// Length of generated media IDs.
const MEDIA_ID_LEN: usize = 24;
/// How long a preview stays cached.
pub(crate) const PREVIEW_CACHE_TTL: Duration = Duration::from_secs(3600);
/// Longest a download waits for an asynchronous upload or a remote server.
const MAX_WAIT: Duration = Duration::from_secs(120);

/// What the remote server said about media it sent.
#[derive(Debug, Clone, Default)]
pub struct RemoteMediaInfo {
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

/// Fetches another server's media over federation into a pending file (which enforces
/// `media.max_upload_size`). Implemented by the federation crate once it exists.
pub trait RemoteMediaFetcher: Send + Sync {
    fn fetch<'a>(
        &'a self,
        server: &'a ServerName,
        media_id: &'a str,
        timeout: Duration,
        into: &'a mut PendingFile,
    ) -> BoxFuture<'a, Result<RemoteMediaInfo>>;
}

/// No federation yet: media of other servers cannot be found.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFederation;

impl RemoteMediaFetcher for NoFederation {
    fn fetch<'a>(
        &'a self,
        server: &'a ServerName,
        _media_id: &'a str,
        _timeout: Duration,
        _into: &'a mut PendingFile,
    ) -> BoxFuture<'a, Result<RemoteMediaInfo>> {
        Box::pin(async move {
            Err(Error::not_found(format!(
                "Media of {server} is not available: this server does not federate yet"
            )))
        })
    }
}

/// A downloaded page or image.
#[derive(Debug, Clone)]
pub struct FetchedUrl {
    /// Where the body came from after redirects.
    pub url: url::Url,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Every address of the host is in the denylist (and not in the allowlist).
    Blocked(String),
    TooLarge,
    Failed(String),
}

/// Downloads a URL for a preview, connecting only to addresses the [`IpPolicy`] allows (at
/// connection time, after DNS, on every redirect) and within the size and time limits.
pub trait UrlFetcher: Send + Sync {
    fn fetch<'a>(
        &'a self,
        url: &'a url::Url,
        max_bytes: u64,
        timeout: Duration,
    ) -> BoxFuture<'a, std::result::Result<FetchedUrl, FetchError>>;
}

/// No outbound HTTP: previews fail. For tests of everything else.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoUrlFetcher;

impl UrlFetcher for NoUrlFetcher {
    fn fetch<'a>(
        &'a self,
        _url: &'a url::Url,
        _max_bytes: u64,
        _timeout: Duration,
    ) -> BoxFuture<'a, std::result::Result<FetchedUrl, FetchError>> {
        Box::pin(async { Err(FetchError::Failed("this server makes no outbound requests".to_owned())) })
    }
}

/// The network plug-ins of the media repository.
#[derive(Clone)]
pub struct MediaBackends {
    pub remote: Arc<dyn RemoteMediaFetcher>,
    pub urls: Arc<dyn UrlFetcher>,
}

impl Default for MediaBackends {
    fn default() -> Self {
        Self { remote: Arc::new(NoFederation), urls: Arc::new(NoUrlFetcher) }
    }
}

/// Media ready to send: an open file and what to say about it.
#[derive(Debug)]
pub struct Served {
    pub file: tokio::fs::File,
    pub size: u64,
    pub content_type: String,
    pub filename: Option<String>,
}

pub struct Media {
    db: Db,
    server_name: OwnedServerName,
    config: MediaConfig,
    store: FileStore,
    backends: MediaBackends,
    ip_policy: IpPolicy,
    ephemeral: Arc<dyn EphemeralStore>,
    /// Woken whenever an asynchronous upload completes, for downloads waiting on it.
    uploaded: Notify,
    /// Serializes completing reservations, so one media ID gets content once.
    reservations: tokio::sync::Mutex<()>,
    /// Bounds the images decoded at once, which bounds the memory thumbnails take.
    renders: Semaphore,
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media").field("root", &self.store.root()).finish_non_exhaustive()
    }
}

fn mxc(server: &ServerName, media_id: &str) -> OwnedMxcUri {
    format!("mxc://{server}/{media_id}").into()
}

/// A content type safe to store and send back as a header; anything else is sent as
/// `application/octet-stream`.
fn sanitize_content_type(content_type: Option<&str>) -> Option<String> {
    content_type
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 255 && t.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .map(ToOwned::to_owned)
}

fn sanitize_filename(filename: Option<&str>) -> Option<String> {
    filename
        .filter(|f| !f.is_empty() && f.len() <= 255 && !f.chars().any(char::is_control))
        .map(ToOwned::to_owned)
}

impl Media {
    pub fn new(
        db: Db,
        server_name: OwnedServerName,
        config: MediaConfig,
        ephemeral: Arc<dyn EphemeralStore>,
        backends: MediaBackends,
    ) -> Result<Self> {
        let root = config.path.clone().ok_or_else(|| Error::internal("media.path is not set"))?;
        let ip_policy =
            IpPolicy::new(&config.url_preview_ip_range_denylist, &config.url_preview_ip_range_allowlist)
                .map_err(|e| Error::internal(format!("media.url_preview_ip_range_*: {e}")))?;
        Ok(Self {
            db,
            server_name,
            store: FileStore::open(&root)?,
            config,
            backends,
            ip_policy,
            ephemeral,
            uploaded: Notify::new(),
            reservations: tokio::sync::Mutex::new(()),
            renders: Semaphore::new(2),
        })
    }

    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    pub fn ip_policy(&self) -> &IpPolicy {
        &self.ip_policy
    }

    /// Starts receiving an upload, limited to `media.max_upload_size`.
    pub async fn begin_upload(&self) -> Result<PendingFile> {
        self.store.begin(self.config.max_upload_size).await
    }

    fn record(&self, server: &ServerName, media_id: &str) -> Result<Option<MediaRecord>> {
        Ok(self.db.get::<MediaTable>(&(server.to_owned(), media_id.to_owned()))?)
    }

    /// `POST /upload`: stores a complete upload under a new media ID.
    pub async fn create_content(
        &self,
        uploader: &UserId,
        file: PendingFile,
        content_type: Option<&str>,
        filename: Option<&str>,
    ) -> Result<OwnedMxcUri> {
        let stored = file.commit().await?;
        let media_id = crate::util::random_string(MEDIA_ID_LEN);
        let record = MediaRecord {
            sha256: Some(stored.sha256),
            size: stored.size,
            content_type: sanitize_content_type(content_type),
            filename: sanitize_filename(filename),
            uploader: Some(uploader.to_owned()),
            created_ts: now_ms(),
            expires_ts: None,
            quarantined_by: None,
            protected: false,
        };
        let key = (self.server_name.clone(), media_id.clone());
        let db = self.db.clone();
        blocking(move || Ok(db.put::<MediaTable>(&key, &record)?)).await?;
        tracing::info!(media_id, size = stored.size, "media uploaded");
        Ok(mxc(&self.server_name, &media_id))
    }

    /// `POST /create`: reserves a media ID for an upload that follows.
    pub async fn reserve(&self, uploader: &UserId) -> Result<(OwnedMxcUri, u64)> {
        let now = now_ms();
        let pending = self
            .db
            .scan_prefix::<MediaReservations, _>(&uploader.to_owned())?
            .filter(|entry| entry.as_ref().map_or(true, |(_, expires)| *expires > now))
            .count();
        if pending >= self.config.max_pending_uploads {
            return Err(Error::new(
                ErrorCode::LimitExceeded,
                "Too many uploads are waiting for their content",
            ));
        }
        let media_id = crate::util::random_string(MEDIA_ID_LEN);
        let expires = now.saturating_add(self.config.pending_upload_lifetime_secs.saturating_mul(1000));
        let record = MediaRecord {
            sha256: None,
            size: 0,
            content_type: None,
            filename: None,
            uploader: Some(uploader.to_owned()),
            created_ts: now,
            expires_ts: Some(expires),
            quarantined_by: None,
            protected: false,
        };
        let mut batch = Batch::new();
        batch.put::<MediaTable>(&(self.server_name.clone(), media_id.clone()), &record)?;
        batch.put::<MediaReservations>(&(uploader.to_owned(), media_id.clone()), &expires)?;
        let db = self.db.clone();
        blocking(move || Ok(db.write(batch)?)).await?;
        Ok((mxc(&self.server_name, &media_id), expires))
    }

    /// Checks that `uploader` may send the content of a reserved media ID, before the body is
    /// read.
    pub fn check_reservation(
        &self,
        uploader: &UserId,
        server: &ServerName,
        media_id: &str,
    ) -> Result<MediaRecord> {
        let not_found = || Error::not_found("Unknown media ID");
        if server != self.server_name {
            return Err(not_found());
        }
        let record = self.record(server, media_id)?.ok_or_else(not_found)?;
        if record.uploader.as_deref() != Some(uploader) {
            return Err(Error::forbidden("This media ID was reserved by another user"));
        }
        if record.sha256.is_some() {
            return Err(Error::new(ErrorCode::CannotOverwriteMedia, "This media already has content"));
        }
        if record.expires_ts.is_some_and(|t| t <= now_ms()) {
            return Err(not_found());
        }
        Ok(record)
    }

    /// `PUT /upload/{serverName}/{mediaId}`: gives a reserved media ID its content.
    pub async fn upload_reserved(
        &self,
        uploader: &UserId,
        server: &ServerName,
        media_id: &str,
        file: PendingFile,
        content_type: Option<&str>,
        filename: Option<&str>,
    ) -> Result<()> {
        let stored = file.commit().await?;
        let _guard = self.reservations.lock().await;
        let mut record = self.check_reservation(uploader, server, media_id)?;
        record.sha256 = Some(stored.sha256);
        record.size = stored.size;
        record.content_type = sanitize_content_type(content_type);
        record.filename = sanitize_filename(filename);
        record.expires_ts = None;
        let mut batch = Batch::new();
        batch.put::<MediaTable>(&(server.to_owned(), media_id.to_owned()), &record)?;
        batch.delete::<MediaReservations>(&(uploader.to_owned(), media_id.to_owned()));
        let db = self.db.clone();
        blocking(move || Ok(db.write(batch)?)).await?;
        self.uploaded.notify_waiters();
        Ok(())
    }

    /// The record of a media item with content: local media (waiting up to `timeout` for an
    /// asynchronous upload), or remote media from the cache or else from its server.
    async fn resolve(
        &self,
        server: &ServerName,
        media_id: &str,
        timeout: Duration,
    ) -> Result<(MediaRecord, String)> {
        let (record, sha256) = self.resolve_any(server, media_id, timeout).await?;
        // Quarantined media answers exactly like media that does not exist, as with Synapse.
        if record.quarantined_by.is_some() {
            return Err(Error::not_found("Media not found"));
        }
        Ok((record, sha256))
    }

    async fn resolve_any(
        &self,
        server: &ServerName,
        media_id: &str,
        timeout: Duration,
    ) -> Result<(MediaRecord, String)> {
        if server != self.server_name {
            return self.resolve_remote(server, media_id, timeout).await;
        }
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_WAIT);
        loop {
            // Registered before the read, so a completion between the read and the wait wakes us.
            let notified = self.uploaded.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let record = self.record(server, media_id)?.ok_or_else(|| Error::not_found("Media not found"))?;
            if let Some(sha256) = record.sha256.clone() {
                return Ok((record, sha256));
            }
            if record.expires_ts.is_some_and(|t| t <= now_ms()) {
                return Err(Error::not_found("Media not found"));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(Error::new(ErrorCode::NotYetUploaded, "The media has not been uploaded yet"));
            }
        }
    }

    async fn resolve_remote(
        &self,
        server: &ServerName,
        media_id: &str,
        timeout: Duration,
    ) -> Result<(MediaRecord, String)> {
        crate::server_name::check_server_name(server)?;
        if let Some(record) = self.record(server, media_id)?
            && let Some(sha256) = record.sha256.clone()
        {
            return Ok((record, sha256));
        }
        let mut file = self.begin_upload().await?;
        let info = self.backends.remote.fetch(server, media_id, timeout.min(MAX_WAIT), &mut file).await?;
        let stored = file.commit().await?;
        let record = MediaRecord {
            sha256: Some(stored.sha256.clone()),
            size: stored.size,
            content_type: sanitize_content_type(info.content_type.as_deref()),
            filename: sanitize_filename(info.filename.as_deref()),
            uploader: None,
            created_ts: now_ms(),
            expires_ts: None,
            quarantined_by: None,
            protected: false,
        };
        self.db.put::<MediaTable>(&(server.to_owned(), media_id.to_owned()), &record)?;
        Ok((record, stored.sha256))
    }

    /// Waits, like a download would, for a local media item to be uploaded, without reading it:
    /// `NotYetUploaded` when the wait runs out, not found when there is no such item.
    pub async fn await_local_upload(&self, media_id: &str, timeout: Duration) -> Result<()> {
        let server = self.server_name.clone();
        self.resolve(&server, media_id, timeout).await.map(drop)
    }

    /// A media item's content, for downloads (and, later, federation's media endpoint).
    pub async fn content(&self, server: &ServerName, media_id: &str, timeout: Duration) -> Result<Served> {
        let (record, sha256) = self.resolve(server, media_id, timeout).await?;
        Ok(Served {
            file: self.store.open_file(&sha256).await?,
            size: record.size,
            content_type: record.content_type.unwrap_or_else(|| "application/octet-stream".to_owned()),
            filename: record.filename,
        })
    }

    /// A thumbnail of a media item in the configured size closest to the request, made the
    /// first time it is asked for. With `animated`, an animated image small enough already is
    /// sent as it is; otherwise thumbnails are still images.
    pub async fn thumbnail(
        &self,
        server: &ServerName,
        media_id: &str,
        (width, height): (u32, u32),
        method: ThumbnailMethod,
        animated: bool,
        timeout: Duration,
    ) -> Result<Served> {
        if width == 0 || height == 0 {
            return Err(Error::invalid_param("width and height must be positive"));
        }
        let (record, sha256) = self.resolve(server, media_id, timeout).await?;
        let content_type = record.content_type.clone().unwrap_or_default();
        if !thumbnail::is_thumbnailable(&content_type) {
            return Err(Error::bad_request("Cannot make a thumbnail of this media type"));
        }
        let size = thumbnail::select_size(&self.config.thumbnail_sizes, width, height, method)
            .ok_or_else(|| Error::bad_request("This server makes no thumbnails"))?;
        let key = (sha256.clone(), size.width, size.height, size.method.as_str().to_owned());
        if let Some(thumb) = self.db.get::<MediaThumbnails>(&key)? {
            return self.serve_thumbnail(thumb).await;
        }

        let _permit = self.renders.acquire().await.map_err(Error::internal)?;
        let bytes = self.store.read(&sha256).await?;
        if animated && thumbnail::is_animatable(&content_type) {
            let (w, h) = thumbnail::dimensions(&bytes)?;
            if w <= size.width && h <= size.height {
                return self.content(server, media_id, Duration::ZERO).await;
            }
        }
        let max_pixels = self.config.max_image_pixels;
        let rendered = tokio::task::spawn_blocking(move || thumbnail::render(&bytes, size, max_pixels))
            .await
            .map_err(Error::internal)??;
        let stored = self.store.put(&rendered.bytes).await?;
        let thumb = ThumbnailRecord {
            sha256: stored.sha256,
            size: stored.size,
            content_type: rendered.content_type.to_owned(),
            width: rendered.width,
            height: rendered.height,
        };
        self.db.put::<MediaThumbnails>(&key, &thumb)?;
        tracing::debug!(media_id, width = thumb.width, height = thumb.height, "thumbnail made");
        self.serve_thumbnail(thumb).await
    }

    async fn serve_thumbnail(&self, thumb: ThumbnailRecord) -> Result<Served> {
        Ok(Served {
            file: self.store.open_file(&thumb.sha256).await?,
            size: thumb.size,
            content_type: thumb.content_type,
            filename: None,
        })
    }

    /// `GET /preview_url`: the Open Graph data of a page, with its image stored as local media.
    pub async fn preview_url(&self, user: &UserId, url: &str) -> Result<Value> {
        if !self.config.url_preview_enabled {
            return Err(Error::forbidden("URL previews are disabled on this server"));
        }
        let parsed = url::Url::parse(url).map_err(|e| Error::invalid_param(format!("Invalid URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(Error::invalid_param("Only http and https URLs can be previewed"));
        }
        self.check_literal_host(&parsed)?;
        let cache_id = hex::encode(crate::util::sha256(url.as_bytes()));
        // The cache is an optimization: a store that is away (Redis) costs a fetch, not the preview.
        match self.ephemeral.get_in::<UrlPreviews>(&cache_id).await {
            Ok(Some(Json(value))) => return Ok(value),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "preview cache unavailable"),
        }

        let page = self.fetch(&parsed).await?;
        let content_type = thumbnail::essence(page.content_type.as_deref().unwrap_or(""));
        let mut og = Map::new();
        if content_type.starts_with("image/") {
            self.add_image(user, &page, &mut og).await?;
            og.insert("og:url".to_owned(), Value::String(page.url.to_string()));
        } else if content_type == "text/html" || content_type == "application/xhtml+xml" {
            let tags = preview::open_graph(&String::from_utf8_lossy(&page.body));
            for (key, value) in tags {
                og.insert(key, Value::String(value));
            }
            if let Some(image) = og.remove("og:image").and_then(|v| v.as_str().map(ToOwned::to_owned)) {
                // An image that cannot be had leaves a preview without one, not no preview.
                match page.url.join(&image) {
                    Ok(image_url) if self.check_literal_host(&image_url).is_ok() => {
                        match self.fetch(&image_url).await {
                            Ok(fetched) => {
                                if let Err(error) = self.add_image(user, &fetched, &mut og).await {
                                    tracing::debug!(%error, "preview image not stored");
                                }
                            }
                            Err(error) => tracing::debug!(%error, "preview image not fetched"),
                        }
                    }
                    _ => {}
                }
            }
            og.entry("og:url").or_insert_with(|| Value::String(page.url.to_string()));
        }
        let value = Value::Object(og);
        if let Err(error) = self.ephemeral.put_in::<UrlPreviews>(&cache_id, &Json(value.clone())).await {
            tracing::warn!(%error, "preview not cached");
        }
        Ok(value)
    }

    /// Refuses URLs whose host is a literal address the policy denies; host names are checked
    /// by the fetcher after resolution.
    fn check_literal_host(&self, url: &url::Url) -> Result<()> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => std::net::IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => std::net::IpAddr::V6(ip),
            _ => return Ok(()),
        };
        if self.ip_policy.allows(ip) {
            Ok(())
        } else {
            Err(Error::forbidden(format!(
                "Previews of {ip} are not allowed (media.url_preview_ip_range_denylist)"
            )))
        }
    }

    async fn fetch(&self, url: &url::Url) -> Result<FetchedUrl> {
        let timeout = Duration::from_secs(self.config.url_preview_timeout_secs);
        self.backends.urls.fetch(url, self.config.url_preview_max_bytes, timeout).await.map_err(|e| match e {
            FetchError::Blocked(message) => Error::forbidden(message),
            FetchError::TooLarge => Error::new(
                ErrorCode::Upstream,
                format!(
                    "The page is larger than the preview limit of {} bytes",
                    self.config.url_preview_max_bytes
                ),
            ),
            FetchError::Failed(message) => {
                Error::new(ErrorCode::Upstream, format!("Could not fetch the URL: {message}"))
            }
        })
    }

    /// Stores a fetched image as local media and describes it with `og:image*` keys.
    async fn add_image(&self, user: &UserId, image: &FetchedUrl, og: &mut Map<String, Value>) -> Result<()> {
        let (width, height) = thumbnail::dimensions(&image.body)?;
        let mut file = self.store.begin(u64::MAX).await?;
        file.write(&image.body).await?;
        let filename = image.url.path_segments().and_then(|mut s| s.next_back()).filter(|s| !s.is_empty());
        let uri = self.create_content(user, file, image.content_type.as_deref(), filename).await?;
        og.insert("og:image".to_owned(), Value::String(uri.to_string()));
        og.insert("og:image:width".to_owned(), width.into());
        og.insert("og:image:height".to_owned(), height.into());
        og.insert("matrix:image:size".to_owned(), image.body.len().into());
        if let Some(content_type) = &image.content_type {
            og.insert("og:image:type".to_owned(), Value::String(thumbnail::essence(content_type)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
