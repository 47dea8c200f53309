//! Media across servers (authenticated federation media, spec v1.11): this server's media
//! served to others as `multipart/mixed` (metadata, then the bytes), and other servers' media
//! fetched for our clients through [`FederationMedia`], core's `RemoteMediaFetcher`.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use hearth_core::{
    Error, Homeserver, Result, WeakHomeserver,
    config::ThumbnailMethod,
    ephemeral::BoxFuture,
    media::{RemoteMediaFetcher, RemoteMediaInfo, Served, store::PendingFile},
};
use ruma::{
    ServerName,
    api::federation::authenticated_media::{
        Content, ContentMetadata, FileOrLocation, get_content, get_content_thumbnail,
    },
    http_headers::{ContentDisposition, ContentDispositionType},
    media::Method,
};
use tokio::io::AsyncReadExt;

use crate::{
    server::{Fed, FedResult},
    transport::HttpTransport,
};

/// Extra time past the requested wait for the transfer itself.
const TRANSFER_SLACK: Duration = Duration::from_secs(30);

/// The whole file and what to say about it, as the multipart response carries it.
async fn content_of(mut served: Served) -> Result<FileOrLocation> {
    let mut file = Vec::with_capacity(usize::try_from(served.size).unwrap_or(0));
    served.file.read_to_end(&mut file).await.map_err(Error::internal)?;
    // The serving client-facing server decides what its clients see inline.
    let disposition =
        ContentDisposition::new(ContentDispositionType::Attachment).with_filename(served.filename);
    Ok(FileOrLocation::File(Content::new(file, served.content_type, disposition)))
}

/// `GET /_matrix/federation/v1/media/download/{mediaId}`: only this server's own media.
pub async fn get_content(
    hs: Homeserver,
    req: Fed<get_content::v1::Request>,
) -> FedResult<get_content::v1::Response> {
    req.origin()?;
    let b = &req.body;
    let served = hs.media.content(hs.server_name(), &b.media_id, b.timeout_ms).await?;
    Ok(get_content::v1::Response::new(ContentMetadata::new(), content_of(served).await?))
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
pub async fn get_content_thumbnail(
    hs: Homeserver,
    req: Fed<get_content_thumbnail::v1::Request>,
) -> FedResult<get_content_thumbnail::v1::Response> {
    req.origin()?;
    let b = &req.body;
    let dimension = |value: ruma::UInt| u32::try_from(u64::from(value)).unwrap_or(u32::MAX);
    // The spec's default method is scale.
    let method =
        if matches!(b.method, Some(Method::Crop)) { ThumbnailMethod::Crop } else { ThumbnailMethod::Scale };
    let size = (dimension(b.width), dimension(b.height));
    let animated = b.animated.unwrap_or(false);
    let served =
        hs.media.thumbnail(hs.server_name(), &b.media_id, size, method, animated, b.timeout_ms).await?;
    Ok(get_content_thumbnail::v1::Response::new(ContentMetadata::new(), content_of(served).await?))
}

/// Ends a `multipart/mixed` body with the closing delimiter (`--boundary--`) RFC 2046 requires.
/// ruma's serializer stops at `--boundary`, which strict readers (Go's `mime/multipart`, used by
/// other homeservers and Matrix's test suite) take as the start of a part that never comes.
pub(crate) fn close_multipart(response: &mut http::Response<Vec<u8>>) {
    let boundary = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.to_ascii_lowercase().starts_with("multipart/"))
        .and_then(|v| v.split(';').find_map(|p| p.trim().strip_prefix("boundary=")))
        .map(|b| format!("\r\n--{}", b.trim_matches('"')));
    if let Some(delimiter) = boundary
        && response.body().ends_with(delimiter.as_bytes())
    {
        response.body_mut().extend_from_slice(b"--\r\n");
    }
}

/// Fetches other servers' media over federation for the media repository. The homeserver
/// holds it, so it holds the homeserver only weakly, attached once both exist.
pub struct FederationMedia {
    transport: Arc<HttpTransport>,
    hs: OnceLock<WeakHomeserver>,
}

impl FederationMedia {
    pub fn new(transport: Arc<HttpTransport>) -> Self {
        Self { transport, hs: OnceLock::new() }
    }

    /// Connects the fetcher to the homeserver that holds it.
    pub fn attach(&self, hs: &Homeserver) {
        // A second attach would be a wiring mistake; the first homeserver stays.
        let _ = self.hs.set(hs.downgrade());
    }

    async fn download(
        &self,
        server: &ServerName,
        media_id: &str,
        timeout: Duration,
        into: &mut PendingFile,
    ) -> Result<RemoteMediaInfo> {
        let hs = self.hs.get().and_then(WeakHomeserver::upgrade).ok_or_else(|| {
            Error::not_found("Remote media is not available while the server starts or stops")
        })?;
        let mut request = get_content::v1::Request::new(media_id.to_owned());
        request.timeout_ms = timeout;
        let timed_out =
            || Error::new(hearth_core::ErrorCode::RemoteUnavailable, format!("{server} took too long"));
        let response = tokio::time::timeout(timeout + TRANSFER_SLACK, hs.federation_request(server, request))
            .await
            .map_err(|_| timed_out())??;
        let (bytes, info) = match response.content {
            FileOrLocation::File(content) => {
                let filename = content.content_disposition.and_then(|d| d.filename);
                (content.file, RemoteMediaInfo { content_type: content.content_type, filename })
            }
            FileOrLocation::Location(url) => {
                let (content_type, body) =
                    tokio::time::timeout(TRANSFER_SLACK, self.transport.fetch_url(&url))
                        .await
                        .map_err(|_| timed_out())??;
                (body, RemoteMediaInfo { content_type, filename: None })
            }
            _ => {
                return Err(Error::not_found(format!("{server} answered with neither content nor location")));
            }
        };
        into.write(&bytes).await?;
        tracing::debug!(%server, media_id, size = bytes.len(), "fetched remote media");
        Ok(info)
    }
}

impl RemoteMediaFetcher for FederationMedia {
    fn fetch<'a>(
        &'a self,
        server: &'a ServerName,
        media_id: &'a str,
        timeout: Duration,
        into: &'a mut PendingFile,
    ) -> BoxFuture<'a, Result<RemoteMediaInfo>> {
        Box::pin(self.download(server, media_id, timeout, into))
    }
}

#[cfg(test)]
mod tests {
    use ruma::{
        api::{
            IncomingResponseExt, OutgoingResponseExt,
            federation::authenticated_media::{
                Content, ContentMetadata, FileOrLocation, get_content_thumbnail,
            },
        },
        http_headers::{ContentDisposition, ContentDispositionType},
    };

    #[test]
    fn multipart_media_ends_with_the_closing_delimiter_and_still_parses() {
        let content = Content::new(
            b"png bytes".to_vec(),
            "image/png".to_owned(),
            ContentDisposition::new(ContentDispositionType::Attachment),
        );
        let response =
            get_content_thumbnail::v1::Response::new(ContentMetadata::new(), FileOrLocation::File(content));
        let mut http = response.try_into_http_response::<Vec<u8>>().expect("serialize");
        super::close_multipart(&mut http);
        let content_type = http.headers()[http::header::CONTENT_TYPE].to_str().expect("ascii").to_owned();
        let boundary = content_type.split("boundary=").nth(1).expect("boundary");
        let body = String::from_utf8(http.body().clone()).expect("utf-8");
        assert!(body.ends_with(&format!("\r\n--{boundary}--\r\n")), "{body:?}");
        // Exactly one closing delimiter, after two parts.
        assert_eq!(body.matches(&format!("--{boundary}")).count(), 3, "{body:?}");
        // Our own client side (ruma's parser) still reads it.
        let (parts, bytes) = http.into_parts();
        let back = http::Response::from_parts(parts, bytes.as_slice());
        let parsed = get_content_thumbnail::v1::Response::try_from_http_response(back).expect("parse");
        let FileOrLocation::File(file) = parsed.content else { panic!("a file was sent") };
        assert_eq!(file.file, b"png bytes");
    }
}
